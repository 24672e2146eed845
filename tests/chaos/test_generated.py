"""Hypothesis-generated fault plans against the balancer under test, judged by every checker.

One cluster serves every example (module scope); the runner's checked reset heals it between
examples, and cleanup_complete fails the example that leaked. A failure prints the shrunk plan
as JSON, saves it in its run directory and names the one-line replay command.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, reject

from harness.cluster import Cluster
from harness.records import INCONCLUSIVE
from harness.runner import ScenarioRunner
from harness.scenario import Scenario
from harness.strategies import fault_plans, note_plan_events

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated-runs")


_examples = iter(range(1, 1_000_000))


@given(plan=fault_plans())
def test_generated_fault_plans_hold_every_invariant(shared_cluster: Cluster, runs_dir: Path, plan: Scenario) -> None:
    note_plan_events(plan)
    judged = ScenarioRunner(shared_cluster).run(plan, runs_dir / f"example-{next(_examples):04d}")
    if judged.outcome == INCONCLUSIVE:
        # A plan that could not judge the build (a fault on an idle link, say) tests nothing:
        # as in certify, it does not count (docs/verdicts.md).
        reject()
    if not judged.passed:
        raise AssertionError(f"{judged.summary()}\n\nscenario (saved as {judged.run_dir / 'scenario.json'}):\n"
                             f"{plan.to_json()}")  # fmt: skip
