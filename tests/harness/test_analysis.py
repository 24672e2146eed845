"""harness.analysis: the one home of clients, attachments, fault windows, failover gaps, progress."""

from __future__ import annotations

import math
from typing import Any

import pytest

from harness.analysis import (
    Progress,
    attachments,
    client_histories,
    client_ids,
    failover_counts,
    failover_gaps_ms,
    fault_evidence,
    fault_evidence_of,
    fault_windows,
    run_end_time,
    step_evidence,
    windows_by_target,
)
from harness.history import make_run

T0 = 1_764_162_000.0


def rec(t: float, process: str, type_: str, f: str, **fields: Any) -> dict[str, Any]:
    return {"t": T0 + t, "process": process, "type": type_, "f": f, **fields}


def nemesis(t: float, type_: str, f: str, kind: str, target: str, fault_id: str) -> dict[str, Any]:
    fault = {"kind": kind, "target": target, "params": {}}
    return rec(t, "nemesis", type_, f, fault=fault, fault_id=fault_id)


# -- clients ----------------------------------------------------------------------------------------


def test_a_client_is_a_process_with_client_records() -> None:
    history = [
        rec(0.1, "c01", "event", "conn_open", conn=1),
        rec(0.2, "nemesis", "invoke", "apply"),
        rec(0.3, "monitor", "event", "status"),
        rec(0.4, "runner", "event", "welcome"),  # never a client, whatever it writes
        rec(0.5, "swarm", "event", "started"),  # no client function: not a client
        rec(0.6, "c02", "ok", "move", seq=1),
        {"process": 7, "f": "move"},
        "not a record",
    ]
    assert client_ids(history) == ["c01", "c02"]
    assert make_run(history=[r for r in history if isinstance(r, dict)]).client_ids() == ["c01", "c02"]


def test_client_histories_are_time_ordered_and_drop_untimed_records() -> None:
    history = [
        rec(0.5, "c01", "ok", "move", seq=1),
        rec(0.1, "c01", "event", "conn_open", conn=1),
        {"process": "c01", "type": "event", "f": "welcome"},  # no time
        rec(0.2, "c02", "event", "conn_open", conn=1),
    ]
    out = client_histories(history)
    assert list(out) == ["c01", "c02"]
    assert [r["f"] for r in out["c01"]] == ["conn_open", "move"]


def test_run_end_time_is_the_latest_thing_recorded() -> None:
    run = make_run(
        meta={"ended": T0 + 5, "phases": {"quiesce_end": T0 + 4}},
        history=[rec(1.0, "c01", "event", "conn_open")],
        journals={"primary": [{"t": T0 + 7, "event": "stop"}]},
    )
    assert run_end_time(run) == T0 + 7
    assert run_end_time(make_run()) is None


# -- attachment -------------------------------------------------------------------------------------


def test_attachments_follow_welcomes_closes_and_stops() -> None:
    recs = [
        rec(1.0, "c01", "event", "welcome", conn=1, server="primary"),
        rec(2.0, "c01", "ok", "move", seq=1),
        rec(3.0, "c01", "event", "welcome", conn=1, server="secondary"),  # moved in place
        rec(4.0, "c01", "event", "conn_close", conn=1, code=1006),
        rec(5.0, "c01", "event", "welcome", conn=2, server="secondary"),
    ]
    segs = attachments(recs, run_end=T0 + 9.0)
    assert [(s.server, s.start - T0, s.end - T0, s.in_place_failover) for s in segs] == [
        ("primary", 1.0, 3.0, False),
        ("secondary", 3.0, 4.0, True),
        ("secondary", 5.0, 9.0, False),
    ]
    stopped = attachments([*recs[:1], rec(2.0, "c01", "event", "stopped")], run_end=T0 + 9.0)
    assert [(s.start - T0, s.end - T0) for s in stopped] == [(1.0, 2.0)]


# -- fault windows ----------------------------------------------------------------------------------


