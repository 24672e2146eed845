from __future__ import annotations

from checker_runs import T0, RunBuilder

from harness.checkers import check_single_upstream
from harness.history import make_run


def moved_to_secondary(rb: RunBuilder, primary_closes_at: float | None) -> None:
    """c1 plays on the primary, then is welcomed by the secondary at T0+1 on the same connection."""
    rb.backend_start("primary", T0 - 1)
    rb.backend_start("secondary", T0 - 1)
    rb.play("c1", T0, range(1, 5))
    if primary_closes_at is not None:
        rb.close_upstream("c1", primary_closes_at)
    rb.welcome("c1", T0 + 1.0, "secondary")
    rb.move("c1", T0 + 1.1, 5)


def test_healthy_run_passes(rb: RunBuilder) -> None:
    assert check_single_upstream(rb.healthy().build()).status == "pass"


def test_old_upstream_closed_before_the_new_one_passes(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 0.95)
    assert check_single_upstream(rb.build()).status == "pass"


def test_overlap_within_tolerance_passes(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 1.1)
    assert check_single_upstream(rb.build()).status == "pass"


def test_old_upstream_still_open_long_after_the_new_welcome_fails(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 3.0)
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    violation = result.violations[0]
    assert "attached to primary" in violation.message and "and secondary" in violation.message
    assert [e.get("f") or e.get("event") for e in violation.evidence][:2] == ["welcome", "open"]


def test_old_upstream_never_closed_fails(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=None)
    rb.conn_close("c1", T0 + 5.0)
    assert check_single_upstream(rb.build()).status == "fail"


def test_a_fault_on_the_old_backend_ends_what_its_journal_can_tell(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 30.0)  # e.g. a partition: closed at heal
    rb.fault(T0 + 0.9, "partition", "primary", "f1", heal_at=T0 + 29.0)
    assert check_single_upstream(rb.build()).status == "pass"


def test_a_fault_on_another_target_does_not_excuse_the_overlap(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 3.0)
    rb.fault(T0 + 0.9, "latency", "lb", "f1", heal_at=T0 + 2.0)
    assert check_single_upstream(rb.build()).status == "fail"


def test_a_backend_restart_ends_its_old_connections(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=None)
    rb.backend_start("primary", T0 + 1.05)
    assert check_single_upstream(rb.build()).status == "pass"


def test_a_move_delivered_more_often_than_sent_fails(rb: RunBuilder) -> None:
    rb.healthy()
    # The balancer re-sends move 5 on the secondary although the primary had it already.
    rb.journal("secondary", T0 + 2.35, "recv", conn="secondary-x", client="c2", kind="move", seq=5, applied=False)
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    assert "move 5 was delivered to backends 2 times but sent 1 time(s)" in result.violations[0].message
    assert {e["journal"] for e in result.violations[0].evidence} == {"primary", "secondary"}


def test_without_journals_it_is_not_checked(rb: RunBuilder) -> None:
    rb.healthy()
    rb.journals.clear()
    assert check_single_upstream(rb.build()).status == "not_checked"
    assert check_single_upstream(make_run()).status == "not_checked"
