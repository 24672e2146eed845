"""--toxiproxy-url / TOXIPROXY_URL: the harness uses that server instead of its own, and nothing else changes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness.catalog import named_scenarios
from harness.cluster import Cluster, ClusterSpec
from harness.ports import allocate_port
from harness.procs import ReadyCheck, Supervisor
from harness.runner import ScenarioRunner
from tests.chaos import cli_support

pytestmark = pytest.mark.chaos


@pytest.fixture
def external_toxiproxy(tmp_path: Path) -> Iterator[str]:
    """A Toxiproxy server the harness did not start (here: ours, standing in for the Go one)."""
    port = allocate_port()
    with Supervisor(tmp_path / "external") as sup:
        sup.spawn("external-toxiproxy", [sys.executable, "-m", "harness.toxiproxy", "--port", str(port)],
                  ready=ReadyCheck("127.0.0.1", port))  # fmt: skip
        yield f"http://127.0.0.1:{port}"


def test_a_run_goes_through_the_given_toxiproxy(external_toxiproxy: str, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", ClusterSpec(toxiproxy_url=external_toxiproxy))
    with cluster:
        assert "toxiproxy" not in cluster.supervisor.procs  # no embedded server was started
        names = set(requests.get(f"{external_toxiproxy}/proxies", timeout=5).json())
        assert {cluster.proxy_name(link) for link in ("lb", "primary", "secondary")} <= names
        judged = ScenarioRunner(cluster).run(named_scenarios()["partition_primary"], tmp_path / "run")
        judged.assert_ok()
    # The cluster removes its proxies from a server it does not own, and leaves the server up.
    assert requests.get(f"{external_toxiproxy}/proxies", timeout=5).json() == {}


def test_an_unreachable_toxiproxy_url_is_a_clear_error(tmp_path: Path) -> None:
    port = allocate_port()
    token = cli_support.new_token("unreachable-toxiproxy")
    proc = cli_support.certify(
        "--toxiproxy-url", f"http://127.0.0.1:{port}", "--scenario", "kill_primary", "--report", str(tmp_path / "r"),
        token=token, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"toxiproxy at http://127.0.0.1:{port} does not answer" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.elapsed_s < 60, f"took {proc.elapsed_s:.1f} s"
    cli_support.assert_no_survivors(token, "an unreachable --toxiproxy-url")
