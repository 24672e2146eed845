"""A disk that fills up while the history is being written: the run is inconclusive, and says why.

The runs directory of the report is a 32 KiB tmpfs: the cluster, the smoke gate and the report
itself have room, the scenario's history does not (4 clients at 10 moves/s write ~16 KB/s). The
scenario must come out inconclusive with "disk full" as its reason, never with a verdict judged
from a history with holes in it, and certify must exit 3 (inconclusive), not 1 (rejected).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from harness.catalog import named_scenarios
from harness.cluster import Cluster, ClusterSpec
from harness.records import INCONCLUSIVE
from harness.runner import ScenarioRunner
from tests.chaos import cli_support

pytestmark = pytest.mark.chaos

# The cluster's start and the smoke gate fit; kill_primary's journals and event lines do not.
CLUSTER_DISK = "64k"


def _certify_with_a_full_disk(
    tmp_path: Path, under: str, size: str, label: str
) -> tuple[cli_support.CertifyResult, dict[str, Any], dict[str, int]]:
    """certify kill_primary with a tmpfs of ``size`` at ``report/under``: it must end inconclusive
    (exit 3), with no traceback and no survivor. Returns the result, the scenario's certificate
    entry, and what was left on that disk (path: bytes)."""
    report = tmp_path / "report"
    token = cli_support.new_token(label)
    with cli_support.tmpfs(report / under, f"size={size}") as disk:
        result = cli_support.certify(
            "--scenario", "kill_primary", "--report", str(report), token=token, timeout=300
        )  # fmt: skip
        left_on_disk = {str(p.relative_to(disk)): p.stat().st_size for p in disk.rglob("*") if p.is_file()}
    cli_support.assert_no_survivors(token, f"a run whose {under} disk is full")
    output = result.output
    print(output[-2000:], left_on_disk, sep="\n")
    assert result.returncode == 3, output[-3000:]
    assert "Traceback" not in output
    cert = json.loads((report / "certificate.json").read_text())
    assert cert["verdict"] == "inconclusive"
    (entry,) = cert["scenarios"]
    assert entry["outcome"] == "inconclusive", entry
    return result, entry, left_on_disk


def test_a_full_disk_while_the_history_is_written_is_inconclusive(tmp_path: Path) -> None:
    result, entry, left_on_disk = _certify_with_a_full_disk(tmp_path, "runs", "32k", "disk-full")
    # Both runs (the first and the one more certify gives an inconclusive scenario) say why.
    assert "disk full" in entry["reasons"][0], entry["reasons"]
    assert any(r.startswith("first run:") and "disk full" in r for r in entry["reasons"]), entry["reasons"]
    assert entry["results"] == {}  # not judged: no invariant passes or fails on a partial history
    assert "disk full" in result.output
    assert not [p for p in left_on_disk if p.endswith(".tmp")]  # no half-written file left behind


def test_a_full_disk_under_the_clusters_journals_is_inconclusive(tmp_path: Path) -> None:
    """The cluster's own record (the backends' journals, the build's event lines, every log) fills
    its disk: no backend or harness process crashes, and the run is set aside naming the disk."""
    _, entry, _ = _certify_with_a_full_disk(tmp_path, "cluster", CLUSTER_DISK, "disk-full-cluster")
    reasons = " ".join(entry["reasons"])
    # Evidence the fault landed where it was aimed: a backend that stayed up says its journal lost
    # lines (it did not crash on the write), and the cluster's file system is named as full.
    assert "journal: disk full" in reasons, entry["reasons"]
    assert "cluster's journals and logs" in reasons, entry["reasons"]
    assert entry["results"] == {}  # not judged
    # Nothing of the cluster died of the full disk: a dead harness process or build would be named.
    assert "exited" not in reasons and "died" not in reasons, entry["reasons"]


def test_a_full_disk_when_the_builds_config_is_rewritten_is_inconclusive(tmp_path: Path) -> None:
    """A scenario with limits of its own restarts the build with a new config file. With no room
    for it, the run is set aside naming the config, and the build keeps its old, whole config."""
    with cli_support.tmpfs(tmp_path / "disk", "size=1m") as disk:
        cluster = Cluster(disk / "cluster", ClusterSpec())
        cluster.start()
        try:
            before = cluster.config_path.read_bytes()
            filler = disk / "filler"
            with open(filler, "wb", buffering=0) as fh:
                for chunk in (b"\0" * 4096, b"\0"):  # to the last byte: the config is small
                    with contextlib.suppress(OSError):
                        while True:
                            fh.write(chunk)
            scenario = named_scenarios()["boundary_min_interval"]
            assert scenario.limits != cluster.spec.limits  # so the config must be rewritten
            judged = ScenarioRunner(cluster).run(scenario, tmp_path / "run")
            assert judged.outcome == INCONCLUSIVE, judged.summary()
            assert "the build's config: disk full" in " ".join(judged.reasons), judged.reasons
            assert cluster.config_path.read_bytes() == before
            assert cluster.balancer.running
        finally:
            cluster.close()
