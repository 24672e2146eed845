from __future__ import annotations

from checker_runs import T0, RunBuilder

from harness.checkers import check_no_crosstalk
from harness.history import make_run


def test_healthy_run_passes(rb: RunBuilder) -> None:
    assert check_no_crosstalk(rb.healthy().build()).status == "pass"


def test_an_ack_addressed_to_another_client_fails(rb: RunBuilder) -> None:
    rb.healthy()
    rb.play("c4", T0 + 3.8, range(1, 2))
    rb.move("c4", T0 + 4.0, 2, client="c2")
    result = check_no_crosstalk(rb.build())
    assert result.status == "fail"
    assert "client c4 received 1 frame(s) addressed to 'c2'" in result.violations[0].message
    assert result.violations[0].evidence[0]["seq"] == 2


def test_a_welcome_addressed_to_another_client_fails(rb: RunBuilder) -> None:
    rb.conn_open("c1", T0)
    rb.welcome("c1", T0 + 0.01, "primary", client="c7")
    assert check_no_crosstalk(rb.build()).status == "fail"


def test_a_reply_addressed_to_another_client_fails(rb: RunBuilder) -> None:
    rb.healthy()
    rb.rec(T0 + 2.6, "c1", "event", "reply", conn=1, msg={"type": "gap", "client": "c2", "seq": 9, "expected": 3})
    assert check_no_crosstalk(rb.build()).status == "fail"


def test_error_frames_carry_no_client_and_are_not_judged(rb: RunBuilder) -> None:
    rb.rec(T0, "c1", "event", "reply", conn=1, msg={"type": "error", "server": "primary", "error": "bad"})
    result = check_no_crosstalk(rb.build())
    assert result.status == "not_checked"
    assert "1 frame(s) carry no client id" in result.note


def test_nothing_to_judge_is_not_checked() -> None:
    assert check_no_crosstalk(make_run()).status == "not_checked"
