"""Fixtures shared by the chaos suites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster, ClusterSpec
from tests.selftest.mutants import MUTANTS


@pytest.fixture
def broken_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster whose balancer is the second-reader mutant (the seed's concurrent-recv race)."""
    cluster = Cluster(tmp_path / "cluster", ClusterSpec(balancer_cmd=MUTANTS["second_reader"]["cmd_str"]))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()
