"""harness.records: run.json, verdict.json and certificate.json round-trip; readers stay tolerant;
one rendering of violations with one limit policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.history import load_run
from harness.records import (
    SHOWN,
    Certificate,
    CheckResult,
    RecordError,
    RunMeta,
    Verdict,
    Violation,
    phase_durations,
    read_json_object,
    render_violations,
)


def test_run_meta_round_trips_through_load_run(tmp_path: Path) -> None:
    meta = RunMeta(
        run_id="r1",
        started=10.0,
        ended=20.0,
        phases={"heal_end": 15.0, "odd": "x"},
        expect={"failover_deadline_s": 4.0, "recovery_deadline_s": -1},
        capabilities={"status": True, "events": False},
    )
    meta.write(tmp_path)
    run = load_run(tmp_path)
    assert run.run_meta == meta
    assert run.run_meta.phase("heal_end") == 15.0
    assert run.run_meta.phase("odd") is None and run.run_meta.phase("missing") is None
    assert run.run_meta.phase_times() == {"heal_end": 15.0}
    assert run.run_meta.expect_number("failover_deadline_s", 10.0) == 4.0
    assert run.run_meta.expect_number("recovery_deadline_s", 10.0) == 10.0  # negative: the default


def test_phase_durations_say_how_long_each_part_of_a_run_took() -> None:
    phases = {
        "started": 101.0, "warmup_end": 102.5, "faults_end": 106.0, "heal_end": 106.25,
        "deadline_end": 107.0, "clients_stopped": 107.5, "quiesce_end": 108.0,
    }  # fmt: skip
    assert phase_durations(100.0, phases) == {
        "reset": 1.0, "warmup": 1.5, "faults": 3.5, "heal": 0.25, "deadline": 0.75, "stop_clients": 0.5, "quiesce": 0.5,
    }  # fmt: skip


def test_phase_durations_leave_out_parts_a_run_never_reached() -> None:
    # A run cut short after its fault phase, and one from before the reset was timed: nothing guessed.
    assert phase_durations(100.0, {"started": 101.0, "warmup_end": 102.0, "faults_end": 105.0}) == {
        "reset": 1.0, "warmup": 1.0, "faults": 3.0,
    }  # fmt: skip
    assert phase_durations(None, {"started": 1.0, "warmup_end": "x", "faults_end": 5.0}) == {}
    assert RunMeta.from_json({"durations": {"warmup": 1.5}}).durations == {"warmup": 1.5}


def test_a_malformed_run_json_reads_as_absent_fields() -> None:
    meta = RunMeta.from_json({"started": True, "phases": [1, 2], "expect": "x", "notes": "n", "ended": float("nan")})
    assert meta == RunMeta()
    assert RunMeta.from_json([1, 2]) == RunMeta()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "missing"),
        (b"{torn", "not a readable JSON file"),
        (b"[1]", "expected a JSON object, got list"),
        (b"\xff\xfe{}", "not a readable JSON file"),
    ],
)
def test_read_json_object_names_the_problem(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "run.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RecordError, match=problem):
        read_json_object(path)


def test_verdict_round_trips(tmp_path: Path) -> None:
    results = [
        CheckResult("ordered", "pass"),
        CheckResult("no_crosstalk", "fail", [Violation("no_crosstalk", "c1 got c2's ack", [{"seq": 3}])], "n"),
    ]
    Verdict("kill_primary", results).write(tmp_path)
    raw = json.loads((tmp_path / "verdict.json").read_text())
    assert raw["passed"] is False and raw["scenario"] == "kill_primary"
    loaded = Verdict.load(tmp_path)
    assert loaded.results == results and not loaded.passed


def test_certificate_round_trips_and_keeps_what_it_does_not_know() -> None:
    raw = {
        "verdict": "rejected",
        "error": None,
        "build": {"command": "b {config}", "capabilities": {"status": False}},
        "profile": "quick",
        "started": "2026-11-26T14:00:00Z",
        "duration_s": 3.5,
        "harness": {},
        "machine": {},
        "invariants": ["ordered"],
        "scenarios": [
            {
                "name": "s",
                "description": "",
                "kind": "named",
                "run_dir": "/r",
                "duration_s": 1.0,
                "passed": False,
                "results": {
                    "ordered": {
                        "status": "fail",
                        "note": "",
                        "violations": [{"message": "m", "evidence": ["x" * 5000]}],
                    },
                    "extra": {"status": "weird", "note": "", "violations": []},
                },
                "notes": [],
                "replay": "python -m harness replay /r/scenario.json",
            }
        ],
        "future_field": 1,
    }
    cert = Certificate.from_json(raw)
    assert cert.to_json() == raw
    (scenario,) = cert.scenarios
    assert scenario.failing and scenario.status("extra") is None
    assert cert.all_invariants() == ["ordered", "extra"]
    assert cert.capabilities == {"status": False}


def test_violations_render_with_one_limit_policy() -> None:
    many = [Violation("x", f"v{i}", [{"i": j} for j in range(SHOWN.evidence + 2)]) for i in range(SHOWN.violations + 3)]
    lines = render_violations(many, indent="  ")
    assert lines[0] == "  - v0"
    assert sum(1 for line in lines if line.startswith("  - ")) == SHOWN.violations
    assert lines[-1] == "  … 3 more violation(s)"
    assert "      … 2 more evidence record(s)" in lines
    long = render_violations([Violation("x", "m", ["y" * 5000])])
    assert len(long[1].strip()) == SHOWN.chars