def test_a_fault_window_runs_from_the_invoke_to_the_heal_completion() -> None:
    recs = [
        nemesis(1.0, "invoke", "apply", "kill", "primary", "f1"),
        nemesis(1.2, "ok", "apply", "kill", "primary", "f1"),
        nemesis(4.0, "invoke", "heal", "kill", "primary", "f1"),
        nemesis(4.3, "ok", "heal", "kill", "primary", "f1"),
    ]
    (w,) = fault_windows(recs, run_end=T0 + 10)
    assert (w.start - T0, w.end - T0, w.healed, w.label) == (1.0, pytest.approx(4.3), True, "kill:primary")


def test_a_failed_heal_still_ends_the_window() -> None:
    recs = [
        nemesis(1.0, "invoke", "apply", "pause", "secondary", "f1"),
        nemesis(4.0, "invoke", "heal", "pause", "secondary", "f1"),
        nemesis(4.1, "fail", "heal", "pause", "secondary", "f1"),
    ]
    (w,) = fault_windows(recs, run_end=T0 + 10)
    assert w.end == pytest.approx(T0 + 4.1)


def test_a_fault_never_healed_runs_to_the_end_of_the_run() -> None:
    recs = [
        nemesis(1.0, "invoke", "apply", "kill", "primary", "f1"),
        nemesis(1.1, "ok", "apply", "kill", "primary", "f1"),
    ]
    (w,) = fault_windows(recs, run_end=T0 + 10)
    assert (w.end, w.healed, w.label) == (T0 + 10, False, "kill:primary (no heal)")
    (unbounded,) = fault_windows(recs, run_end=None)
    assert unbounded.end == math.inf


def test_a_restart_is_a_window_from_its_invoke_to_its_ok() -> None:
    recs = [
        nemesis(1.0, "invoke", "apply", "restart", "lb", "r1"),
        nemesis(2.5, "ok", "apply", "restart", "lb", "r1"),
    ]
    (w,) = fault_windows(recs, run_end=T0 + 10)
    assert (w.start - T0, w.end - T0, w.label) == (1.0, 2.5, "restart:lb")


def test_faults_without_an_id_are_never_healed_and_windows_group_by_target() -> None:
    recs = [
        {
            "t": T0 + 1,
            "process": "nemesis",
            "type": "invoke",
            "f": "apply",
            "fault": {"kind": "kill", "target": "primary"},
        },
        {"t": T0 + 2, "process": "nemesis", "type": "ok", "f": "heal", "fault": {"kind": "kill", "target": "primary"}},
        nemesis(3.0, "invoke", "apply", "latency", "secondary", "f2"),
        nemesis(3.5, "ok", "heal", "latency", "secondary", "f2"),
    ]
    by_target = windows_by_target(fault_windows(recs, run_end=T0 + 10))
    assert by_target == {"primary": [(T0 + 1, T0 + 10)], "secondary": [(T0 + 3, T0 + 3.5)]}


# -- failover gaps ----------------------------------------------------------------------------------


def test_failover_gap_is_last_ack_before_to_first_ack_after_a_server_change() -> None:
    recs = [
        rec(0.0, "c01", "event", "welcome", conn=1, server="primary"),
        rec(1.0, "c01", "ok", "move", seq=1),
        rec(2.0, "c01", "event", "welcome", conn=1, server="secondary"),
        rec(2.2, "c01", "event", "welcome", conn=1, server="primary"),  # flapping: one stall
        rec(2.5, "c01", "ok", "move", seq=2),
        rec(3.0, "c01", "event", "welcome", conn=2, server="primary"),  # same server: no gap
        rec(3.5, "c01", "ok", "move", seq=3),
    ]
    assert failover_gaps_ms(recs) == pytest.approx([1500.0])


# -- progress -----------------------------------------------------------------------------------------


def test_progress_needs_every_live_client_to_play_after_the_moment() -> None:
    p = Progress()
    assert not p.all_played_since(T0)  # nobody yet: not "everyone"
    for r in (
        rec(0.1, "c01", "event", "conn_open"),
        rec(0.2, "c02", "event", "conn_open"),
        rec(0.3, "nemesis", "ok", "move"),  # not a client
        rec(2.0, "c01", "ok", "move", seq=1),
    ):
        p.observe(r)
    assert not p.all_played_since(T0 + 1)
    p.observe(rec(2.5, "c02", "event", "stopped"))
    assert p.all_played_since(T0 + 1)
    assert not p.all_played_since(T0 + 2)


