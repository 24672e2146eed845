"""A failing generated example replays with the printed command and fails the same way."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from harness.catalog import named_scenarios
from harness.cluster import Cluster
from harness.runner import ScenarioRunner
from harness.scenario import Scenario
from harness.strategies import fault_plans

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parents[2]


def test_failing_generated_example_replays_and_fails_the_same_way(broken_cluster: Cluster, tmp_path: Path) -> None:
    runner = ScenarioRunner(broken_cluster)
    messages: list[str] = []
    attempts = itertools.count(1)

    # Kill-only plans always force a failover, which is where the second reader races.
    @settings(max_examples=1, phases=[Phase.generate], deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(fault_plans(kinds=["kill"]))
    def generated(plan: Scenario) -> None:
        # Hypothesis runs a failing example again at the end: each attempt gets its own directory.
        judged = runner.run(plan, tmp_path / "runs" / f"{plan.name}-{next(attempts)}")
        if not judged.passed:
            messages.append(judged.summary())
            raise AssertionError(judged.summary())

    with pytest.raises(AssertionError):
        generated()
    printed = messages[-1]
    assert "no_concurrent_recv" in printed
    # The printed command names the running interpreter, so it works when pasted.
    replay = re.search(r"replay: (\S+ -m harness replay .+)$", printed, re.M)
    assert replay, printed
    argv = shlex.split(replay.group(1))
    proc = subprocess.run(
        [sys.executable, *argv[1:], "--runs-dir", str(tmp_path / "replays")],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"^\s+fail\s+no_concurrent_recv", proc.stdout, re.M), proc.stdout[-3000:]


def test_pytest_chaos_replay_runs_a_saved_scenario(tmp_path: Path) -> None:
    saved = named_scenarios()["kill_primary"].save(tmp_path / "kill_primary.json")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--chaos-replay", str(saved),
         "--chaos-runs-dir", str(tmp_path / "runs"), "-p", "no:xdist"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout, proc.stdout[-2000:]


def test_replay_of_a_bad_scenario_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "steps": [{"at_s": 0, "fault": {"kind": "kil", "target": "primary"}}]}')
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "replay", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "steps[0].fault.kind: unknown fault kind 'kil'" in proc.stderr
    assert "Traceback" not in proc.stderr
