"""Plans that once made the harness reject a correct build, replayed against the build under test.

Each file in ``regressions/`` is a saved scenario (``python -m harness replay FILE`` runs one
alone). The reference balancer must pass every one of them with every invariant judged: a
failure here is a harness bug coming back, or a real defect of the build under test.

- ``plan-d060f875e5.json`` (found by ``make certify``, 2026-12-01): ``reconnect_limits`` timed
  failovers by the new upstreams' welcomes, which came 19 ms apart after a 1 s connect to a paused
  backend, while the losses that started them were a second apart (harness/checkers/failover_limits.py).
- ``plan-6dbcc95aa1.json`` (found by ``make flake-check``, 2026-12-01): a ``reset_peer`` on the
  primary's downstream, removed before its reset fired. The embedded Toxiproxy let the next
  message cross after the chunk it dropped; the balancer inflated that compressed message across
  the hole into a different, valid-looking one ("seq 3" acknowledged with state seq 30), and
  ``ordered`` and ``state_continuity`` failed (harness/toxiproxy/link.py, ``reset_peer_after``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.runner import ScenarioRunner
from harness.scenario import Scenario

pytestmark = pytest.mark.chaos

SAVED = sorted((Path(__file__).parent / "regressions").glob("*.json"))


def test_there_are_saved_regressions() -> None:
    assert SAVED, "tests/chaos/regressions/ holds no saved plan"


@pytest.mark.parametrize("saved", SAVED, ids=[p.stem for p in SAVED])
def test_a_saved_regression_plan_passes(shared_cluster: Cluster, saved: Path, tmp_path: Path) -> None:
    plan = Scenario.load(saved)
    judged = ScenarioRunner(shared_cluster).run(plan, tmp_path / plan.name)
    assert judged.passed, f"{judged.summary()}\n\nreplay: python -m harness replay {saved}"