def test_progress_sees_every_live_client_served_by_another_server_since_a_moment() -> None:
    # What ends a fault phase with faults_end_on_failover: every client moved off the faulted one.
    p = Progress()
    assert not p.all_served_elsewhere_since("primary", T0)  # nobody yet: not "everyone"
    for r in (
        rec(1.0, "c01", "ok", "move", seq=1, server="primary"),
        rec(1.0, "c02", "ok", "move", seq=1, server="primary"),
        rec(2.0, "c01", "ok", "move", seq=2, server="secondary"),
        rec(2.2, "c02", "ok", "move", seq=2, server="primary"),  # an ack from the faulted server
    ):
        p.observe(r)
    assert not p.all_served_elsewhere_since("primary", T0 + 1.5)
    p.observe(rec(2.5, "c02", "ok", "move", seq=3, server="secondary"))
    assert p.all_served_elsewhere_since("primary", T0 + 1.5)
    assert not p.all_served_elsewhere_since("primary", T0 + 2.2)  # c01's came before that moment
    assert not p.all_served_elsewhere_since("secondary", T0 + 1.5)  # c01: no primary ack since
    p.observe(rec(3.0, "c01", "event", "stopped"))  # a client that left is not waited for
    assert p.all_served_elsewhere_since("primary", T0 + 2.2)


def test_client_connections_end_at_their_close_at_the_stop_or_never() -> None:
    from harness.analysis import client_connections

    conns = client_connections(
        [
            rec(1.0, "c01", "event", "conn_open", conn=1),
            rec(2.0, "c01", "event", "conn_close", conn=1, code=1006),
            rec(2.5, "c01", "event", "conn_open", conn=2),
            rec(4.0, "c01", "event", "stopped"),
            rec(1.0, "c02", "event", "conn_open", conn=1),
        ]
    )
    by = {(c.client, c.opened): c for c in conns}
    assert (by["c01", T0 + 1.0].closed, by["c01", T0 + 1.0].close["code"]) == (T0 + 2.0, 1006)
    assert (by["c01", T0 + 2.5].closed, by["c01", T0 + 2.5].close) == (T0 + 4.0, None)
    assert by["c02", T0 + 1.0].closed == float("inf")
    assert [c.client for c in conns if c.live_at(T0 + 3.0)] == ["c01", "c02"]


def test_progress_counts_the_clients_that_played_since_a_moment() -> None:
    # The warm-up ends when this reaches the workload's client count.
    p = Progress()
    assert p.played_since(T0) == 0
    for r in (
        rec(1.0, "c01", "ok", "move", seq=1),
        rec(1.5, "c02", "ok", "move", seq=1),
        rec(0.5, "c03", "ok", "move"),
    ):
        p.observe(r)
    assert p.played_since(T0 + 0.9) == 2
    assert p.played_since(T0) == 3


# -- fault evidence -------------------------------------------------------------------------------


def step(t: float, type_: str, f: str, kind: str, fault_id: str, **fields: Any) -> dict[str, Any]:
    return {**nemesis(t, type_, f, kind, "primary", fault_id), **fields}


COUNTS = {"connections": 2, "bytes_delayed": 300, "bytes_dropped": 0, "bytes_cut": 0, "cuts": 0}
NONE_TOUCHED = {"connections": 0, "bytes_delayed": 0, "bytes_dropped": 0, "bytes_cut": 0, "cuts": 0}


