"""Fixtures shared by the chaos suites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster, ClusterSpec
from harness.plugin import _spec
from tests.selftest.mutants import MUTANTS


@pytest.fixture(scope="module")
def shared_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster of the build under test for a whole module: the runner's checked reset heals it
    between scenarios, and cleanup_complete fails the scenario that leaked."""
    cluster = Cluster(tmp_path_factory.mktemp("shared") / "cluster", _spec(request.config))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def broken_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster whose balancer is the second-reader mutant (the seed's concurrent-recv race)."""
    cluster = Cluster(tmp_path / "cluster", ClusterSpec(balancer_cmd=MUTANTS["second_reader"]["cmd_str"]))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()
