"""`herd_recovered`: must-pass and must-fail runs of a thundering herd, built without processes."""

from __future__ import annotations

from typing import Any

import pytest
from checker_runs import T0, RunBuilder

from harness import analysis
from harness.checkers import check_herd_recovered, judge
from harness.history import Run

HERD = 120  # above analysis.HERD_MIN_CLIENTS
DOWN_AT, UP_AT = T0 + 2.0, T0 + 2.5
REFUSED = "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 40001)"
SHED = "InvalidStatus: server rejected WebSocket connection: HTTP 503"
CUT = "InvalidMessage: did not receive a valid HTTP response"


def clients(n: int = HERD) -> list[str]:
    return [f"c{i:03d}" for i in range(n)]


def herd_run(rb: RunBuilder, n: int = HERD, *, back_at: float = UP_AT + 0.2, fault: str = "down") -> RunBuilder:
    """n clients play, the lb link goes down at DOWN_AT (each client's connection is dropped, its
    reconnect refused), comes up at UP_AT, and every client is back on a new connection."""
    rb.meta["phases"] = {"warmup_end": T0 + 1.0, "heal_end": UP_AT + 0.1, "deadline_end": T0 + 8.0}
    rb.meta["balancer_config"] = {"max_connections": 1024}
    rb.meta["final"] = {"balancer_alive": True}
    rb.fault(DOWN_AT, fault, "lb" if fault == "down" else "balancer", "f1", heal_at=UP_AT if fault == "down" else None)
    rb.status_sample(T0 + 0.5, sessions=n)
    for c in clients(n):
        rb.play(c, T0, range(1, 3))
        rb.conn_close(c, DOWN_AT + 0.001, code=1006, initiator="remote")
        rb.rec(DOWN_AT + 0.2, c, "event", "conn_fail", conn=2, error=REFUSED)
        rb.conn_open(c, back_at, conn=3)
        rb.welcome(c, back_at + 0.01, "primary", conn=3)
        rb.move(c, back_at + 0.02, 3, conn=3)
        rb.stopped(c, T0 + 8.1)
    rb.status_sample(UP_AT + 1.0, sessions=n)
    return rb


def result(run: Run) -> Any:
    return check_herd_recovered(run)


def test_a_herd_that_comes_back_passes(rb: RunBuilder) -> None:
    r = result(herd_run(rb).build())
    assert r.status == "pass", r
    assert f"herd: {HERD} clients dropped by down:lb" in r.note
    assert "/status: at most 120 sessions (max_connections 1024)" in r.note


def test_no_herd_is_not_checked(rb: RunBuilder) -> None:
    r = result(herd_run(rb, n=analysis.HERD_MIN_CLIENTS - 1).build())
    assert r.status == "not_checked"
    assert "no herd" in r.note and f"the most: {analysis.HERD_MIN_CLIENTS - 1}" in r.note


def test_the_healthy_failover_run_has_no_herd(rb: RunBuilder) -> None:
    assert result(rb.healthy().build()).status == "not_checked"


def test_a_client_not_back_within_the_recovery_deadline_fails(rb: RunBuilder) -> None:
    herd_run(rb)
    rb.meta["expect"]["recovery_deadline_s"] = 2.0
    late = "c007"
    rb.history = [r for r in rb.history if not (r["process"] == late and r["t"] > UP_AT)]
    rb.conn_open(late, UP_AT + 3.0, conn=3)
    rb.welcome(late, UP_AT + 3.01, "primary", conn=3)
    rb.move(late, UP_AT + 3.02, 3, conn=3)
    rb.stopped(late, T0 + 8.1)
    r = result(rb.build())
    assert r.status == "fail"
    assert next(v.message for v in r.violations if late in v.message).startswith(
        f"client {late} was not back within 2 s"
    )


def test_sheds_with_503_and_1013_pass_and_are_counted(rb: RunBuilder) -> None:
    herd_run(rb)
    rb.rec(UP_AT + 1.5, "c001", "event", "conn_fail", conn=4, error=SHED)
    rb.conn_open("c002", UP_AT + 1.1, conn=5)
    rb.conn_close("c002", UP_AT + 1.2, conn=5, code=1013, initiator="remote")
    r = result(rb.build())
    assert r.status == "pass", r
    assert "shed: 1 handshake(s) refused with 503, 1 close(s) with 1013" in r.note


@pytest.mark.parametrize("code", [1006, 1011, 1000])
def test_a_readmitted_client_dropped_during_the_herd_fails(rb: RunBuilder, code: int) -> None:
    herd_run(rb)
    rb.conn_close("c005", UP_AT + 0.5, conn=3, code=code, initiator="remote")
    r = result(rb.build())
    assert r.status == "fail"
    assert any(f"admitted client c005 again during the herd and then dropped it: conn 3 closed with {code}" in v.message
               for v in r.violations)  # fmt: skip


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (CUT, "cut the handshake off"),
        ("InvalidStatus: server rejected WebSocket connection: HTTP 500", "another status"),
    ],
)
def test_a_handshake_cut_or_refused_otherwise_than_503_after_the_fault_fails(
    rb: RunBuilder, error: str, says: str
) -> None:
    herd_run(rb)
    rb.rec(UP_AT + 1.5, "c003", "event", "conn_fail", conn=4, error=error, took_s=0.01)
    r = result(rb.build())
    assert r.status == "fail"
    assert any(says in v.message and "c003" in v.message for v in r.violations)