def test_fault_evidence_reads_each_step_from_its_records() -> None:
    history = [
        step(1.0, "invoke", "apply", "kill", "f1", pid=41),
        step(1.1, "ok", "apply", "kill", "f1", pid=41, exit_code=-9),
        step(1.2, "invoke", "apply", "latency", "f2"),
        step(1.3, "ok", "apply", "latency", "f2"),
        step(1.4, "invoke", "apply", "partition", "f3"),
        step(1.5, "ok", "apply", "partition", "f3"),
        step(1.6, "invoke", "apply", "latency", "f4"),
        step(1.7, "fail", "apply", "latency", "f4", error="ExtensionMissing: no aim"),
        step(1.8, "invoke", "apply", "kill", "f5", pid=None),
        step(1.9, "ok", "apply", "kill", "f5", pid=None, exit_code=-9),
        step(2.0, "invoke", "apply", "down", "f6"),
        step(2.1, "ok", "apply", "down", "f6"),
        step(2.2, "invoke", "apply", "slicer", "f7"),
        step(2.3, "ok", "apply", "slicer", "f7"),
        step(2.4, "invoke", "apply", "pause", "f8", pid=7),
        step(2.5, "ok", "apply", "pause", "f8", pid=7),
        step(3.0, "ok", "heal", "latency", "f2", evidence={"a": COUNTS, "b": NONE_TOUCHED}, evidence_reason=None),
        step(3.1, "ok", "heal", "partition", "f3", evidence={"a": NONE_TOUCHED}, evidence_reason=None),
        step(3.2, "ok", "heal", "down", "f6"),
        step(3.3, "ok", "heal", "slicer", "f7", evidence=None, evidence_reason="missing: server has no counters"),
    ]
    found = {e.fault_id: e for e in fault_evidence_of(history)}
    assert list(found) == [f"f{i}" for i in range(1, 9)]
    assert (found["f1"].touched, found["f1"].reason) == (True, "pid 41 exited with status -9")
    assert (found["f2"].touched, found["f2"].reason) == (True, "touched 2 connection(s): bytes_delayed 300")
    assert found["f2"].counts == {"a": COUNTS, "b": NONE_TOUCHED}
    assert (found["f3"].touched, found["f3"].reason) == (False, "its toxics (a) touched no connection")
    assert (found["f4"].touched, found["f4"].reason) == (False, "not applied: ExtensionMissing: no aim")
    assert (found["f5"].touched, found["f5"].reason) == (False, "no process was running to signal")
    assert (found["f6"].touched, found["f6"].reason) == (None, "missing: down records no evidence")
    assert (found["f7"].touched, found["f7"].reason) == (None, "missing: server has no counters")
    assert (found["f8"].touched, found["f8"].reason) == (True, "pid 7 signalled")
    assert found["f1"].kind == "kill" and found["f1"].fault["target"] == "primary"


def test_fault_evidence_without_a_completed_heal_is_missing() -> None:
    history = [
        step(1.0, "invoke", "apply", "latency", "f1"),
        step(1.1, "ok", "apply", "latency", "f1"),
        step(1.2, "invoke", "apply", "latency", "f2"),
        step(1.3, "ok", "apply", "latency", "f2"),
        step(2.0, "invoke", "heal", "latency", "f2"),
        step(2.1, "fail", "heal", "latency", "f2", error="boom"),
        step(2.2, "invoke", "apply", "kill", "f3", pid=5),
        step(2.3, "ok", "apply", "kill", "f3", pid=5, exit_code=None),
        step(2.4, "invoke", "apply", "latency", "f4"),
    ]
    found = {e.fault_id: e for e in fault_evidence_of(history)}
    assert (found["f1"].touched, found["f1"].reason) == (None, "missing: never healed, so no counts were taken")
    assert found["f2"].touched is None and "the heal did not complete" in found["f2"].reason
    assert (found["f3"].touched, found["f3"].reason) == (None, "pid 5 signalled, but its exit status was not seen")
    assert (found["f4"].touched, found["f4"].reason) == (None, "missing: the apply never completed")


def test_fault_evidence_of_a_run_reads_its_nemesis_records() -> None:
    run = make_run(
        history=[
            step(1.0, "invoke", "apply", "kill", "f1", pid=3),
            step(1.1, "ok", "apply", "kill", "f1", pid=3, exit_code=0),
            rec(1.2, "c01", "event", "conn_open", conn=1),
        ]
    )
    [evidence] = fault_evidence(run)
    assert (evidence.touched, evidence.reason) == (True, "pid 3 exited with status 0")


