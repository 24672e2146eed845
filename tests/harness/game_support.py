"""Child processes for the game tests: output collected by threads, so every wait has a deadline."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT = 10.0


class Proc:
    """A child process whose output lines are collected by threads, so waits can have deadlines."""

    def __init__(self, argv: list[str]) -> None:
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            for stream, sink in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, pattern: str, timeout: float = READY_TIMEOUT) -> re.Match[str]:
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found.extend(m for line in self.out if (m := rx.search(line)))
            return bool(found) or self.popen.poll() is not None

        with self._cond:
            self._cond.wait_for(seen, timeout)
        if not found:
            raise AssertionError(
                f"no line matching {pattern!r} within {timeout}s; "
                f"rc={self.popen.poll()} out={self.out[-5:]} err={self.err[-5:]}"
            )
        return found[0]

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.popen.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    async def await_exit(self, within: float) -> int:
        return await asyncio.to_thread(self.popen.wait, within)

    def cleanup(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        for t in self._threads:
            t.join(5)  # the pipes hit EOF once the process is gone
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc([sys.executable, *args])
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.cleanup()


def start_backend(spawn: Callable[..., Proc], name: str, journal: Path, port: int = 0) -> tuple[Proc, int]:
    proc = spawn("-m", "harness.backend", "--port", str(port), "--instance-name", name, "--journal", str(journal))
    m = proc.wait_line(rf"^backend {name} listening on 127\.0\.0\.1:(\d+)$")
    return proc, int(m.group(1))
