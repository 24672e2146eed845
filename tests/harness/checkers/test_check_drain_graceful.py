"""drain_graceful: no new session during a SIGHUP drain, live ones closed with 1001/1012 only after
the drain timeout, the old process exits 0 in time, everyone is welcomed by the new process."""

from __future__ import annotations

from typing import Any

import pytest
from checker_runs import T0, RunBuilder

from harness.checkers import check_drain_graceful

SIGNAL_AT = T0 + 2.0
DRAIN_S = 2.0
STARTED_AT = T0 + 5.0


def drain_record(rb: RunBuilder, **overrides: Any) -> None:
    fault = {"kind": "drain", "target": "balancer", "params": {}}
    rb.rec(SIGNAL_AT - 0.01, "nemesis", "invoke", "apply", fault=fault, fault_id="f1", pid=100)
    outcome: dict[str, Any] = {
        "pid": 100,
        "drain_declared": True,
        "signal": "SIGHUP",
        "signalled_at": SIGNAL_AT,
        "drain_timeout_s": DRAIN_S,
        "draining_seen": True,
        "new_connection": "refused",
        "exit_code": 0,
        "exited_at": SIGNAL_AT + DRAIN_S + 0.3,
        "killed": False,
        "started_pid": 101,
        "started_at": STARTED_AT,
    }
    outcome.update(overrides)
    rb.rec(STARTED_AT, "nemesis", "ok", "apply", fault=fault, fault_id="f1", **outcome)


def drained_run(rb: RunBuilder, close_at: float = SIGNAL_AT + DRAIN_S + 0.05, code: int = 1001,
                welcomed_again: bool = True, **overrides: Any) -> RunBuilder:  # fmt: skip
    """Two clients play; the balancer drains; both are closed, reconnect and are welcomed again."""
    for client in ("c1", "c2"):
        rb.play(client, T0, range(1, 11))
    drain_record(rb, **overrides)
    for client in ("c1", "c2"):
        rb.conn_close(client, close_at, conn=1, code=code, initiator="remote")
        rb.rec(close_at + 0.2, client, "event", "conn_fail", conn=2, error="connection refused")
        if welcomed_again:
            rb.conn_open(client, STARTED_AT + 0.2, conn=3)
            rb.welcome(client, STARTED_AT + 0.21, "primary", conn=3)
    return rb


def test_a_correct_drain_passes(rb: RunBuilder) -> None:
    result = check_drain_graceful(drained_run(rb).build())
    assert result.status == "pass", result
    assert "exited 2.30 s after the signal" in result.note


@pytest.mark.parametrize("outcome", ["refused", "HTTP 503"])
def test_a_new_connection_refused_either_way_passes(rb: RunBuilder, outcome: str) -> None:
    assert check_drain_graceful(drained_run(rb, new_connection=outcome).build()).status == "pass"


def test_1012_passes(rb: RunBuilder) -> None:
    assert check_drain_graceful(drained_run(rb, code=1012).build()).status == "pass"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"new_connection": "accepted"}, "a new connection was accepted during the drain"),
        ({"new_connection": "HTTP 200"}, "neither refused nor answered 503: HTTP 200"),
        ({"new_connection": "failed: TimeoutError: timed out"}, "neither refused nor answered 503"),
        ({"killed": True, "exit_code": -9, "exited_at": None}, "SIGKILLed"),
        ({"exit_code": -1}, "exited with status -1"),
    ],
)
def test_a_drain_that_breaks_a_rule_fails(rb: RunBuilder, overrides: dict[str, Any], needle: str) -> None:
    result = check_drain_graceful(drained_run(rb, **overrides).build())
    assert result.status == "fail"
    assert any(needle in v.message for v in result.violations), result.violations


def test_sessions_dropped_with_1006_fail(rb: RunBuilder) -> None:
    result = check_drain_graceful(drained_run(rb, code=1006).build())
    assert result.status == "fail"
    assert len(result.violations) == 2
    assert "ended with 1006, not 1001 or 1012" in result.violations[0].message


def test_sessions_closed_before_the_drain_timeout_fail(rb: RunBuilder) -> None:
    result = check_drain_graceful(drained_run(rb, close_at=SIGNAL_AT + 0.3).build())
    assert result.status == "fail"
    assert "closed with 1001 only 0.30 s into the drain" in result.violations[0].message


def test_a_close_just_at_the_drain_timeout_passes(rb: RunBuilder) -> None:
    rb = drained_run(rb, close_at=SIGNAL_AT + DRAIN_S - 0.01)
    assert check_drain_graceful(rb.build()).status == "pass"


def test_a_client_never_welcomed_by_the_new_process_fails(rb: RunBuilder) -> None:
    result = check_drain_graceful(drained_run(rb, welcomed_again=False).build())
    assert result.status == "fail"
    assert "never welcomed again" in result.violations[0].message


def test_a_welcome_before_the_harness_saw_the_new_process_ready_counts(rb: RunBuilder) -> None:
    # As in a CI run: the old process exited at +3.26 s, the clients' backoff brought them to the
    # new one at +3.527 s, and the harness's readiness poll reported it ready only at +3.537 s.
    exited_at = SIGNAL_AT + DRAIN_S + 0.3
    for client in ("c1", "c2"):
        rb.play(client, T0, range(1, 11))
    drain_record(rb, exited_at=exited_at)
    for client in ("c1", "c2"):
        rb.conn_close(client, SIGNAL_AT + DRAIN_S + 0.05, conn=1, code=1001, initiator="remote")
        rb.conn_open(client, STARTED_AT - 0.02, conn=2)
        rb.welcome(client, STARTED_AT - 0.01, "primary", conn=2)
    assert check_drain_graceful(rb.build()).status == "pass"


def test_sessions_that_end_by_themselves_are_not_the_drains_doing(rb: RunBuilder) -> None:
    for client in ("c1", "c2"):
        rb.play(client, T0, range(1, 11))
    drain_record(rb)
    rb.conn_close("c1", SIGNAL_AT + 0.2, code=1000, initiator="client")  # the player left
    rb.conn_close("c2", SIGNAL_AT + 0.3, code=4001, initiator="remote")  # the backend ended it
    assert check_drain_graceful(rb.build()).status == "pass"


def test_connections_opened_after_the_signal_are_not_judged_as_live(rb: RunBuilder) -> None:
    rb = drained_run(rb)
    rb.conn_open("c3", STARTED_AT + 0.5)
    rb.conn_close("c3", STARTED_AT + 0.6, code=1006, initiator="remote")
    assert check_drain_graceful(rb.build()).status == "pass"


def test_no_drain_step_is_not_checked(rb: RunBuilder) -> None:
    result = check_drain_graceful(rb.healthy().build())
    assert result.status == "not_checked"
    assert "no drain step" in result.note


def test_a_build_without_drain_support_is_not_checked_never_passed(rb: RunBuilder) -> None:
    for client in ("c1", "c2"):
        rb.play(client, T0, range(1, 11))
    fault = {"kind": "drain", "target": "balancer", "params": {}}
    rb.rec(SIGNAL_AT, "nemesis", "ok", "apply", fault=fault, fault_id="f1", pid=100, drain_declared=False,
           signal="SIGTERM", exit_code=0, started_pid=101)  # fmt: skip
    for client in ("c1", "c2"):
        rb.conn_close(client, SIGNAL_AT + 0.1, code=1001, initiator="remote")
    result = check_drain_graceful(rb.build())
    assert result.status == "not_checked"
    assert "does not declare SIGHUP drain" in result.note