def test_failures_while_the_fault_holds_are_the_faults(rb: RunBuilder) -> None:
    herd_run(rb)
    rb.rec(DOWN_AT + 0.3, "c003", "event", "conn_fail", conn=4, error=CUT, took_s=0.01)
    # Failed after the fault's end, but begun before it: a proxy still dialling a build not yet up.
    rb.rec(UP_AT + 1.5, "c005", "event", "conn_fail", conn=4, error=CUT, took_s=1.4)
    rb.rec(UP_AT + 2.0, "c004", "event", "conn_fail", conn=4, error="TimeoutError: timed out during opening handshake")
    r = result(rb.build())
    assert r.status == "pass", r
    # The fixture's own refusals while the link was down are among them.
    assert f"{HERD + 3} failed connect(s) not judged: begun while the fault held" in r.note


def test_a_handshake_timeout_well_after_the_fault_fails(rb: RunBuilder) -> None:
    herd_run(rb)
    # No took_s: begun an open timeout (5 s) before it failed, well after the fault.
    rb.rec(UP_AT + 6.0, "c004", "event", "conn_fail", conn=4, error="TimeoutError: timed out during opening handshake")
    r = result(rb.build())
    assert r.status == "fail"
    assert "did not answer the handshake" in r.violations[0].message


def test_the_build_falling_over_fails(rb: RunBuilder) -> None:
    herd_run(rb)
    rb.rec(UP_AT + 0.4, "monitor", "event", "process_exit", name="balancer", pid=4242, exit_code=-11)
    r = result(rb.build())
    assert r.status == "fail"
    assert "fell over during the herd: its process (pid 4242) ended with exit code -11" in r.violations[0].message
    # The build's exit is judged, not taken for a harness failure that makes the run inconclusive.
    assert analysis.unexpected_exits(rb.build()) == []


def test_a_restart_by_the_nemesis_is_not_falling_over(rb: RunBuilder) -> None:
    herd_run(rb, fault="restart")
    rb.rec(DOWN_AT + 0.005, "monitor", "event", "process_exit", name="balancer", pid=4242, exit_code=0)
    r = result(rb.build())
    assert r.status == "pass", r
    assert "restart:balancer" in r.note


def test_a_build_dead_at_the_end_fails(rb: RunBuilder) -> None:
    herd_run(rb)
    rb.meta["final"] = {"balancer_alive": False}
    assert result(rb.build()).status == "fail"


def test_more_sessions_than_max_connections_fails(rb: RunBuilder) -> None:
    herd_run(rb)
    rb.meta["balancer_config"] = {"max_connections": 100}
    r = result(rb.build())
    assert r.status == "fail"
    assert (
        "/status showed 120 sessions" in r.violations[0].message
        and "over max_connections 100" in r.violations[0].message
    )


def test_status_without_a_sessions_count_is_said_and_not_judged(rb: RunBuilder) -> None:
    herd_run(rb)
    rb.history = [r for r in rb.history if r["f"] != "status"]
    r = result(rb.build())
    assert r.status == "pass"
    assert "/status not sampled during the herd" in r.note


def test_it_is_judged_with_the_others(rb: RunBuilder) -> None:
    herd_run(rb)
    results = {r.invariant: r for r in judge(rb.build())}
    assert results["herd_recovered"].status == "pass"


def test_a_drop_before_the_welcome_is_judged_even_on_a_machine_too_slow(rb: RunBuilder) -> None:
    herd_run(rb)
    rb.rec(T0 - 1, "swarm-c-1", "event", "swarm_start", clients=clients(), slowness=9.0)
    rb.conn_open("c006", UP_AT + 0.5, conn=7)
    rb.conn_close("c006", UP_AT + 0.51, conn=7, code=1006, initiator="remote")
    # A welcomed connection's keepalive close on that machine is timing: set aside, inconclusive.
    rb.conn_open("c008", UP_AT + 0.5, conn=7)
    rb.welcome("c008", UP_AT + 0.51, "primary", conn=7)
    rb.rec(UP_AT + 3.0, "c008", "event", "conn_close", conn=7, code=1011, reason="keepalive ping timeout",
           initiator="remote")  # fmt: skip
    r = result(rb.build())
    assert r.status == "fail"
    assert [v.message for v in r.violations if "c006" in v.message]
    assert not [v.message for v in r.violations if "c008" in v.message]
    assert "inconclusive: 1 timing finding(s) not judged" in r.note
