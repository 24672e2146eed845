"""A small HTTP/1.1 server on asyncio streams, enough for every Toxiproxy client.

Supports keep-alive, pipelined requests, Content-Length and chunked request bodies,
``Expect: 100-continue`` and HEAD. Malformed requests get the same terse plain-text
400 that Go's net/http sends, then the connection is closed. Every wait has a deadline
(Go's server uses 15 s to read a request and 60 s idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

log = logging.getLogger("harness.toxiproxy")

READ_TIMEOUT = 15.0
IDLE_TIMEOUT = 60.0
MAX_HEAD = 1 << 20
MAX_BODY = 16 << 20
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _plain_error(status: int, text: str) -> bytes:
    # Go's net/http answer to a request it cannot parse.
    body = f"{status} {text}".encode()
    return (
        f"HTTP/1.1 {status} {_reason(status)}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class HttpServer:
    """Serve ``handler`` on asyncio streams; owns and cancels its connection tasks."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closing or task is None:
            writer.close()
            return
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            # Only close() cancels these; ending normally keeps asyncio's stream callback
            # (which calls task.exception()) from logging the cancellation as an error.
            pass
        except asyncio.LimitOverrunError:
            with contextlib.suppress(Exception):
                writer.write(_plain_error(431, "Request Header Fields Too Large"))
        except Exception as exc:  # a client must never be able to kill the server
            log.warning("HTTP connection error: %r", exc)
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        self._closing = True
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not self._closing:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    first = await self._first_line(reader)
                if first is None:
                    return
                async with asyncio.timeout(READ_TIMEOUT):
                    request = await self._read_request(first, reader, writer)
            except BadRequest as exc:
                writer.write(_plain_error(exc.status, exc.text))
                await writer.drain()
                return
            keep_alive = self._keep_alive(request)
            response = await self._dispatch(request)
            writer.write(self._render(request, response, keep_alive))
            await writer.drain()
            if not keep_alive:
                return

    async def _dispatch(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server must answer, never die, on any input
            log.error("internal error on %s %s: %r", request.method, request.target, exc)
            body = b'{"error":"internal server error","status":500}\n'
            return Response(500, body, {"Content-Type": "text/plain; charset=utf-8"})

    @staticmethod
    async def _first_line(reader: asyncio.StreamReader) -> bytes | None:
        # RFC 9112 §2.2: ignore empty lines before the request line.
        for _ in range(8):
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    raise BadRequest(400, "Bad Request") from None
                return None
            except asyncio.LimitOverrunError:
                raise BadRequest(431, "Request Header Fields Too Large") from None
            if line.strip(b"\r\n"):
                return line
        raise BadRequest(400, "Bad Request")

    async def _read_request(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request:
        parts = first.rstrip(b"\r\n").split(b" ")
        if len(parts) != 3:
            raise BadRequest(400, "Bad Request")
        raw_method, raw_target, raw_version = parts
        if not raw_method or not set(raw_method) <= _TOKEN:
            raise BadRequest(400, "Bad Request")
        if raw_version not in (b"HTTP/1.1", b"HTTP/1.0"):
            if raw_version.startswith(b"HTTP/1."):
                raw_version = b"HTTP/1.1"
            else:
                raise BadRequest(505, "HTTP Version Not Supported")
        try:
            target = raw_target.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest(400, "Bad Request") from None
        if not target or any(ch <= " " or ch == "\x7f" for ch in target):
            raise BadRequest(400, "Bad Request")
        headers: dict[str, str] = {}
        size = len(first)
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                raise BadRequest(431, "Request Header Fields Too Large") from None
            size += len(line)
            if size > MAX_HEAD:
                raise BadRequest(431, "Request Header Fields Too Large")
            line = line.rstrip(b"\r\n")
            if not line:
                break
            name, sep, value = line.partition(b":")
            if not sep or not name or not set(name) <= _TOKEN:
                raise BadRequest(400, "Bad Request")
            key = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            if key in headers and key == "content-length" and headers[key] != text:
                raise BadRequest(400, "Bad Request")
            headers[key] = f"{headers[key]}, {text}" if key in headers and key != "content-length" else text
        version = raw_version.decode()
        if version == "HTTP/1.1" and "host" not in headers:
            raise BadRequest(400, "Bad Request: missing required Host header")
        request = Request(raw_method.decode(), target, version, headers)
        request.body = await self._read_body(request, reader, writer)
        return request

    @staticmethod
    async def _read_body(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        encoding = request.header("transfer-encoding").lower()
        length_text = request.header("content-length")
        if encoding and encoding != "chunked":
            raise BadRequest(501, "Not Implemented")
        if not encoding and not length_text:
            return b""
        if not encoding:
            if not length_text.isdigit():
                raise BadRequest(400, "Bad Request")
            length = int(length_text)
            if length > MAX_BODY:
                raise BadRequest(413, "Request Entity Too Large")
            if length == 0:
                return b""
        if request.header("expect").lower() == "100-continue" and request.version == "HTTP/1.1":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if not encoding:
            return await reader.readexactly(length)
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = (await reader.readuntil(b"\n")).rstrip(b"\r\n").split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadRequest(400, "Bad Request") from None
            if size < 0:
                raise BadRequest(400, "Bad Request")
            if size == 0:
                # Trailer section, ended by an empty line.
                while (await reader.readuntil(b"\n")).rstrip(b"\r\n"):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise BadRequest(413, "Request Entity Too Large")
            chunks.append(await reader.readexactly(size))
            if (await reader.readexactly(2)) not in (b"\r\n",):
                raise BadRequest(400, "Bad Request")

    @staticmethod
    def _keep_alive(request: Request) -> bool:
        tokens = {token.strip().lower() for token in request.header("connection").split(",")}
        if request.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    @staticmethod
    def _render(request: Request, response: Response, keep_alive: bool) -> bytes:
        headers = dict(response.headers)
        headers["Date"] = formatdate(usegmt=True)
        status = response.status
        if status != 204 and status >= 200:
            headers["Content-Length"] = str(len(response.body))
        if not keep_alive:
            headers["Connection"] = "close"
        elif request.version == "HTTP/1.0":
            headers["Connection"] = "keep-alive"
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines.extend(f"{name}: {headers[name]}" for name in sorted(headers))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if request.method == "HEAD" or status == 204:
            return head
        return head + response.body
