"""Steps triggered by failovers, through the runner on real processes: the nemesis waits for the
clients' progress to show the failovers, records when the trigger fired (or that it never did), and
a trigger that never fires leaves the run inconclusive instead of judging a fault that never landed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.analysis import fault_evidence_of
from harness.cluster import Cluster
from harness.expectations import expect_for
from harness.faults import Fault, fault
from harness.history import load_run, read_jsonl
from harness.records import INCONCLUSIVE, PASSED
from harness.runner import ScenarioRunner
from harness.scenario import Phases, Scenario, Step, Workload

pytestmark = pytest.mark.chaos


def kill_once_failed_over(target: str, within_s: float) -> Fault:
    trigger = {"after": "failovers", "failovers": 1, "within_s": within_s}
    return Fault.from_dict({"kind": "kill", "target": target, "trigger": trigger})


def nemesis_records(run_dir: Path) -> list[dict[str, Any]]:
    records, problems = read_jsonl(run_dir / "history" / "nemesis.jsonl")
    assert not problems, problems
    return records


def scenario(name: str, *steps: Step) -> Scenario:
    s = Scenario(
        name=name,
        workload=Workload(clients=3, rate_hz=10.0),
        steps=steps,
        phases=Phases(warmup_s=1.0, faults_s=3.0, deadline_s=8.0, quiesce_s=3.0),
    )
    return s.with_(expect=expect_for(s))  # what a correct build shows, as derived from the schedule


def test_a_step_waits_for_the_failover_and_then_lands(cluster: Cluster, tmp_path: Path) -> None:
    s = scenario(
        "kill_after_failover_run",
        Step(at_s=0.5, fault=fault("kill", "primary"), duration_s=2.0),
        Step(at_s=0.5, fault=kill_once_failed_over("secondary", within_s=5.0)),
    )
    judged = ScenarioRunner(cluster).run(s, tmp_path / "run")
    records = nemesis_records(tmp_path / "run")
    by = {(r["fault_id"], r["f"], r["type"]): r for r in records}
    fired = by[("f2", "trigger", "ok")]
    # It fired on what the clients recorded, after the primary's kill and before its own apply.
    assert any(n >= 1 for n in fired["failovers"].values()), fired
    assert by[("f1", "apply", "ok")]["t"] <= by[("f2", "trigger", "invoke")]["t"] <= fired["t"]
    assert fired["t"] <= by[("f2", "apply", "invoke")]["t"]
    assert 0 <= fired["waited_s"] < 5.0
    # The failover it fired on came after the primary's kill. Not "waited_s > 0": the kill's apply
    # waits for the process to exit (7.6 ms in one CI run), and a fast build has failed over by
    # then, so the trigger may fire on its first look.
    first_failover = min(
        rec["t"]
        for client, recs in load_run(tmp_path / "run").client_histories().items()
        if client in fired["failovers"]
        for rec in recs
        if rec.get("f") == "welcome" and rec.get("server") == "secondary"
    )
    assert by[("f1", "apply", "invoke")]["t"] <= first_failover <= fired["t"]
    evidence = {e.fault_id: e for e in fault_evidence_of(records)}
    assert evidence["f2"].touched is True, evidence["f2"]
    assert judged.outcome == PASSED, judged.summary()


def test_a_trigger_that_never_fires_leaves_the_run_inconclusive(cluster: Cluster, tmp_path: Path) -> None:
    # Nothing makes anyone fail over, so the kill waits out its bound and is never applied.
    s = scenario("never_fires", Step(at_s=0.5, fault=kill_once_failed_over("secondary", within_s=1.5)))
    judged = ScenarioRunner(cluster).run(s, tmp_path / "run")
    records = nemesis_records(tmp_path / "run")
    assert [(r["f"], r["type"]) for r in records] == [("trigger", "invoke"), ("trigger", "fail")]
    assert cluster.process("secondary").running
    assert judged.outcome == INCONCLUSIVE, judged.summary()
    assert any("(kill on secondary) touched nothing: not applied: its trigger never fired within 1.5 s" in r
               for r in judged.reasons), judged.reasons  # fmt: skip
    assert not judged.failures, judged.summary()
