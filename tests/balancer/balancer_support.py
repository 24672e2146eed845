"""Helpers for the balancer tests: process handles, clients, deadline-based waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# Short timings keep the suite fast; they are the "ping 0.2-0.5 s" of the brief.
FAST: dict[str, Any] = {
    "failover": {"max_attempts": 3, "window_s": 60.0, "min_interval_s": 0.2},
    "ping_interval_s": 0.3,
    "ping_timeout_s": 0.3,
    "close_timeout_s": 0.3,
    "open_timeout_s": 1.0,
    "health_interval_s": 0.2,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 5.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class BalancerProc:
    proc: subprocess.Popen[bytes]
    listen: int
    admin: int
    stdout_path: Path
    stderr_path: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.listen}"

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    async def get(self, path: str) -> tuple[int, bytes]:
        return await asyncio.to_thread(self._get, path)

    async def status(self) -> dict[str, Any]:
        code, body = await self.get("/status")
        assert code == 200, body
        return dict(json.loads(body))

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout_path.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    async def wait_empty(self, timeout: float = 5.0) -> dict[str, Any]:
        last: dict[str, Any] = {}

        async def empty() -> bool:
            nonlocal last
            last = await self.status()
            return (
                last["sessions"] == 0
                and all(v == 0 for v in last["tables"].values())
                and all(b["connection_count"] == 0 for b in last["backends"])
            )

        try:
            await wait_for(empty, timeout, what="an empty /status")
        except AssertionError:
            raise AssertionError(f"/status never emptied: {last}") from None
        assert last["errors"]["concurrent_recv"] == 0
        return last

    async def backend_count(self, name: str) -> int:
        st = await self.status()
        return next(b["connection_count"] for b in st["backends"] if b["name"] == name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


async def wait_tcp(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    async def accepts() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited early with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
        return True

    await wait_for(accepts, timeout, what=f"port {port} to accept TCP")


def spawn(args: list[str], stdout: Any, stderr: Any) -> subprocess.Popen[bytes]:
    """Start a child with the repo importable; sync so fixtures can call it."""
    return subprocess.Popen(args, stdout=stdout, stderr=stderr, cwd=REPO, env=child_env())


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@dataclass
class BackendProc:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def client(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    kwargs.setdefault("open_timeout", 5)
    kwargs.setdefault("close_timeout", 2)
    async with connect(url, proxy=None, **kwargs) as ws:
        yield ws


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        msg = await ws.recv()
    assert isinstance(msg, str), msg
    return dict(json.loads(msg))


async def wait_closed_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    async with asyncio.timeout(timeout):
        await ws.wait_closed()
    return ws.close_code
