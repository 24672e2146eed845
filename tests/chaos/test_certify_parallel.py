"""certify --parallel: independent clusters at once give the same certificate as one would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parents[2]


def test_lanes_run_scenarios_on_separate_clusters_and_report_in_catalog_order(tmp_path: Path) -> None:
    report = tmp_path / "r"
    chosen = ["kill_primary", "reset_peer", "boundary_max_size"]
    proc = subprocess.run(
        [
            sys.executable, "-m", "harness", "certify", *(a for n in chosen for a in ("--scenario", n)),
            "--generated", "4", "--seed", "3", "--parallel", "3", "--report", str(report),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    cert = json.loads((report / "certificate.json").read_text())
    assert cert["verdict"] == "certified"
    names = [s["name"] for s in cert["scenarios"]]
    assert names[:3] == chosen, names  # the order asked for, whichever lane finished first
    assert names[3].startswith("generated plans ("), names
    # Each lane owns a cluster of its own: its own balancer, on its own port. Which lane takes which
    # job is decided as they come free, so this looks across every run, generated ones included.
    listens = {json.loads(run.read_text())["balancer_config"]["listen"] for run in (report / "runs").glob("*/run.json")}
    assert len(listens) >= 2, listens  # lane 1 is busy with a chunk of plans while the others start
    assert (report / "cluster-2").is_dir() and (report / "cluster-3").is_dir()
