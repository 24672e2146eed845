from __future__ import annotations

from checker_runs import T0, RunBuilder

from harness.checkers import check_recovers_after_heal


def test_healthy_run_passes(rb: RunBuilder) -> None:
    assert check_recovers_after_heal(rb.healthy().build()).status == "pass"


def test_a_client_without_progress_after_the_heal_fails(rb: RunBuilder) -> None:
    rb.healthy()
    rb.play("c4", T0, range(1, 3))
    rb.move("c4", T0 + 3.6, 3, ack=False)
    rb.stopped("c4", T0 + 20.0)
    result = check_recovers_after_heal(rb.build())
    assert result.status == "fail"
    assert "client c4 got no acknowledged move within 10 s of the heal" in result.violations[0].message


def test_a_client_joining_after_the_heal_must_play_within_the_deadline(rb: RunBuilder) -> None:
    rb.healthy()
    rb.conn_open("c5", T0 + 4.0)
    rb.rec(T0 + 4.0, "c5", "event", "conn_fail", conn=1, error="503")
    rb.stopped("c5", T0 + 4.5)  # gave up long before the run ended
    result = check_recovers_after_heal(rb.build())
    assert result.status == "fail"
    assert "of joining" in result.violations[0].message
    assert "stopped at" in result.violations[0].message


def test_clients_gone_before_the_heal_are_not_judged(rb: RunBuilder) -> None:
    rb.healthy()
    rb.play("c6", T0, range(1, 3))
    rb.stopped("c6", T0 + 3.0)
    assert check_recovers_after_heal(rb.build()).status == "pass"


def test_a_run_ended_before_the_recovery_deadline_is_not_held_against_the_balancer(rb: RunBuilder) -> None:
    rb.healthy()
    rb.play("c7", T0, range(1, 3))
    rb.move("c7", T0 + 3.6, 3, ack=False)
    rb.stopped("c7", T0 + 5.2)  # stopped by the runner at deadline_end, 1.7 s after the heal
    result = check_recovers_after_heal(rb.build())
    assert result.status == "pass"
    assert "c7" in result.note


def test_without_phases_it_is_not_checked(rb: RunBuilder) -> None:
    rb.healthy().meta.pop("phases")
    assert check_recovers_after_heal(rb.build()).status == "not_checked"
