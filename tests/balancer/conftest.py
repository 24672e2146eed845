"""Fixtures for the balancer tests: real `python -m balancer` processes and
in-process or subprocess echo backends; every process is killed at teardown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server

sys.path.insert(0, str(Path(__file__).resolve().parent))

import echo_backend
from balancer_support import (
    FAST,
    HERE,
    BackendProc,
    BalancerProc,
    free_port,
    spawn,
    wait_tcp,
)


@pytest.fixture
async def balancer_factory(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[BalancerProc]]]:
    procs: list[BalancerProc] = []

    async def start(backends: list[tuple[str, str]], **overrides: Any) -> BalancerProc:
        n = len(procs)
        listen, admin = free_port(), free_port()
        cfg: dict[str, Any] = {
            **FAST,
            "listen": f"127.0.0.1:{listen}",
            "admin": f"127.0.0.1:{admin}",
            "backends": [{"name": name, "url": url} for name, url in backends],
        }
        for key, value in overrides.items():
            if key == "failover":
                cfg["failover"] = {**cfg["failover"], **value}
            else:
                cfg[key] = value
        path = tmp_path / f"balancer{n}.json"
        path.write_text(json.dumps(cfg))
        out, err = tmp_path / f"balancer{n}.stdout", tmp_path / f"balancer{n}.stderr"
        with out.open("wb") as o, err.open("wb") as e:
            proc = spawn([sys.executable, "-m", "balancer", str(path)], o, e)
        bp = BalancerProc(proc, listen, admin, out, err, cfg)
        procs.append(bp)
        try:
            await wait_tcp(listen, 10.0, proc)
        except AssertionError:
            raise AssertionError(f"balancer did not start: {bp.stderr()}") from None
        return bp

    try:
        yield start
    finally:
        for bp in procs:
            bp.stop()


@pytest.fixture
async def echo_backends() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(name: str, port: int = 0, log: list[str] | None = None) -> Server:
        server = await echo_backend.start(name, port, log)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for s in servers:
            s.close()
        for s in servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await s.wait_closed()


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
