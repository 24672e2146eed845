"""Running a scenario again into a directory of the same name (``make certify`` twice into
``reports/reference``): nothing left there by the first run may stand in for the second's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.history import Run, load_run
from harness.runner import ScenarioRunner
from scenarios.boundary_max_size import SCENARIO as BOUNDARY_MAX_SIZE

pytestmark = pytest.mark.chaos


def warmup_welcomes(run: Run) -> list[float]:
    """The welcomes of the warm-up swarm's clients (the probe swarm comes later, by design)."""
    swarm = {
        client
        for rec in run.history
        if rec.get("f") == "swarm_start" and str(rec.get("process", "")).startswith("swarm-c-")
        for client in rec["clients"]
    }
    histories = run.client_histories()
    return [rec["t"] for client in swarm for rec in histories.get(client, []) if rec.get("f") == "welcome"]


def test_a_second_run_waits_for_its_own_swarm_not_the_ready_line_of_the_first(
    shared_cluster: Cluster, tmp_path: Path
) -> None:
    # Found by a second `make certify` into the same report directory: the swarm's stdout in the
    # cluster's logs is appended to, and the first run's READY ended the second's wait for its
    # swarm at once; its warm-up (0.3 s) then ran out before the swarm had started, and the run
    # was inconclusive. A zero warm-up makes that certain: it lasts exactly as long as the wait.
    scenario = BOUNDARY_MAX_SIZE.with_(phases=replace(BOUNDARY_MAX_SIZE.phases, warmup_s=0.0))
    runner = ScenarioRunner(shared_cluster)
    for attempt in ("first", "second"):
        run_dir = tmp_path / attempt / scenario.name  # the same name: the same swarm log
        judged = runner.run(scenario, run_dir)
        run = load_run(run_dir)
        warmup_end = run.run_meta.phases["warmup_end"]
        times = warmup_welcomes(run)
        assert len(times) == scenario.workload.clients, attempt
        assert max(times) < warmup_end, f"{attempt} run: the warm-up ended before every client was welcomed"
        # Not `passed`: with no warm-up past READY, whether some move was acknowledged by then is up
        # to the machine's load (under -n 4 none was once, and the run was rightly inconclusive).
        # Either way nothing is blamed on the build.
        assert not judged.failures, judged.summary()
