"""SIGHUP drains (docs/contract.md, section 8a): no new sessions, live ones go on until
``drain_timeout_s``, then 1001 and exit 0."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from balancer_support import FAST, client, recv_json, wait_closed_code, wait_for, ws_url
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

DRAIN_S = 2.5
# The contract's bound on the shutdown that follows the drain: 2 x close_timeout_s + 2.5 s.
SHUTDOWN_BOUND_S = 2 * FAST["close_timeout_s"] + 2.5


async def refused(url: str) -> str:
    """How a new connection attempt is refused: "connection refused" or "HTTP 503"; fails if accepted."""
    try:
        async with connect(url, proxy=None, open_timeout=3) as ws:
            pytest.fail(f"a new connection was accepted while draining: {ws.response}")
    except ConnectionRefusedError:
        return "connection refused"
    except InvalidStatus as exc:
        assert exc.response.status_code == 503, exc.response
        return "HTTP 503"
    raise AssertionError("unreachable")


async def start_drain(bal: Any) -> None:
    """SIGHUP, then wait (bounded) until /status says the build is draining."""
    bal.proc.send_signal(signal.SIGHUP)

    async def draining() -> bool:
        return bool((await bal.status())["draining"])

    await wait_for(draining, what="/status draining")


async def test_sighup_refuses_new_sessions_keeps_live_ones_for_the_drain_timeout_then_1001(
    balancer_factory: Any, echo_backends: Any
) -> None:
    primary = await echo_backends("primary")
    bal = await balancer_factory([("primary", ws_url(primary))], drain_timeout_s=DRAIN_S)
    assert (await bal.status())["draining"] is False, "/status declares drain support"
    async with client(bal.url) as a, client(bal.url) as b:
        for ws in (a, b):
            await ws.send("hi")
            await recv_json(ws)
        t0 = time.monotonic()
        await start_drain(bal)
        await refused(bal.url)
        # Live sessions still relay, both ways, while the drain lasts (sent after it began, answered
        # before the close, which comes no sooner than DRAIN_S: asserted below).
        await a.send("still here")
        assert (await recv_json(a))["server"] == "primary"
        codes = [await wait_closed_code(ws, timeout=DRAIN_S + 5) for ws in (a, b)]
        closed_after = time.monotonic() - t0
        rc = await asyncio.to_thread(bal.proc.wait, DRAIN_S + SHUTDOWN_BOUND_S + 5)
        exited_after = time.monotonic() - t0
    assert codes == [1001, 1001]
    assert closed_after >= DRAIN_S - 0.05, f"closed after {closed_after:.2f}s, before the drain timeout"
    assert rc == 0
    assert exited_after < DRAIN_S + SHUTDOWN_BOUND_S, f"exited after {exited_after:.2f}s"
    await wait_for(lambda: len(primary.connections) == 0, what="upstreams closed")
    events = bal.events()
    names = [e["event"] for e in events]
    assert names.index("drain_started") < names.index("drain_ended") < names.index("balancer_stopped")
    started = next(e for e in events if e["event"] == "drain_started")
    assert (started["sessions"], started["drain_timeout_s"]) == (2, DRAIN_S)
    assert [e["code"] for e in events if e["event"] == "session_close"] == [1001, 1001]
    assert events[-1]["event"] == "balancer_stopped" and events[-1]["sessions"] == 0
    assert "Traceback" not in bal.stderr()


async def test_drain_ends_as_soon_as_the_last_session_ends(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    bal = await balancer_factory([("primary", ws_url(primary))], drain_timeout_s=30.0)
    async with client(bal.url) as ws:
        await ws.send("hi")
        await recv_json(ws)
        await start_drain(bal)
        t0 = time.monotonic()
    # The client left on its own: nothing is left to wait for.
    rc = await asyncio.to_thread(bal.proc.wait, SHUTDOWN_BOUND_S + 5)
    assert rc == 0
    assert time.monotonic() - t0 < SHUTDOWN_BOUND_S
    events = bal.events()
    ended = next(e for e in events if e["event"] == "drain_ended")
    assert ended["sessions"] == 0
    assert [e["code"] for e in events if e["event"] == "session_close"] == [1000]


async def test_sigterm_during_a_drain_shuts_down_at_once(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    bal = await balancer_factory([("primary", ws_url(primary))], drain_timeout_s=30.0)
    async with client(bal.url) as ws:
        await ws.send("hi")
        await recv_json(ws)
        await start_drain(bal)
        t0 = time.monotonic()
        bal.proc.send_signal(signal.SIGTERM)
        assert await wait_closed_code(ws) == 1001
        rc = await asyncio.to_thread(bal.proc.wait, SHUTDOWN_BOUND_S + 5)
    assert rc == 0
    assert time.monotonic() - t0 < SHUTDOWN_BOUND_S


async def test_sighup_with_no_sessions_exits_0_at_once(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    bal = await balancer_factory([("primary", ws_url(primary))], drain_timeout_s=30.0)
    t0 = time.monotonic()
    bal.proc.send_signal(signal.SIGHUP)
    assert await asyncio.to_thread(bal.proc.wait, SHUTDOWN_BOUND_S + 5) == 0
    assert time.monotonic() - t0 < SHUTDOWN_BOUND_S
    assert "Traceback" not in bal.stderr()
