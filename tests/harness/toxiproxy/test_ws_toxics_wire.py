"""Frame-aware toxics on real sockets: websockets on both ends, toxics created by the official client."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from toxiproxy.proxy import Proxy
from toxiproxy_support import DEADLINE, ServerThread, port_of, proxy_to, ws_server_thread
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import Server, ServerConnection

from harness.toxiproxy.ws_toxics import PROTOCOL_ERRORS


def _echo(ws: ServerConnection) -> None:
    try:
        for message in ws:
            ws.send(message)
    except ConnectionClosed:
        pass


@pytest.fixture
def ws_server() -> Iterator[Server]:
    with ws_server_thread(_echo) as server:
        yield server


@pytest.fixture
def proxy(tp: ServerThread, ws_server: Server) -> Proxy:
    return proxy_to(ws_server, "ws")


def open_ws(proxy: Proxy, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("compression", None)
    return connect(f"ws://127.0.0.1:{port_of(proxy.listen)}/", proxy=None, open_timeout=DEADLINE, **kwargs)


def close_code_after(ws: ClientConnection, send: str) -> int | None:
    """Send, then read until the connection ends; the close code the client saw."""
    with pytest.raises(ConnectionClosed):
        ws.send(send)
        while True:
            ws.recv(timeout=DEADLINE)
    return ws.close_code


@pytest.mark.parametrize(("kind", "code"), [("reserved_opcode", 1002), ("invalid_utf8", 1007), ("oversized", 1009)])
def test_protocol_error_toward_the_server_added_mid_connection(proxy: Proxy, kind: str, code: int) -> None:
    with open_ws(proxy) as ws:
        ws.send("before")
        assert ws.recv(timeout=DEADLINE) == "before"
        proxy.add_toxic(type="ws_protocol_error", stream="upstream", attributes={"kind": PROTOCOL_ERRORS[kind]})
        # The server (websockets) fails the connection and says why in its close frame.
        assert close_code_after(ws, "after") == code


def test_protocol_error_toward_the_client_present_from_the_start(proxy: Proxy) -> None:
    proxy.add_toxic(type="ws_protocol_error", attributes={"kind": PROTOCOL_ERRORS["invalid_utf8"], "nth": 2})
    with open_ws(proxy) as ws:
        ws.send("one")
        assert ws.recv(timeout=DEADLINE) == "one"
        close_code_after(ws, "two")
        # The client fails the connection itself and discards what follows, its close included.
        assert ws.protocol.close_sent is not None and ws.protocol.close_sent.code == 1007


def test_connections_limit_spares_the_other_connections(proxy: Proxy) -> None:
    proxy.add_toxic(type="ws_protocol_error", stream="upstream", attributes={"connections": 1})
    with open_ws(proxy) as first, open_ws(proxy) as second:
        assert close_code_after(first, "hit") == 1002
        second.send("spared")
        assert second.recv(timeout=DEADLINE) == "spared"


@pytest.mark.parametrize(("stream", "receiver"), [("upstream", "server"), ("downstream", "client")])
def test_ping_flood_is_answered_and_the_conversation_goes_on(
    proxy: Proxy, stream: str, receiver: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.add_toxic(type="ws_ping", stream=stream, attributes={"count": 500, "size": 125})
    with caplog.at_level(logging.DEBUG, logger=f"websockets.{receiver}"), open_ws(proxy) as ws:
        for i in range(3):
            ws.send(f"m{i}")
            assert ws.recv(timeout=DEADLINE) == f"m{i}"
    # websockets logs every frame it reads at debug level: the pings landed, all of them.
    pings = [r for r in caplog.records if r.name == f"websockets.{receiver}" and r.getMessage().startswith("< PING")]
    assert len(pings) == 500


def test_split_frames_are_transparent_both_ways(proxy: Proxy) -> None:
    for stream in ("upstream", "downstream"):
        proxy.add_toxic(type="ws_split", stream=stream, attributes={"nth": 0, "segments": 50, "delay": 100})
    with open_ws(proxy, compression="deflate") as ws:
        for size in (1, 200, 70000):
            ws.send("x" * size)
            assert ws.recv(timeout=DEADLINE) == "x" * size


def test_duplicate_and_drop_show_in_the_echo(proxy: Proxy) -> None:
    proxy.add_toxic(type="ws_duplicate", stream="upstream", attributes={"nth": 2})
    proxy.add_toxic(type="ws_drop", stream="downstream", attributes={"nth": 1})
    with open_ws(proxy) as ws:
        for message in ("a", "b", "c"):
            ws.send(message)
        # The echo of "a" is dropped; "b" reached the server twice.
        assert [ws.recv(timeout=DEADLINE) for _ in range(3)] == ["b", "b", "c"]


def test_close_with_a_chosen_code(proxy: Proxy) -> None:
    proxy.add_toxic(type="ws_close", attributes={"code": 4001})
    with open_ws(proxy) as ws:
        assert close_code_after(ws, "hello") == 4001
        assert ws.close_reason == "wschaos ws_close_downstream"
