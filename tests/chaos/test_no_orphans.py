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
from tests.chaos.cli_support import assert_no_survivors, default_sigint

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
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=default_sigint,
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


def test_a_crashed_xdist_worker_leaves_no_orphans(tmp_path: Path) -> None:
    """An xdist worker SIGKILLed mid-test: the cluster it supervised dies with it (PR_SET_PDEATHSIG),
    and the controller reports the crash and ends instead of waiting for it."""
    token = f"xdist-orphan-test-{uuid.uuid4().hex}"
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    ready = tmp_path / "ready"
    env = {**os.environ, OWNER_ENV: token, "READY_FILE": str(ready)}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "xdist", "-n", "1",
         "--max-worker-restart", "0", str(tmp_path / "test_inner.py"), "--rootdir", str(tmp_path)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=60, what="inner cluster up")
        assert ready.exists(), proc.communicate()[0].decode(errors="replace")[-2000:]
        # The worker: the controller's one child of this run (execnet starts it directly; it sets
        # PYTEST_XDIST_WORKER only after it started, so /proc/PID/environ does not show it).
        workers = [p for p in survivors(token) if p.ppid() == proc.pid]
        assert len(workers) == 1, [(p.pid, p.cmdline()) for p in workers]
        (worker,) = workers
        its_children = worker.children(recursive=True)
        # Toxiproxy, two backends, the balancer and a swarm, all under the worker.
        assert len(its_children) >= 5, [p.cmdline() for p in its_children]
        worker.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "crashed" in output, output[-2000:]  # xdist saw the worker die, and said so
    assert_no_survivors(token, "the xdist worker was SIGKILLed")


INNER_THREADED = textwrap.dedent(
    """
    import os, sys, threading
    from pathlib import Path
    from harness.procs import Supervisor

    supervisor = Supervisor(Path(sys.argv[1]))
    # As certify's lanes do: the child is started from a thread other than the main one, which
    # then ends; PR_SET_PDEATHSIG cannot be used there.
    lane = threading.Thread(
        target=supervisor.spawn, args=("sleeper", [sys.executable, "-c", "import time; time.sleep(300)"])
    )
    lane.start()
    lane.join()
    # Written whole, then renamed: the test reads the pid as soon as the file exists.
    Path(os.environ["READY_FILE"] + ".part").write_text(str(supervisor.procs["sleeper"].pid))
    os.replace(os.environ["READY_FILE"] + ".part", os.environ["READY_FILE"])
    threading.Event().wait(120)  # SIGKILLed from outside
    """
)


def test_children_started_from_another_thread_die_with_a_sigkilled_harness(tmp_path: Path) -> None:
    token = f"orphan-thread-test-{uuid.uuid4().hex}"
    ready = tmp_path / "ready"
    env = {**os.environ, OWNER_ENV: token, "READY_FILE": str(ready)}
    proc = subprocess.Popen(
        [sys.executable, "-c", INNER_THREADED, str(tmp_path / "logs")],
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=30, what="inner child up")
        assert ready.exists(), proc.communicate()[0].decode(errors="replace")[-2000:]
        sleeper = int(ready.read_text())
        # The harness, its child, and the reaper that watches the harness.
        alive = {p.pid: " ".join(p.cmdline()) for p in survivors(token)}
        assert sleeper in alive and any("harness.reaper" in cmd for cmd in alive.values()), alive
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_no_survivors(token, "SIGKILL of a harness whose child a non-main thread started")
