from __future__ import annotations

from checker_runs import T0, RunBuilder

from harness.checkers import check_ordered
from harness.history import make_run


def test_healthy_run_passes(rb: RunBuilder) -> None:
    assert check_ordered(rb.healthy().build()).status == "pass"


def test_acknowledgements_going_backwards_fail(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 4))
    rb.move("c1", T0 + 1.0, 5)
    rb.move("c1", T0 + 1.1, 4)
    result = check_ordered(rb.build())
    assert result.status == "fail"
    assert "seq 4 first acknowledged" in result.violations[0].message
    assert [e["seq"] for e in result.violations[0].evidence] == [5, 4]


def test_a_seq_applied_twice_fails(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 4))
    rb.move("c1", T0 + 1.0, 3, dup=False)
    result = check_ordered(rb.build())
    assert result.status == "fail"
    assert "seq 3 acknowledged 2 times with dup false" in result.violations[0].message


def test_a_repeat_acknowledged_as_duplicate_passes(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 4))
    rb.move("c1", T0 + 1.0, 3)  # the builder marks it dup: 3 was acknowledged before
    assert rb.records("c1", "move", "ok")[-1]["dup"] is True
    assert check_ordered(rb.build()).status == "pass"


def test_no_acknowledgements_is_not_checked(rb: RunBuilder) -> None:
    rb.conn_open("c1", T0)
    assert check_ordered(rb.build()).status == "not_checked"
    assert check_ordered(make_run()).status == "not_checked"
