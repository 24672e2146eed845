"""`upgrade_failover`: must-pass and must-fail runs for backends that refuse or stall the upgrade."""

from __future__ import annotations

from typing import Any

from checker_runs import T0, RunBuilder

from harness.checkers import check_upgrade_failover

TOXIC = "f1_backend_upgrade_refused_upstream"


def upgrade_fault(
    rb: RunBuilder, kind: str, heal_at: float, met: int | None = 4, params: dict[str, Any] | None = None
) -> None:
    fault = {"kind": kind, "target": "primary", "params": params or {}}
    rb.rec(T0 + 0.5, "nemesis", "invoke", "apply", fault=fault, fault_id="f1")
    rb.rec(T0 + 0.51, "nemesis", "ok", "apply", fault=fault, fault_id="f1")
    rb.rec(heal_at, "nemesis", "invoke", "heal", fault=fault, fault_id="f1")
    counts = None if met is None else {TOXIC: {"name": TOXIC, "connections": met, "cuts": met}}
    rb.rec(heal_at + 0.01, "nemesis", "ok", "heal", fault=fault, fault_id="f1", evidence=counts)


def with_open_timeout(rb: RunBuilder, seconds: float = 1.5) -> RunBuilder:
    rb.meta["balancer_config"] = {"open_timeout_s": seconds}
    return rb


def reconnect(rb: RunBuilder, client: str, at: float, answered_after: float | None, server: str = "secondary") -> None:
    """The client's connection 2 opens at ``at``; its welcome comes ``answered_after`` later."""
    rb.conn_open(client, T0 + at, conn=2)
    if answered_after is not None:
        rb.welcome(client, t=T0 + at + answered_after, server=server, conn=2)
    rb.stopped(client, T0 + 12.0)


def test_clients_moved_at_once_past_a_refusing_backend_pass(rb: RunBuilder) -> None:
    with_open_timeout(rb)
    upgrade_fault(rb, "backend_upgrade_refused", heal_at=T0 + 5.5, params={"status": 503})
    for client in ("c1", "c2"):
        reconnect(rb, client, at=1.2, answered_after=0.1)
    result = check_upgrade_failover(rb.build())
    assert result.status == "pass", result
    assert "met 4 handshake(s)" in result.note and "2 client connection(s) judged" in result.note


def test_a_client_left_waiting_on_a_refusing_backend_fails(rb: RunBuilder) -> None:
    with_open_timeout(rb)
    upgrade_fault(rb, "backend_upgrade_refused", heal_at=T0 + 5.5)
    reconnect(rb, "c1", at=1.2, answered_after=4.4, server="primary")  # welcomed only after the heal
    result = check_upgrade_failover(rb.build())
    assert result.status == "fail", result
    assert "client c1 conn 2" in result.violations[0].message
    assert "its welcome only after 4.4 s (bound 2.0 s" in result.violations[0].message


def test_a_stall_may_cost_one_open_timeout_and_no_more(rb: RunBuilder) -> None:
    with_open_timeout(rb, 1.5)
    upgrade_fault(rb, "backend_upgrade_stalled", heal_at=T0 + 6.5)
    reconnect(rb, "c1", at=1.2, answered_after=3.4)  # 1.5 s + 2 s margin: in time
    reconnect(rb, "c2", at=1.2, answered_after=None)  # never answered while the run went on
    result = check_upgrade_failover(rb.build())
    assert result.status == "fail", result
    assert [v.message.split(" opened")[0] for v in result.violations] == ["client c2 conn 2"]
    assert "no welcome and no close" in result.violations[0].message


def test_a_1013_in_time_is_an_answer(rb: RunBuilder) -> None:
    with_open_timeout(rb)
    upgrade_fault(rb, "backend_upgrade_stalled", heal_at=T0 + 6.5)
    rb.conn_open("c1", T0 + 1.2, conn=2)
    rb.conn_close("c1", T0 + 2.8, conn=2, code=1013, initiator="remote")
    rb.stopped("c1", T0 + 12.0)
    assert check_upgrade_failover(rb.build()).status == "pass"


def test_a_slow_handshake_costs_its_delay(rb: RunBuilder) -> None:
    with_open_timeout(rb, 1.5)
    upgrade_fault(rb, "backend_upgrade_slow", heal_at=T0 + 5.5, params={"delay_ms": 800})
    reconnect(rb, "c1", at=1.2, answered_after=2.7, server="primary")
    reconnect(rb, "c2", at=1.2, answered_after=2.9, server="primary")
    result = check_upgrade_failover(rb.build())
    assert result.status == "fail" and len(result.violations) == 1, result
    assert "bound 2.8 s" in result.violations[0].message


def test_retrying_a_refusing_backend_in_a_loop_fails_even_when_clients_get_through(rb: RunBuilder) -> None:
    with_open_timeout(rb)
    upgrade_fault(rb, "backend_upgrade_refused", heal_at=T0 + 5.5, met=149)
    for client in ("c1", "c2"):
        reconnect(rb, client, at=1.2, answered_after=0.3)
    result = check_upgrade_failover(rb.build())
    assert result.status == "fail", result
    # 2 connections x (1 + max_attempts) + 2 probes a second over the 5 s fault.
    assert "met 149 upgrade attempts while 2 client connection(s)" in result.violations[0].message
    assert "at most 19 are called for" in result.violations[0].message


def test_a_machine_too_slow_makes_a_late_answer_inconclusive_but_not_a_retry_loop(rb: RunBuilder) -> None:
    with_open_timeout(rb)
    rb.rec(T0, "swarm-c-1", "event", "swarm_start", clients=["c1"], pid=1, loop="asyncio", slowness=5.0)
    upgrade_fault(rb, "backend_upgrade_refused", heal_at=T0 + 5.5)
    reconnect(rb, "c1", at=1.2, answered_after=None)
    result = check_upgrade_failover(rb.build())
    assert result.status == "not_checked", result
    assert "inconclusive: 1 timing finding(s) not judged: machine too slow" in result.note
    rb2 = with_open_timeout(RunBuilder())
    rb2.rec(T0, "swarm-c-1", "event", "swarm_start", clients=["c1"], pid=1, loop="asyncio", slowness=5.0)
    upgrade_fault(rb2, "backend_upgrade_refused", heal_at=T0 + 5.5, met=500)
    reconnect(rb2, "c1", at=1.2, answered_after=None)
    assert check_upgrade_failover(rb2.build()).status == "fail"


def test_nothing_to_judge_is_not_checked(rb: RunBuilder) -> None:
    assert check_upgrade_failover(rb.healthy().build()).note == "no backend_upgrade_* fault in the run"
    rb2 = RunBuilder()
    upgrade_fault(rb2, "backend_upgrade_refused", heal_at=T0 + 5.5)
    result = check_upgrade_failover(rb2.build())
    assert result.status == "not_checked" and "no open_timeout_s" in result.note
    rb3 = with_open_timeout(RunBuilder())
    upgrade_fault(rb3, "backend_upgrade_refused", heal_at=T0 + 5.5, met=0)
    rb3.conn_open("c1", T0 + 0.1)  # opened before the fault: it never met it
    rb3.welcome("c1", t=T0 + 0.2, server="primary")
    result = check_upgrade_failover(rb3.build())
    assert result.status == "not_checked", result
    assert "no client connection opened while an upgrade fault was in place" in result.note