def test_step_evidence_prefers_the_proxys_counts_and_falls_back_to_recorded_traffic() -> None:
    # f1: a partition on the primary's link while a game connection was open there, but the proxy
    # counted no touched connection: its own counts decide (touched nothing). f2: the same on a
    # server without counters: the journal shows traffic crossed, so it landed, and the note says
    # why the proxy's evidence is missing.
    journal = [{"t": T0 + 0.5, "server": "primary", "event": "open", "conn": "p-1", "client": "c01"}]
    history = [
        step(1.0, "invoke", "apply", "partition", "f1"),
        step(1.1, "ok", "apply", "partition", "f1"),
        step(2.0, "invoke", "heal", "partition", "f1"),
        step(2.1, "ok", "heal", "partition", "f1", evidence={"a": NONE_TOUCHED}, evidence_reason=None),
        step(3.0, "invoke", "apply", "partition", "f2"),
        step(3.1, "ok", "apply", "partition", "f2"),
        step(4.0, "invoke", "heal", "partition", "f2"),
        step(4.1, "ok", "heal", "partition", "f2", evidence=None, evidence_reason="missing: server has no counters"),
    ]
    found = {e.fault_id: e for e in step_evidence(make_run(history=history, journals={"primary": journal}))}
    assert (found["f1"].touched, found["f1"].why) == (False, "its toxics (a) touched no connection")
    assert found["f2"].touched is True
    assert "game traffic crossed primary" in found["f2"].why and "missing: server has no counters" in found["f2"].why


# -- failover triggers ------------------------------------------------------------------------------


def welcome(t: float, client: str, server: str, conn: int) -> dict[str, Any]:
    return rec(t, client, "event", "welcome", server=server, conn=conn)


def test_progress_counts_failovers_as_server_changes_in_place_or_across_reconnects() -> None:
    history = [
        welcome(0.1, "c01", "primary", 1),
        welcome(0.2, "c02", "primary", 2),
        welcome(1.0, "c01", "secondary", 1),  # moved in place
        welcome(1.5, "c02", "primary", 3),  # reconnected to the same server: no failover
        welcome(2.0, "c01", "primary", 4),  # reconnected elsewhere
        rec(2.1, "nemesis", "event", "welcome", server="x"),  # not a client
    ]
    p = Progress()
    for r in history:
        p.observe(r)
    assert p.failovers == {"c01": 2}
    assert failover_counts(history) == {"c01": 2}
    assert p.failed_over(2) and not p.failed_over(3)
    assert not p.failed_over(1, ["c01", "c02"])  # each named client must have failed over
    assert p.failed_over(1, ["c01"])
    assert not Progress().failed_over(1)  # nobody yet: not fired


def test_a_trigger_that_never_fired_is_a_step_that_did_not_land() -> None:
    history = [
        step(1.0, "invoke", "trigger", "kill", "f1"),
        step(6.0, "fail", "trigger", "kill", "f1", error="never fired within 5 s: kill(primary) once ..."),
        step(6.1, "invoke", "trigger", "kill", "f2"),
        step(6.3, "ok", "trigger", "kill", "f2", failovers={"c01": 1}),
        step(6.3, "invoke", "apply", "kill", "f2", pid=9),
        step(6.4, "ok", "apply", "kill", "f2", pid=9, exit_code=-9),
        step(7.0, "invoke", "trigger", "kill", "f3"),  # the run ended while it waited
    ]
    found = {e.fault_id: e for e in fault_evidence_of(history)}
    assert list(found) == ["f1", "f2", "f3"]
    assert found["f1"].touched is False and found["f1"].never_fired
    assert found["f1"].reason == "not applied: its trigger never fired within 5 s: kill(primary) once ..."
    assert (found["f2"].touched, found["f2"].reason) == (True, "pid 9 exited with status -9")
    assert found["f3"].touched is None and "waited for its trigger" in found["f3"].reason
    [never] = [s for s in step_evidence(make_run(history=history)) if s.fault_id == "f1"]
    assert (never.touched, never.targets) == (False, ("primary",))
