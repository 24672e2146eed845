from __future__ import annotations

import pytest
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
    # Seen alive for the whole 10 s deadline (until T0+20), though deadline_end came earlier.
    assert "client c4 got no acknowledged move within 10 s of the heal" in result.violations[0].message


def test_a_client_joining_after_the_heal_must_play_within_the_deadline(rb: RunBuilder) -> None:
    rb.healthy()
    rb.conn_open("c5", T0 + 4.0)
    rb.rec(T0 + 4.0, "c5", "event", "conn_fail", conn=1, error="503")
    rb.stopped("c5", T0 + 4.5)  # gave up long before the run ended
    result = check_recovers_after_heal(rb.build())
    assert result.status == "fail"
    # It gave up after 0.5 s; the run allowed it 1 s (to deadline_end): judged against that.
    assert "did not play again within the 1 s the run allowed it after joining" in result.violations[0].message
    assert "stopped at" in result.violations[0].message


def test_clients_gone_before_the_heal_are_not_judged(rb: RunBuilder) -> None:
    rb.healthy()
    rb.play("c6", T0, range(1, 3))
    rb.stopped("c6", T0 + 3.0)
    assert check_recovers_after_heal(rb.build()).status == "pass"


def test_a_run_shorter_than_the_recovery_deadline_still_judges_clients_that_never_recover(rb: RunBuilder) -> None:
    rb.healthy()  # heal_end T0+3.5, deadline_end T0+5.0: 1.5 s, less than the 10 s deadline
    rb.play("c7", T0, range(1, 3))
    rb.move("c7", T0 + 3.6, 3, ack=False)
    rb.stopped("c7", T0 + 5.2)  # stopped by the runner at deadline_end, 1.7 s after the heal
    result = check_recovers_after_heal(rb.build())
    assert result.status == "fail"
    [violation] = result.violations
    assert violation.message.startswith("client c7 did not play again within the 1.7 s the run allowed it after the")
    assert "recovery_deadline_s 10 is longer than the run allowed: deadline_end t+5.000s" in violation.message
    assert violation.evidence[0]["effective_deadline_s"] == pytest.approx(1.7)
    assert "1 client(s) without an ok judged against min(recovery_deadline_s, the time the run allowed" in result.note


def test_a_client_recovering_within_the_time_the_run_allowed_passes(rb: RunBuilder) -> None:
    rb.healthy()
    rb.play("c7", T0, range(1, 3))
    rb.move("c7", T0 + 3.6, 3, ack=False)
    rb.move("c7", T0 + 4.8, 3, attempt=2)  # plays again 1.3 s after the heal, before deadline_end
    rb.stopped("c7", T0 + 5.2)
    assert check_recovers_after_heal(rb.build()).status == "pass"


def test_a_client_the_run_gave_less_than_a_second_is_skipped_with_a_note(rb: RunBuilder) -> None:
    rb.healthy()
    rb.conn_open("c8", T0 + 4.3)  # joined 0.7 s before deadline_end, never welcomed
    rb.stopped("c8", T0 + 5.2)
    result = check_recovers_after_heal(rb.build())
    assert result.status == "pass"
    assert "not judged, the run gave them less than 1 s" in result.note and "c8" in result.note


def test_with_only_short_windows_nothing_is_judged(rb: RunBuilder) -> None:
    rb.healthy()
    rb.meta["phases"]["heal_end"] = T0 + 4.5  # 0.5 s before deadline_end; c3 joined earlier
    rb.history = [r for r in rb.history if r["process"] not in ("c1", "c2", "c3") or r["t"] < T0 + 4.5]
    for client in ("c1", "c2", "c3"):
        rb.stopped(client, T0 + 5.2)
    result = check_recovers_after_heal(rb.build())
    assert result.status == "not_checked"
    assert "c1, c2, c3" in result.note


def test_without_phases_it_is_not_checked(rb: RunBuilder) -> None:
    rb.healthy().meta.pop("phases")
    assert check_recovers_after_heal(rb.build()).status == "not_checked"
