from __future__ import annotations

import json
from typing import Any

from harness.checkers import check_failover_delivery
from harness.history import make_run

T0 = 1_700_000_000.0
EVENTS = (
    json.dumps({"event": "session_open", "ts": T0, "session": "s1", "path": "/play?client=c1"})
    + "\n"
    + json.dumps({"event": "upstream_lost", "ts": T0 + 1.05, "session": "s1", "backend": "primary"})
    + "\n"
)


def rec(t: float, type_: str, f: str, **fields: Any) -> dict[str, Any]:
    return {"t": T0 + t, "process": "c1", "type": type_, "f": f, "conn": 1, **fields}


def run(deliveries_of_7: int) -> Any:
    """The build notices the loss of the primary at 1.05; move 7 (at 1.4) is sent during the
    failover and re-sent by the client after the welcome from the secondary at 1.8."""
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
        "secondary": [
            {"t": T0 + 1.7, "event": "open", "conn": "s-1", "client": "c1"},
            *[{"t": T0 + 1.75, "event": "recv", "conn": "s-1", "client": "c1", "kind": "move", "seq": 7}]
            * (deliveries_of_7 - 1),
            {"t": T0 + 1.82, "event": "recv", "conn": "s-1", "client": "c1", "kind": "resume"},
            {"t": T0 + 1.83, "event": "recv", "conn": "s-1", "client": "c1", "kind": "move", "seq": 7},
        ],
    }
    return make_run(history=history, journals=journals, balancer_stdout=EVENTS)


def test_a_move_sent_during_the_failover_and_relayed_passes() -> None:
    assert check_failover_delivery(run(2)).status == "pass"


def test_a_move_sent_during_the_failover_and_dropped_fails() -> None:
    result = check_failover_delivery(run(1))
    assert result.status == "fail"
    assert "move 7, sent during the failover" in result.violations[0].message
    assert "did not reach s-1 before the client's resume" in result.violations[0].message


def test_no_failover_is_not_checked() -> None:
    quiet = make_run(history=[rec(0.0, "event", "conn_open")], balancer_stdout=EVENTS)
    assert check_failover_delivery(quiet).status == "not_checked"


def test_moves_the_build_may_have_handed_to_the_dead_upstream_are_not_judged() -> None:
    """Noticed only at 1.6: move 7 (1.4) may have gone to the primary's dead socket."""
    late = run(1)
    late.balancer_events[1]["ts"] = T0 + 1.6
    assert check_failover_delivery(late).status == "not_checked"


def test_an_upstream_that_never_got_the_resume_is_not_judged() -> None:
    cut = run(1)
    cut.journals["secondary"] = [r for r in cut.journals["secondary"] if r.get("kind") != "resume"]
    assert check_failover_delivery(cut).status == "not_checked"


def test_without_event_lines_it_is_not_checked() -> None:
    blind = run(1)
    blind.balancer_events.clear()
    assert check_failover_delivery(blind).status == "not_checked"
