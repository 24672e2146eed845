"""The balancer's own upstream handshake (balancer.pool.Pool._open): a backend's answer is
validated as websockets' connect() validates it, and anything but a valid 101 is a failed
connect: the backend is marked down and the session goes on to the next one."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import pytest
from balancer_support import client, recv_json, wait_for, ws_url

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def answer(kind: str, key: str, elsewhere: str) -> bytes:
    upgrade = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    if kind == "wrong accept":
        return f"{upgrade}Sec-WebSocket-Accept: {accept_for(key + 'x')}\r\n\r\n".encode()
    if kind == "extension not offered":
        extension = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
        return f"{upgrade}Sec-WebSocket-Accept: {accept_for(key)}\r\n{extension}\r\n".encode()
    if kind == "redirect":
        return f"HTTP/1.1 302 Found\r\nLocation: {elsewhere}/\r\nContent-Length: 0\r\n\r\n".encode()
    if kind == "not 101":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["wrong accept", "extension not offered", "redirect", "not 101"])
async def test_a_bad_handshake_answer_is_a_failed_connect(balancer_factory: Any, echo_backends: Any, kind: str) -> None:
    secondary = await echo_backends("secondary")
    # Where a followed redirect would lead: it must never see a connection.
    elsewhere_hits: list[bool] = []

    async def elsewhere_handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        elsewhere_hits.append(True)
        w.close()

    async def bad_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(answer(kind, key, elsewhere_url))
        await writer.drain()
        # Keep the connection open: the balancer, not the backend, must decide it failed.
        await reader.read()
        writer.close()

    elsewhere = await asyncio.start_server(elsewhere_handler, "127.0.0.1", 0)
    elsewhere_url = f"ws://127.0.0.1:{elsewhere.sockets[0].getsockname()[1]}"
    bad = await asyncio.start_server(bad_backend, "127.0.0.1", 0)
    bad_url = f"ws://127.0.0.1:{bad.sockets[0].getsockname()[1]}"
    try:
        bal = await balancer_factory([("bad", bad_url), ("secondary", ws_url(secondary))])
        # No compression on the client's leg, so the upstream offers no extension either.
        async with client(bal.url + "/p", compression=None) as ws:
            await ws.send("hello")
            assert await recv_json(ws) == {"server": "secondary", "path": "/p", "msg": "hello"}
        await bal.wait_empty()
        events = bal.events()
        failed = [e for e in events if e["event"] == "upstream_connect_failed"]
        assert [e["backend"] for e in failed] == ["bad"]
        down = [e for e in events if e["event"] == "backend_health" and e["backend"] == "bad"]
        assert [e["healthy"] for e in down] == [False]
        assert [e["backend"] for e in events if e["event"] == "upstream_open"] == ["secondary"]
        assert elsewhere_hits == []
    finally:
        for server in (bad, elsewhere):
            server.close()
            await server.wait_closed()


@pytest.mark.parametrize(("probe_status", "comes_back"), [(503, False), (500, False), (404, True)])
async def test_a_health_probe_answered_with_a_server_error_keeps_the_backend_down(
    balancer_factory: Any, echo_backends: Any, probe_status: int, comes_back: bool
) -> None:
    """A 5xx says the backend cannot serve (the contract's refused upgrade); a 4xx only that it
    dislikes the probe's path "/", which a live game server may well do."""
    secondary = await echo_backends("secondary")
    probes: list[str] = []

    async def refusing_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        status = probe_status if path == "/" else 503
        if path == "/":
            probes.append(path)
        writer.write(f"HTTP/1.1 {status} No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    refusing = await asyncio.start_server(refusing_backend, "127.0.0.1", 0)
    try:
        bal = await balancer_factory(
            [("refusing", f"ws://127.0.0.1:{refusing.sockets[0].getsockname()[1]}"), ("secondary", ws_url(secondary))],
            health_interval_s=0.05,
        )
        async with client(bal.url + "/p", compression=None) as ws:
            await ws.send("hello")
            assert await recv_json(ws) == {"server": "secondary", "path": "/p", "msg": "hello"}

        def health() -> list[bool]:
            return [e["healthy"] for e in bal.events() if e["event"] == "backend_health" and e["backend"] == "refusing"]

        # Probes go only to a backend that is down: three of them, or one that brought it back.
        await wait_for(lambda: len(probes) >= 3 or health()[-1:] == [True], timeout=10.0, what="three probes")
        assert health() == ([False, True] if comes_back else [False])
    finally:
        refusing.close()
        await refusing.wait_closed()
