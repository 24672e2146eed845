from __future__ import annotations

from typing import Any

from harness.checkers import check_failover_delivery
from harness.history import make_run

T0 = 1_700_000_000.0


def rec(t: float, type_: str, f: str, **fields: Any) -> dict[str, Any]:
    return {"t": T0 + t, "process": "c1", "type": type_, "f": f, "conn": 1, **fields}


def run(deliveries_of_7: int) -> Any:
    """The primary's connection closes at 1.0; moves 7 (at 1.4) is sent during the failover and
    re-sent by the client after the welcome from the secondary at 1.8."""
    history = [
        rec(0.0, "event", "conn_open"),
        rec(0.01, "event", "welcome", server="primary", server_conn="p-1"),
        rec(0.5, "invoke", "move", seq=6, attempt=1),
        rec(0.51, "ok", "move", seq=6),
        rec(1.4, "invoke", "move", seq=7, attempt=1),
        rec(1.8, "event", "welcome", server="secondary", server_conn="s-1"),
        rec(1.81, "invoke", "move", seq=7, attempt=2),
        rec(1.9, "ok", "move", seq=7),
    ]
    journals = {
        "primary": [
            {"t": T0, "event": "open", "conn": "p-1", "client": "c1"},
            {"t": T0 + 0.5, "event": "recv", "conn": "p-1", "client": "c1", "kind": "move", "seq": 6},
            {"t": T0 + 1.0, "event": "close", "conn": "p-1", "client": "c1"},
        ],
        "secondary": [{"t": T0 + 1.7, "event": "open", "conn": "s-1", "client": "c1"}]
        + [{"t": T0 + 1.75, "event": "recv", "conn": "s-1", "client": "c1", "kind": "move", "seq": 7}]
        * deliveries_of_7,
    }
    return make_run(history=history, journals=journals)


def test_a_move_sent_during_the_failover_and_relayed_passes() -> None:
    assert check_failover_delivery(run(2)).status == "pass"


def test_a_move_sent_during_the_failover_and_dropped_fails() -> None:
    result = check_failover_delivery(run(1))
    assert result.status == "fail"
    assert "move 7 sent during the failover" in result.violations[0].message
    assert "1 time(s) for 2 send(s)" in result.violations[0].message


def test_no_failover_is_not_checked() -> None:
    assert check_failover_delivery(make_run(history=[rec(0.0, "event", "conn_open")])).status == "not_checked"
