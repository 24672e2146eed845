"""The API's HTTP/1.1 server: h11 parses and frames, asyncio streams carry the bytes.

h11 does the protocol (request line and headers, Content-Length and chunked bodies,
keep-alive and pipelining, ``Expect: 100-continue``, HEAD); this module owns the socket,
the deadlines (Go's server allows 15 s to read a request and 60 s idle) and the bytes Go's
net/http puts on the wire where h11 leaves a choice: the ``Date`` header, the terse
plain-text ``400 Bad Request`` (then close) for a request it cannot parse, and 505 for an
HTTP major version other than 1. Go also skips up to four stray CR/LF bytes before a
request line (RFC 9112 §2.2), which h11 rejects; that is the one place bytes are looked
at here (docs/architecture.md, "Embedded Toxiproxy").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

import h11

log = logging.getLogger("harness.toxiproxy")

READ_TIMEOUT = 15.0
IDLE_TIMEOUT = 60.0
MAX_HEAD = 1 << 20
MAX_BODY = 16 << 20
READ_SIZE = 64 * 1024
# Go's net/http discards this many leading CR/LF bytes before a request (numLeadingCRorLF
# over a 4-byte peek).
_MAX_LEADING_CRLF = 4
# h11's text for a missing Host header, which Go answers with its own wording.
_H11_MISSING_HOST = "Missing mandatory Host: header"


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
    """A request Go's net/http refuses before any handler: answered as text, then close."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _bad_request(exc: h11.RemoteProtocolError) -> BadRequest:
    status = exc.error_status_hint
    if status == 400 and str(exc) == _H11_MISSING_HOST:
        return BadRequest(400, "Bad Request: missing required Host header")
    return BadRequest(status, _reason(status))


def _headers(request: h11.Request) -> dict[str, str]:
    # h11 has checked (and lower-cased) the names; a repeated field is joined with commas.
    headers: dict[str, str] = {}
    for name, value in request.headers:
        key = name.decode("ascii")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


class _Exchange:
    """One client connection: an h11 state machine fed from an asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.skippable = _MAX_LEADING_CRLF
        # Whether this request's line has ended, and whether the client has closed.
        self.line_ended = False
        self.eof = False

    def _feed(self, data: bytes) -> None:
        if self.skippable and self.conn.their_state is h11.IDLE:
            head = data[: self.skippable]
            stray = len(head) - len(head.lstrip(b"\r\n"))
            self.skippable = 0 if stray < len(head) else self.skippable - stray
            data = data[stray:]
        if data:
            self.skippable = 0
            self.line_ended = self.line_ended or b"\n" in data
            self.conn.receive_data(data)

    async def _next_event(self) -> h11.Event:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                if self.eof and self.line_ended:
                    # Cut off after the request line: Go's server closes without a reply
                    # (an EOF is a common read error to it); only a partial request line
                    # is answered, as a malformed one.
                    raise ConnectionResetError("client closed mid-request") from None
                raise _bad_request(exc) from None
            if event is h11.PAUSED:
                # Only after a complete request, which read_request never asks past.
                raise BadRequest(400, "Bad Request")
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            data = await self.reader.read(READ_SIZE)
            if data:
                self._feed(data)
            else:
                self.eof = True
                self.conn.receive_data(b"")

    async def read_request(self) -> Request | None:
        """The next request with its body; None when the client closed between requests."""
        async with asyncio.timeout(IDLE_TIMEOUT) as deadline:
            event = await self._next_event()
            deadline.reschedule(asyncio.get_running_loop().time() + READ_TIMEOUT)
            if isinstance(event, h11.ConnectionClosed):
                return None
            assert isinstance(event, h11.Request)
            if not event.http_version.startswith(b"1."):
                raise BadRequest(505, "HTTP Version Not Supported")
            headers = _headers(event)
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_BODY:
                raise BadRequest(413, "Request Entity Too Large")
            if self.conn.they_are_waiting_for_100_continue and (
                length not in ("", "0") or "transfer-encoding" in headers
            ):
                # Go sends it when the body is first read, whether or not it already came.
                self._send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
                await self.writer.drain()
            chunks: list[bytes] = []
            size = 0
            while not isinstance(part := await self._next_event(), h11.EndOfMessage):
                assert isinstance(part, h11.Data)
                size += len(part.data)
                if size > MAX_BODY:
                    raise BadRequest(413, "Request Entity Too Large")
                chunks.append(part.data)
        return Request(
            event.method.decode("ascii"),
            event.target.decode("ascii"),
            "HTTP/" + event.http_version.decode("ascii"),
            headers,
            b"".join(chunks),
        )

    def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)

    def respond(self, request: Request, response: Response) -> None:
        headers = dict(response.headers)
        headers["Date"] = formatdate(usegmt=True)
        if response.status != 204:
            # A HEAD reply keeps the size the GET body would have; h11 sends no body.
            headers["Content-Length"] = str(len(response.body))
        self._send(
            h11.Response(
                status_code=response.status,
                headers=[(name, headers[name]) for name in sorted(headers)],
                reason=_reason(response.status),
            )
        )
        if response.body and request.method != "HEAD" and response.status != 204:
            self._send(h11.Data(data=response.body))
        self._send(h11.EndOfMessage())

    def refuse(self, bad: BadRequest) -> None:
        """Go's answer to a request it cannot parse: status, plain text, close."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"{bad.status} {bad.text}".encode()
        self._send(
            h11.Response(
                status_code=bad.status,
                headers=[
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Connection", "close"),
                    ("Content-Length", str(len(body))),
                ],
                reason=_reason(bad.status),
            )
        )
        self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def next_cycle(self) -> bool:
        """Get ready for the next request on this connection; False if it must close."""
        if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
            return False
        self.conn.start_next_cycle()
        self.skippable = _MAX_LEADING_CRLF
        self.line_ended = False
        leftover, closed = self.conn.trailing_data
        if leftover[:1] in (b"\r", b"\n"):
            # A pipelined request behind stray CR/LFs: a fresh parser takes it without them.
            self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
            self._feed(leftover)
            if closed:
                self.conn.receive_data(b"")
        return True


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
            await self._serve(_Exchange(reader, writer))
        except (ConnectionError, TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            # Only close() cancels these; ending normally keeps asyncio's stream callback
            # (which calls task.exception()) from logging the cancellation as an error.
            pass
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

    async def _serve(self, exchange: _Exchange) -> None:
        while not self._closing:
            try:
                request = await exchange.read_request()
            except BadRequest as bad:
                exchange.refuse(bad)
                await exchange.writer.drain()
                return
            if request is None:
                return
            exchange.respond(request, await self._dispatch(request))
            await exchange.writer.drain()
            if not exchange.next_cycle():
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
