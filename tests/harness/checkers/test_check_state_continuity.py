from __future__ import annotations

from checker_runs import T0, RunBuilder, state

from harness import game
from harness.checkers import check_state_continuity
from harness.checkers.game_state import (
    RULE_SOURCE,
    expected_state,
    normalise_state,
)
from harness.history import make_run


def test_healthy_run_passes(rb: RunBuilder) -> None:
    result = check_state_continuity(rb.healthy().build())
    assert result.status == "pass"
    assert RULE_SOURCE in result.note


def test_an_ack_with_the_wrong_state_fails(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 4))
    wrong = dict(state(4), x=state(4)["x"] + 1)
    rb.move("c1", T0 + 1.0, 4, state=wrong)
    result = check_state_continuity(rb.build())
    assert result.status == "fail"
    assert result.violations[0].evidence[0]["expected"] == state(4)


def test_a_state_regression_after_a_transition_fails(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 6))
    rb.welcome("c1", T0 + 1.0, "secondary", state=state(2))  # a stale server: fine by itself
    rb.move("c1", T0 + 1.1, 6, state=state(3), dup=True)  # ...but the game went back to seq 3
    result = check_state_continuity(rb.build())
    assert result.status == "fail"
    regression = next(v for v in result.violations if "regressed" in v.message)
    assert "from seq 5 to seq 3" in regression.message
    assert "transition to secondary" in regression.message


def test_a_duplicate_ack_may_carry_a_later_state(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 6))
    rb.move("c1", T0 + 1.0, 4, dup=True, state=state(5))
    assert check_state_continuity(rb.build()).status == "pass"


def test_an_inconsistent_welcome_state_fails(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 3))
    rb.welcome("c1", T0 + 1.0, "secondary", state={"seq": 2, "x": 40, "y": 40})
    assert check_state_continuity(rb.build()).status == "fail"


def test_no_acknowledged_state_is_not_checked(rb: RunBuilder) -> None:
    rb.conn_open("c1", T0)
    assert check_state_continuity(rb.build()).status == "not_checked"
    assert check_state_continuity(make_run()).status == "not_checked"


def test_the_rule_is_harness_games() -> None:
    for seq in range(0, 50):
        assert expected_state(seq) == normalise_state(game.expected_state(seq))
    assert expected_state(-1) is None  # unreadable, reported by the checker rather than raised
