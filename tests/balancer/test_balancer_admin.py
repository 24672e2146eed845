"""The admin endpoint of a real `python -m balancer` process, byte by byte:
what good requests get (status, content type, body), and that bad ones get a
4xx or a closed connection and never a traceback in the balancer's output."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from balancer_support import ws_url
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families


async def exchange(port: int, raw: bytes, *, half_close: bool = False) -> bytes:
    """Send ``raw`` to the admin port and read until the balancer closes the connection."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(raw)
            await writer.drain()
            if half_close:
                writer.write_eof()
            try:
                return await reader.read()
            except ConnectionResetError:
                return b""
        finally:
            writer.close()


def parse(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode()


@pytest.fixture
async def bal(balancer_factory: Any, echo_backends: Any) -> Any:
    primary = await echo_backends("primary")
    return await balancer_factory([("primary", ws_url(primary))])


async def test_good_requests_keep_their_status_type_and_body(bal: Any) -> None:
    status, headers, body = parse(await exchange(bal.admin, get("/status?x=1")))
    assert status == 200 and headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    st = json.loads(body)
    assert st["tables"] == {"active_connections": 0, "connection_states": 0, "reconnect_attempts": 0}
    assert st["backends"] == [{"name": "primary", "connection_count": 0, "healthy": True}]

    status, headers, body = parse(await exchange(bal.admin, get("/metrics")))
    assert status == 200 and headers["content-type"] == CONTENT_TYPE_LATEST
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"wschaos_balancer_sessions", "wschaos_balancer_backend_connections"} <= names

    assert parse(await exchange(bal.admin, get("/healthz")))[::2] == (200, b"ok\n")
    status, headers, body = parse(await exchange(bal.admin, get("/nope")))
    assert (status, headers["content-type"], body) == (404, "text/plain; charset=utf-8", b"not found\n")


async def test_head_gets_the_headers_without_a_body(bal: Any) -> None:
    _, _, full = parse(await exchange(bal.admin, get("/healthz")))
    status, headers, body = parse(await exchange(bal.admin, get("/healthz", "HEAD")))
    assert status == 200 and body == b"" and int(headers["content-length"]) == len(full)


async def test_wrong_method_is_405(bal: Any) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "FOO"):
        status, headers, body = parse(await exchange(bal.admin, get("/status", method)))
        assert (status, body) == (405, b"method not allowed\n"), method
        assert headers["allow"] == "GET, HEAD"


# One balancer for all of them (a process start costs seconds); each case names itself.
BAD_REQUESTS = {
    "binary": b"\x00\xff\xfe garbage \x80\r\n\r\n",
    "no-path": b"GET\r\n\r\n",
    "no-version": b"GET /status\r\n\r\n",
    "http2": b"GET /status HTTP/2.0\r\n\r\n",
    "non-ascii-path": b"GET /st\xe9tus HTTP/1.1\r\n\r\n",
    "bad-header": b"GET /status HTTP/1.1\r\nno colon here\r\n\r\n",
    "body": b"POST /status HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": b"GET /status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "truncated": b"GET /status HTTP/1.1\r\nHost: admin\r\n",  # never finishes its headers
    "empty": b"",
}


async def test_bad_requests_are_refused_without_a_traceback(bal: Any) -> None:
    for name, raw in BAD_REQUESTS.items():
        reply = await exchange(bal.admin, raw, half_close=True)
        if reply:
            assert 400 <= parse(reply)[0] < 500, (name, reply)
        # The balancer is unharmed, and said nothing about it.
        status, _, body = parse(await exchange(bal.admin, get("/status")))
        assert status == 200 and json.loads(body)["sessions"] == 0, name
        assert "Traceback" not in bal.stderr() and "ERROR" not in bal.stderr(), (name, bal.stderr())


async def test_oversized_request_line_is_a_4xx(bal: Any) -> None:
    reply = await exchange(bal.admin, get("/" + "a" * 20_000))
    assert parse(reply)[0] == 414
    assert "Traceback" not in bal.stderr(), bal.stderr()


async def test_a_websocket_handshake_on_the_admin_port_is_not_upgraded(bal: Any) -> None:
    raw = (
        b"GET /status HTTP/1.1\r\nHost: admin\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    status, headers, body = parse(await exchange(bal.admin, raw))
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["sessions"] == 0
