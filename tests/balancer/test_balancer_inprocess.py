"""Exit paths that need a hand inside the balancer: an exception in a session,
a second concurrent reader (which must be counted, and cleaned up), and a
failure between opening an upstream and attaching the session to it."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from balancer_support import FAST, client, recv_json, wait_closed_code, wait_for, ws_url
from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from balancer.admin import status_snapshot
from balancer.config import from_dict
from balancer.events import EventLog
from balancer.frames import FrameSplitter
from balancer.pool import Pool
from balancer.server import Balancer
from balancer.session import Context, Session
from balancer.state import SessionTable


@pytest.fixture
async def inproc(echo_backends: Any) -> AsyncIterator[tuple[Balancer, io.StringIO]]:
    primary = await echo_backends("primary")
    secondary = await echo_backends("secondary")
    cfg = from_dict(
        {
            **FAST,
            "listen": "127.0.0.1:0",
            "admin": "127.0.0.1:0",
            "backends": [
                {"name": "primary", "url": ws_url(primary)},
                {"name": "secondary", "url": ws_url(secondary)},
            ],
        }
    )
    out = io.StringIO()
    bal = Balancer(cfg, EventLog(stream=out))
    await bal.start()
    stop = asyncio.Event()
    task = asyncio.create_task(bal.run(stop))
    try:
        yield bal, out
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


def empty(bal: Balancer) -> bool:
    st = status_snapshot(bal.ctx)
    return (
        st["sessions"] == 0
        and all(v == 0 for v in st["tables"].values())
        and all(b["connection_count"] == 0 for b in st["backends"])
    )


async def test_exception_in_a_session_closes_1011_and_cleans_up(
    inproc: tuple[Balancer, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    bal, out = inproc

    async def boom(self: Session, upstream: Any) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(Session, "_upstream_lost", boom)
    async with client(f"ws://127.0.0.1:{bal.port}/x") as ws:
        await ws.send("hi")
        assert (await recv_json(ws))["server"] == "primary"
        await ws.send("abort")
        assert await wait_closed_code(ws) == 1011
    await wait_for(lambda: empty(bal), what="tables empty after an exception")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["code"] for e in events if e["event"] == "session_close"] == [1011]


async def test_a_second_reader_is_counted_and_the_session_cleaned_up(
    inproc: tuple[Balancer, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    bal, _ = inproc
    original = Session._pump_client
    rogues: list[asyncio.Task[Any]] = []

    async def with_rogue_reader(self: Session, upstream: Any, *args: Any) -> Any:
        rogues.append(asyncio.create_task(self.client.recv()))
        await asyncio.sleep(0)  # let the rogue become the reader first
        return await original(self, upstream, *args)

    monkeypatch.setattr(Session, "_pump_client", with_rogue_reader)
    # The rogue is a second recv() beside the messages path's pump. (The frames path calls no
    # recv(): its only reader is the FrameReader the connection's protocol feeds.)
    monkeypatch.setattr(bal.ctx, "config", dataclasses.replace(bal.ctx.config, data_path="messages"))
    async with client(f"ws://127.0.0.1:{bal.port}/x") as ws:
        assert await wait_closed_code(ws) == 1011
    await wait_for(lambda: empty(bal), what="tables empty")
    assert status_snapshot(bal.ctx)["errors"]["concurrent_recv"] == 1
    for t in rogues:
        t.cancel()
    await asyncio.gather(*rogues, return_exceptions=True)


async def test_attach_failure_after_connect_closes_the_new_upstream(
    inproc: tuple[Balancer, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream is open before the session is attached to it; a failure in
    between must not leave it open on the backend."""
    bal, _ = inproc
    opened: list[Any] = []
    connect, attach = Pool.connect, SessionTable.attach

    async def recording_connect(self: Pool, name: str, path: str, **options: Any) -> Any:
        opened.append(await connect(self, name, path, **options))
        return opened[-1]

    def attach_fails_once(self: SessionTable, session: str, backend: str) -> None:
        if len(opened) == 1:
            raise RuntimeError("injected attach failure")
        attach(self, session, backend)

    monkeypatch.setattr(Pool, "connect", recording_connect)
    monkeypatch.setattr(SessionTable, "attach", attach_fails_once)
    async with client(f"ws://127.0.0.1:{bal.port}/x") as ws:
        assert await wait_closed_code(ws) == 1011
    await wait_for(lambda: empty(bal), what="tables empty")
    assert len(opened) == 1
    await wait_for(lambda: opened[0].state is State.CLOSED, what="the unattached upstream to close")


@pytest.mark.parametrize(
    ("step", "exc"),
    [("attach", RuntimeError("attach failed")), ("acquire", asyncio.CancelledError())],
    ids=["attach-error", "acquire-cancelled"],
)
async def test_open_upstream_closes_it_on_any_exception(
    echo_backends: Any, monkeypatch: pytest.MonkeyPatch, step: str, exc: BaseException
) -> None:
    backend = await echo_backends("primary")
    cfg = from_dict({**FAST, "listen": "127.0.0.1:0", "backends": [{"name": "primary", "url": ws_url(backend)}]})
    events = EventLog(stream=io.StringIO())
    ctx = Context(config=cfg, pool=Pool(cfg, events), table=SessionTable(), events=events)
    # Connecting only looks at the client's request, state and negotiated extensions.
    fake_client = SimpleNamespace(request=None, state=State.OPEN, protocol=SimpleNamespace(extensions=[]))
    session = Session("s1", cast(ServerConnection, fake_client), ctx)
    ctx.table.register("s1", "/")

    def fail(*args: Any) -> None:
        raise exc

    if step == "attach":
        monkeypatch.setattr(ctx.table, "attach", fail)
    else:
        monkeypatch.setattr(ctx.pool, "acquire", fail)
    with pytest.raises(type(exc)):
        await session._carry_out(session.machine.start(ctx.pool.health()))
    await wait_for(lambda: len(backend.connections) == 0, what="the orphaned upstream to close")
    assert ctx.table.get("s1").upstream is None, "a partial attach is undone"
    assert ctx.pool.backends["primary"].connection_count == 0
    assert session.backend is None


async def test_an_error_in_a_frame_reader_closes_1011_and_cleans_up(
    inproc: tuple[Balancer, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader runs in a protocol callback, where the event loop would only log an
    exception: the frames path must end the session as the messages path does."""
    bal, out = inproc
    assert bal.ctx.config.data_path == "frames"
    # Both ways a read is split: the whole-frame shortcut and the general parser.
    for name in ("whole", "feed"):
        original = getattr(FrameSplitter, name)

        def failing(self: FrameSplitter, data: bytes, original: Any = original) -> Any:
            if b"boom" in data:  # a backend's reply: not masked
                raise RuntimeError("injected reader failure")
            return original(self, data)

        monkeypatch.setattr(FrameSplitter, name, failing)
    async with client(f"ws://127.0.0.1:{bal.port}/x", compression=None) as ws:  # the frames path
        await ws.send("hi")
        assert (await recv_json(ws))["server"] == "primary"
        await ws.send("boom")
        assert await wait_closed_code(ws) == 1011
    await wait_for(lambda: empty(bal), what="tables empty after a reader error")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["code"] for e in events if e["event"] == "session_close"] == [1011]
