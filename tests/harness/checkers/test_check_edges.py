from __future__ import annotations

from typing import Any

from harness.checkers import check_close_passthrough, check_connection_limit, check_size_limit
from harness.history import make_run

T0 = 1_700_000_000.0


def probe(t: float, f: str, **fields: Any) -> dict[str, Any]:
    return {"t": T0 + t, "process": "probe", "type": "event", "f": f, **fields}


def game_client_open(t: float) -> dict[str, Any]:
    return {"t": T0 + t, "process": "c1", "type": "event", "f": "conn_open", "conn": 1}


def connections(*outcomes: tuple[str, dict[str, Any]]) -> Any:
    history = [game_client_open(0.0)]
    for slot, (f, fields) in enumerate(outcomes, start=1):
        history.append(probe(slot, f, slot=slot, started=T0 + slot - 0.1, **fields))
    return make_run(meta={"balancer_config": {"max_connections": 3}}, history=history)


ADMITTED: tuple[str, dict[str, Any]] = ("connect_admitted", {"welcomed": True})
REFUSED: tuple[str, dict[str, Any]] = ("connect_refused", {"status": 503})


def test_limit_admitted_then_503_passes() -> None:
    assert check_connection_limit(connections(ADMITTED, ADMITTED, REFUSED)).status == "pass"


def test_one_admitted_past_the_limit_fails() -> None:
    result = check_connection_limit(connections(ADMITTED, ADMITTED, ADMITTED, REFUSED))
    assert result.status == "fail"
    assert "admitted past the limit: attempt 3" in result.violations[0].message


def test_refused_below_the_limit_fails() -> None:
    result = check_connection_limit(connections(ADMITTED, REFUSED))
    assert result.status == "fail"
    assert "refused below the limit" in result.violations[0].message


def test_refused_without_503_fails() -> None:
    result = check_connection_limit(connections(ADMITTED, ADMITTED, ("connect_refused", {"status": 500})))
    assert result.status == "fail"
    assert "not 503" in result.violations[0].message


def test_a_probe_that_never_reached_the_limit_is_not_checked() -> None:
    assert check_connection_limit(connections(ADMITTED)).status == "not_checked"
    assert check_connection_limit(make_run()).status == "not_checked"


def sizes(at: dict[str, Any], over: dict[str, Any]) -> Any:
    history = [probe(1.0, "message_sent", size=100, limit=100, **at), probe(2.0, "message_sent", size=101, **over)]
    return make_run(meta={"balancer_config": {"max_size": 100}}, history=history)


def test_exact_size_relayed_and_one_more_closed_1009_passes() -> None:
    assert check_size_limit(sizes({"outcome": "relayed"}, {"outcome": "closed", "code": 1009})).status == "pass"


def test_one_byte_more_relayed_fails() -> None:
    result = check_size_limit(sizes({"outcome": "relayed"}, {"outcome": "relayed"}))
    assert result.status == "fail"
    assert "max_size + 1 (101) bytes was relayed" in result.violations[0].message


def test_exact_size_refused_fails() -> None:
    result = check_size_limit(sizes({"outcome": "closed", "code": 1009}, {"outcome": "closed", "code": 1009}))
    assert result.status == "fail"
    assert "exactly max_size (100) bytes was not relayed" in result.violations[0].message


def test_close_code_passed_through_passes_and_swallowed_fails() -> None:
    ok = [probe(1.0, "close_probe", expected=4321, outcome="closed", code=4321, reason="bye")]
    assert check_close_passthrough(make_run(history=ok)).status == "pass"
    bad = [probe(1.0, "close_probe", expected=4321, outcome="closed", code=1013, reason="failover limit")]
    result = check_close_passthrough(make_run(history=bad))
    assert result.status == "fail"
    assert "ended a session with 4321; the client got code 1013" in result.violations[0].message
    assert check_close_passthrough(make_run()).status == "not_checked"
