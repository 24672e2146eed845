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
    failover_gaps_ms,
    fault_windows,
    run_end_time,
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
