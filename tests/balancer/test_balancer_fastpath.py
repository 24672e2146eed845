"""The frames data path (balancer.fastpath) in a real `python -m balancer` process.

The rest of tests/balancer runs on the default data path; these pin "frames" and
"messages" explicitly for what only the frames path could get wrong: the switch from
websockets' parser to the frame reader while messages are already queued, and
messages that websockets parsed before the switch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from balancer_support import DEFAULT_KEEPALIVE, client, recv_json, wait_closed_code, wait_for, ws_url
from echo_backend import make_handler
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


@pytest.fixture
async def held_backend() -> AsyncIterator[tuple[Server, asyncio.Event]]:
    """An echo backend that holds every opening handshake until the event is set."""
    release = asyncio.Event()

    async def hold(conn: ServerConnection, request: Request) -> Response | None:
        async with asyncio.timeout(10):
            await release.wait()
        return None

    server = await serve(make_handler("held"), "127.0.0.1", 0, process_request=hold, max_size=None, compression=None)
    try:
        yield server, release
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("data_path", ["frames", "messages"])
async def test_messages_sent_while_the_upstream_opens_arrive_whole_and_in_order(
    balancer_factory: Any, held_backend: tuple[Server, asyncio.Event], data_path: str
) -> None:
    server, release = held_backend
    bal = await balancer_factory([("held", ws_url(server))], data_path=data_path, open_timeout_s=10.0)
    async with client(bal.url + "/p", compression=None) as ws:
        # More frames than websockets queues before it stops reading (16), one message
        # fragmented over 40 of them, so the switch to the frame reader happens with
        # reading paused and websockets' parser possibly in the middle of a frame.
        await ws.send([f"{i:02d}" * 500 for i in range(40)])
        for i in range(20):
            await ws.send(f"m{i}")
            await ws.send(bytes([i]) * 3000)
        # All of it handed to the kernel, for the balancer to read while the upstream opens.
        await wait_for(lambda: ws.transport.get_write_buffer_size() == 0, what="the client's sends written")
        release.set()
        first = await recv_json(ws, timeout=10)
        assert first["msg"] == "".join(f"{i:02d}" * 500 for i in range(40))
        for i in range(20):
            assert (await recv_json(ws))["msg"] == f"m{i}"
            async with asyncio.timeout(5):
                assert await ws.recv() == b"held|" + bytes([i]) * 3000
    await bal.wait_empty()


@pytest.mark.parametrize("data_path", ["frames", "messages"])
async def test_a_client_offering_compression_gets_it_on_both_paths(
    balancer_factory: Any, echo_backends: Any, data_path: str
) -> None:
    # On the frames path such a session relays messages: a compressed leg cannot pass frames.
    primary = await echo_backends("primary")
    bal = await balancer_factory([("primary", ws_url(primary))], data_path=data_path)
    async with client(bal.url + "/z") as ws:  # websockets offers permessage-deflate by default
        assert [ext.name for ext in ws.protocol.extensions] == ["permessage-deflate"]
        for i in range(5):
            await ws.send("x" * 1000 + str(i))
            assert (await recv_json(ws))["msg"] == "x" * 1000 + str(i)
    await bal.wait_empty()


@pytest.mark.parametrize("data_path", ["frames", "messages"])
async def test_a_message_of_too_many_fragments_is_refused_with_1009_on_both_paths(
    balancer_factory: Any, echo_backends: Any, data_path: str
) -> None:
    primary = await echo_backends("primary")
    bal = await balancer_factory([("primary", ws_url(primary))], data_path=data_path, **DEFAULT_KEEPALIVE)
    async with client(bal.url + "/many", compression=None) as ws:
        # send() of N chunks is N + 1 frames (an empty final one): 4096 frames, websockets'
        # MAX_FRAGMENTS, are still a message; 4097 are not.
        await ws.send(["ok"] * 4095)
        assert (await recv_json(ws))["msg"] == "ok" * 4095
        with contextlib.suppress(ConnectionClosed):
            await ws.send(["x"] * 4096)
        assert await wait_closed_code(ws) == 1009
    await bal.wait_empty()
