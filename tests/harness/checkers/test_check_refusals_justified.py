from __future__ import annotations

import json
from typing import Any

from harness.checkers import check_refusals_justified
from harness.history import make_run

T0 = 1_700_000_000.0
LIMITS = {"max_attempts": 2, "window_s": 10.0, "min_interval_s": 1.0}


def events(*attempts: tuple[float, bool]) -> str:
    lines = [{"event": "session_open", "ts": T0, "session": "s1", "path": "/play?client=c1"}]
    lines += [{"event": "failover_attempt", "ts": T0 + t, "session": "s1", "allowed": ok} for t, ok in attempts]
    return "\n".join(json.dumps(e) for e in lines) + "\n"


def run(stdout: str = "", history: list[dict[str, Any]] | None = None, reachable: bool = False) -> Any:
    meta = {"failover": LIMITS, "expect": {"backends_reachable": reachable}}
    return make_run(meta=meta, balancer_stdout=stdout, history=history or [])


def test_refusal_after_max_attempts_in_the_window_passes() -> None:
    assert check_refusals_justified(run(events((1.0, True), (3.0, True), (5.0, False)))).status == "pass"


def test_refusal_within_min_interval_passes() -> None:
    assert check_refusals_justified(run(events((1.0, True), (1.5, False)))).status == "pass"


def test_refusal_the_limits_allow_fails() -> None:
    result = check_refusals_justified(run(events((1.0, True), (3.0, False))))
    assert result.status == "fail"
    assert "refused at" in result.violations[0].message
    assert "1 allowed failover(s) in the last window_s 10" in result.violations[0].message


def test_refusal_after_the_window_has_passed_fails() -> None:
    result = check_refusals_justified(run(events((1.0, True), (3.0, True), (13.5, False))))
    assert result.status == "fail"


def test_refusal_while_shutting_down_is_not_judged() -> None:
    stdout = events((1.0, True)) + json.dumps(
        {"event": "failover_attempt", "ts": T0 + 5, "session": "s1", "allowed": False, "reason": "shutting_down"}
    )
    assert check_refusals_justified(run(stdout)).status == "pass"


def client(t: float, f: str, **fields: Any) -> dict[str, Any]:
    return {"t": T0 + t, "process": "c1", "type": "event", "f": f, **fields}


def test_clients_1013_judged_only_when_a_backend_is_reachable() -> None:
    history = [
        client(0.0, "conn_open", conn=1),
        client(0.1, "welcome", conn=1),
        client(2.0, "welcome", conn=1),
        client(4.0, "conn_close", conn=1, code=1013, initiator="remote"),
    ]
    assert check_refusals_justified(run(history=history)).status == "not_checked"
    result = check_refusals_justified(run(history=history, reachable=True))
    assert result.status == "fail"
    assert "client c1 conn 1 got 1013" in result.violations[0].message
    history.insert(3, client(3.0, "welcome", conn=1))  # now 2 failovers in the window: justified
    assert check_refusals_justified(run(history=history, reachable=True)).status == "pass"


def test_no_limits_is_not_checked() -> None:
    assert check_refusals_justified(make_run()).status == "not_checked"
