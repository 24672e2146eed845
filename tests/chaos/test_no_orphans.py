"""No process outlives an interrupted run: SIGINT, SIGTERM or SIGKILL to pytest mid-scenario."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from harness.procs import OWNER_ENV
from harness.procs import owned_processes as survivors
from harness.waiting import wait_until
from tests.chaos.cli_support import assert_no_survivors

pytestmark = pytest.mark.chaos

INNER_TEST = textwrap.dedent(
    """
    import os, threading
    from pathlib import Path

    def test_hold_a_cluster(cluster, clients):
        clients(2)
        Path(os.environ["READY_FILE"]).write_text("up")
        threading.Event().wait(120)  # interrupted from outside
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_interrupted_run_leaves_no_orphans(tmp_path: Path, sig: signal.Signals) -> None:
    token = f"orphan-test-{uuid.uuid4().hex}"
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    ready = tmp_path / "ready"
    env = {**os.environ, OWNER_ENV: token, "READY_FILE": str(ready)}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(tmp_path / "test_inner.py"), "--rootdir", str(tmp_path)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=60, what="inner cluster up")
        assert ready.exists(), proc.communicate()[0].decode(errors="replace")[-2000:]
        # Toxiproxy, two backends, the balancer and a swarm, all carrying the token.
        assert len(survivors(token)) >= 6
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Children reaped by the finalizers (SIGINT/SIGTERM) or by PDEATHSIG (SIGKILL).
    assert_no_survivors(token, sig.name)
