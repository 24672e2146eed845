from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from checker_runs import RunBuilder, write_run_dir

from harness.checkers import ALL, NAMES, CheckResult, judge
from harness.checkers.base import guarded
from harness.history import Run, load_run, make_run

INVARIANTS = [
    "no_concurrent_recv",
    "reconnect_limits",
    "cleanup_complete",
    "single_upstream",
    "no_crosstalk",
    "ordered",
    "clean_failover",
    "others_unaffected",
    "state_continuity",
    "recovers_after_heal",
    "refusals_justified",
    "path_forwarded",
    "failover_delivery",
    "connection_limit",
    "size_limit",
    "close_passthrough",
    "recovery_goals",
    "drain_graceful",
    "upgrade_failover",
    "herd_recovered",
]


def test_all_lists_every_invariant_in_a_fixed_order() -> None:
    assert [name for name, _ in ALL] == INVARIANTS == NAMES
    assert [r.invariant for r in judge(make_run())] == INVARIANTS


def test_judge_runs_only_the_named_checkers_in_order() -> None:
    results = judge(make_run(), only=["ordered", "no_concurrent_recv"])
    assert [r.invariant for r in results] == ["no_concurrent_recv", "ordered"]
    with pytest.raises(ValueError, match="unknown invariant"):
        judge(make_run(), only=["no_such_thing"])


def test_an_empty_run_is_never_a_pass() -> None:
    assert {r.status for r in judge(make_run())} == {"not_checked"}


def test_judge_reads_a_run_directory_with_torn_lines(tmp_path: Path, rb: RunBuilder) -> None:
    write_run_dir(tmp_path, rb.healthy())
    run = load_run(tmp_path)
    assert any("not JSON" in p for p in run.problems)
    results = judge(run)
    # The healthy fixture has no limit probe, no recorded request paths, no failover and no client
    # protocol error, no drain, no upgrade fault and no herd: nothing for these to judge, and
    # "not checked" is never "pass".
    nothing_to_judge = ["path_forwarded", "failover_delivery", "connection_limit", "size_limit", "close_passthrough",
                        "others_unaffected", "recovery_goals", "drain_graceful", "upgrade_failover",
                        "herd_recovered"]  # fmt: skip
    expected = dict.fromkeys(INVARIANTS, "pass") | dict.fromkeys(nothing_to_judge, "not_checked")
    assert {r.invariant: r.status for r in results} == expected


def test_judge_finds_a_violation_through_the_files(tmp_path: Path, rb: RunBuilder) -> None:
    rb.healthy().stderr = "Task exception was never retrieved\n"
    write_run_dir(tmp_path, rb)
    verdict = {r.invariant: r for r in judge(load_run(tmp_path))}
    assert verdict["no_concurrent_recv"].status == "fail"
    assert json.dumps([r.to_dict() for r in verdict.values()])  # verdict.json must serialise


def test_malformed_records_are_reported_never_raised() -> None:
    junk: list[Any] = [
        {"t": "yesterday", "process": "c1", "type": "ok", "f": "move", "seq": "x"},
        {"t": 1.0, "process": "c1", "type": "ok", "f": "move", "seq": None, "state": [1, 2]},
        {"t": 2.0, "process": "c1", "type": "event", "f": "welcome", "conn": {"a": 1}, "state": "?"},
        {"t": 3.0, "process": "c1", "type": "event", "f": "conn_close", "code": "abc"},
        {"t": 4.0, "process": "nemesis", "type": "invoke", "f": "apply", "fault": "kill"},
        {"t": 5.0, "process": "monitor", "type": "event", "f": "status", "status": [1]},
        {"process": "c2", "type": "invoke", "f": "move", "seq": 1},
    ]
    run = make_run(
        meta={
            "failover": ["not", "a", "dict"],
            "phases": {"heal_end": "soon"},
            "expect": {"close_codes": "1013", "failover_deadline_s": -4},
            "final": {"status": {"tables": [], "backends": "none", "sessions": True}, "balancer_sockets": "many"},
        },
        history=junk,
        journals={"primary": [{"t": 1.0, "event": "open"}, {"event": "close", "conn": None}, {"t": 2.0}]},
        balancer_stdout='{"event": "failover_attempt", "ts": "x", "allowed": true}\n{torn',
    )
    results = judge(run)
    assert [r.invariant for r in results] == INVARIANTS
    assert all(not r.note.startswith("checker error") for r in results), [r.note for r in results]


def test_a_crashing_checker_reports_instead_of_raising() -> None:
    @guarded("boom")
    def check_boom(run: Run) -> CheckResult:
        raise KeyError("surprise")

    result = check_boom(make_run())
    assert result.status == "not_checked"
    assert "checker error: KeyError" in result.note
