"""Running ``python -m harness certify`` as a real subprocess, and finding what it left behind.

Each run gets its own ``WSCHAOS_OWNER`` token: every process the harness starts inherits it, so a
survivor of that run is found by the token, never by a name pattern.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.procs import INTERRUPTED_EXIT_TIMEOUT_S, OWNER_ENV, owned_processes
from harness.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def default_sigint() -> None:
    """``preexec_fn`` for a child a test will interrupt: SIGINT back to its default disposition.

    A command started in the background of a non-interactive shell (``cmd &``, as CI scripts and
    nohup wrappers do) ignores SIGINT, and its children inherit that; the harness then rightly
    never sees the Ctrl-C the test sends, and the test would not be testing anything.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_env(token: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, OWNER_ENV: token, **extra}
    # An inner harness run is not part of this xdist worker's session.
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


def new_token(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


@dataclass
class CertifyResult:
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def certify(*args: str, token: str, timeout: float = 300) -> CertifyResult:
    """Runs certify to its end."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "certify", *args],
        cwd=ROOT, env=run_env(token), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return CertifyResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)


def assert_no_survivors(token: str, what: str, settle_s: float = 10.0) -> None:
    """No process of the run is alive once it ended (after ``settle_s`` for PDEATHSIG and reaping).

    Survivors are killed here so one failure does not leak into the next test, and named."""
    with contextlib.suppress(TimeoutError):  # whoever is left is named below
        wait_until(lambda: not owned_processes(token), timeout=settle_s, interval=0.1, what="no survivors")
    left = []
    for proc in owned_processes(token):
        with contextlib.suppress(Exception):
            left.append((proc.pid, " ".join(proc.cmdline())))
            os.kill(proc.pid, signal.SIGKILL)
    assert left == [], f"processes left behind after {what}: {left}"


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (``options`` such as ``size=32k`` or ``ro``); root only, so the
    test is skipped where mounting is not allowed. chmod would not do: these tests run as root."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        # Lazy, so a file still open by a process of a failed run cannot keep the mount behind.
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def interrupt_when(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], sig: signal.Signals, what: str, out_path: Path
) -> tuple[int, float]:
    """Waits (bounded) until ``ready()``, sends ``sig`` to the harness command ``proc`` and waits for
    its exit, long enough for an interrupted certify to stop its cluster. Returns (exit code,
    seconds from the signal to the exit); the command never outlives the test."""
    try:
        wait_until(lambda: ready() or proc.poll() is not None, timeout=180, what=what)
        assert proc.poll() is None, out_path.read_text(errors="replace")[-3000:]
        proc.send_signal(sig)
        t0 = time.monotonic()
        code = proc.wait(timeout=INTERRUPTED_EXIT_TIMEOUT_S + 20)
        return code, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
