from __future__ import annotations

from typing import Any

from checker_runs import T0, RunBuilder

from harness.checkers import check_others_unaffected


def protocol_error(rb: RunBuilder, t: float, heal_at: float, clients: int = 1, fault_id: str = "f1") -> None:
    fault: dict[str, Any] = {
        "kind": "client_protocol_error",
        "target": "lb",
        "params": {"error": "reserved_opcode", "clients": clients, "nth": 1},
    }
    rb.rec(t, "nemesis", "invoke", "apply", fault=fault, fault_id=fault_id)
    rb.rec(t + 0.01, "nemesis", "ok", "apply", fault=fault, fault_id=fault_id)
    rb.rec(heal_at, "nemesis", "invoke", "heal", fault=fault, fault_id=fault_id)
    rb.rec(heal_at + 0.01, "nemesis", "ok", "heal", fault=fault, fault_id=fault_id)


def three_clients(rb: RunBuilder) -> None:
    for client in ("c1", "c2", "c3"):
        rb.play(client, T0, range(1, 40))


def test_one_client_hit_and_the_others_untouched_passes(rb: RunBuilder) -> None:
    three_clients(rb)
    protocol_error(rb, T0 + 0.5, T0 + 3.5)
    rb.conn_close("c1", T0 + 0.6, code=1002, initiator="remote")
    result = check_others_unaffected(rb.build())
    assert result.status == "pass", result
    assert "1 client(s) hit, 2 judged unaffected" in result.note


def test_another_client_dropped_meanwhile_fails(rb: RunBuilder) -> None:
    three_clients(rb)
    protocol_error(rb, T0 + 0.5, T0 + 3.5)
    rb.conn_close("c1", T0 + 0.6, code=1002, initiator="remote")
    rb.conn_close("c2", T0 + 0.7, code=1006, initiator="remote")
    result = check_others_unaffected(rb.build())
    assert result.status == "fail"
    assert "client c2 conn 1 closed remotely with code 1006" in result.violations[0].message


def test_closing_more_clients_than_sent_errors_fails(rb: RunBuilder) -> None:
    three_clients(rb)
    protocol_error(rb, T0 + 0.5, T0 + 3.5)
    rb.conn_close("c1", T0 + 0.6, code=1002, initiator="remote")
    rb.conn_close("c2", T0 + 0.6, code=1002, initiator="remote")
    result = check_others_unaffected(rb.build())
    assert result.status == "fail"
    assert "2 connections closed with a protocol-error code" in result.violations[0].message
    assert "made 1 client(s) send a malformed frame (clients c1, c2)" in result.violations[0].message


def test_the_fault_budget_counts(rb: RunBuilder) -> None:
    three_clients(rb)
    protocol_error(rb, T0 + 0.5, T0 + 3.5, clients=2)
    rb.conn_close("c1", T0 + 0.6, code=1002, initiator="remote")
    rb.conn_close("c2", T0 + 0.6, code=1007, initiator="remote")
    assert check_others_unaffected(rb.build()).status == "pass"


def test_closes_outside_the_window_are_not_its_business(rb: RunBuilder) -> None:
    three_clients(rb)
    protocol_error(rb, T0 + 0.5, T0 + 2.0)
    rb.conn_close("c1", T0 + 0.6, code=1002, initiator="remote")
    rb.conn_close("c2", T0 + 3.5, code=1006, initiator="remote")  # after heal + grace
    rb.conn_close("c3", T0 + 2.5, code=1000, initiator="client")  # the client's own close
    assert check_others_unaffected(rb.build()).status == "pass"


def test_not_checked_without_the_fault_or_when_it_never_landed(rb: RunBuilder) -> None:
    three_clients(rb)
    result = check_others_unaffected(rb.build())
    assert result.status == "not_checked"
    assert "no client_protocol_error fault" in result.note
    protocol_error(rb, T0 + 0.5, T0 + 3.5)
    result = check_others_unaffected(rb.build())
    assert result.status == "not_checked"
    assert "never landed" in result.note


def test_not_checked_when_every_client_was_hit(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 10))
    protocol_error(rb, T0 + 0.5, T0 + 3.5)
    rb.conn_close("c1", T0 + 0.6, code=1002, initiator="remote")
    result = check_others_unaffected(rb.build())
    assert result.status == "not_checked"
    assert "no other client" in result.note


def test_a_window_overlapping_another_fault_is_not_judged(rb: RunBuilder) -> None:
    three_clients(rb)
    protocol_error(rb, T0 + 0.5, T0 + 3.5)
    rb.fault(T0 + 1.0, "down", "lb", "f2", heal_at=T0 + 2.0)
    rb.conn_close("c1", T0 + 0.6, code=1002, initiator="remote")
    rb.conn_close("c2", T0 + 1.1, code=1006, initiator="remote")  # the down's doing, not c1's error
    result = check_others_unaffected(rb.build())
    assert result.status == "not_checked"
    assert "f1: not judged, other faults in force meanwhile (down:lb)" in result.note


def test_every_client_closed_for_one_clients_error_fails(rb: RunBuilder) -> None:
    # A balancer that answers one client's protocol error by closing everyone (with that code).
    three_clients(rb)
    protocol_error(rb, T0 + 0.5, T0 + 3.5)
    for client in ("c1", "c2", "c3"):
        rb.conn_close(client, T0 + 0.6, code=1002, initiator="remote")
    result = check_others_unaffected(rb.build())
    assert result.status == "fail"
    assert "3 connections closed with a protocol-error code" in result.violations[0].message
