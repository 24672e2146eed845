"""Fixtures for the balancer tests: real `python -m balancer` processes and
in-process or subprocess echo backends; every process is killed at teardown."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server

sys.path.insert(0, str(Path(__file__).resolve().parent))

from balancer_support import (
    HERE,
    BackendProc,
    BalancerProc,
    echo_backend_server,
    free_port,
    launch_balancer,
    spawn,
    wait_tcp,
)


@pytest.fixture
async def balancer_factory(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[BalancerProc]]]:
    procs: list[BalancerProc] = []

    async def start(backends: list[tuple[str, str]], **overrides: Any) -> BalancerProc:
        bp = await launch_balancer(tmp_path, f"balancer{len(procs)}", backends, **overrides)
        procs.append(bp)
        return bp

    try:
        yield start
    finally:
        for bp in procs:
            bp.stop()


@pytest.fixture
async def echo_backends() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    async with contextlib.AsyncExitStack() as stack:

        async def start(name: str, port: int = 0, log: list[str] | None = None) -> Server:
            return await stack.enter_async_context(echo_backend_server(name, port, log))

        yield start


@pytest.fixture
async def backend_procs(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[BackendProc]]]:
    procs: list[BackendProc] = []

    async def start(name: str) -> BackendProc:
        port = free_port()
        log = (tmp_path / f"backend-{name}-{len(procs)}.log").open("wb")
        proc = spawn(
            [sys.executable, str(HERE / "echo_backend.py"), "--name", name, "--port", str(port)],
            log,
            subprocess.STDOUT,
        )
        log.close()
        bp = BackendProc(name, port, proc)
        procs.append(bp)
        await wait_tcp(port, 10.0, proc)
        return bp

    try:
        yield start
    finally:
        for bp in procs:
            bp.stop()
