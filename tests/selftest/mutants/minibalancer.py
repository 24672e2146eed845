"""A deliberately small WebSocket balancer that follows docs/contract.md.

It exists so the harness can test itself: run plain, it is a correct control build; run with
``--defect NAME`` it carries exactly one of the defects in ``DEFECTS`` (see README.md).  Every
line that differs because of a defect is marked ``# DEFECT(name):``.  It is independent of the
``balancer`` package on purpose, so that a bug there cannot hide a bug in the harness.

    python tests/selftest/mutants/minibalancer.py [--defect NAME] CONFIG.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import logging
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConcurrencyError, ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

DEFECTS = (
    "second_reader",
    "async_for_shared",
    "no_rate_limit",
    "no_min_interval",
    "leaky_tables",
    "upstream_left_open",
    "two_upstreams",
    "no_keepalive",
    "max_attempts_plus_one",
    "max_attempts_minus_one",
    "min_interval_short",
    "min_interval_long",
    "window_short",
    "max_connections_plus_one",
    "no_503",
    "max_size_plus_one",
    "path_dropped_on_failover",
    "close_code_swallowed",
    "queued_dropped",
    "resent_twice",
    "half_open_unnoticed",
    "drain_drops_all",
    "drain_no_wait",
    "drain_keeps_accepting",
    "upgrade_retried_forever",
    "backend_close_passed",
    "herd_cold_start",
    "protocol_error_bans_peer",
    "upstream_error_bad_gateway",
    "ping_flood_guard",
    "open_budget_short",
    "reply_deadline",
    "repeated_ack_crashes",
    "resend_filtered",
)
CLIENT_CLOSED, UPSTREAM_LOST, UNRESPONSIVE = "client_closed", "upstream_lost", "unresponsive"
REPLY_OVERDUE = "reply_overdue"  # reply_deadline only
OPEN_TIMEOUT_S = 2.0  # bounded, so a partitioned backend cannot stall a failover for 10 s
RETRY_DOWN_S = 2.0  # a backend marked down is preferred last until this long has passed
DEFAULT_MAX_SIZE = 2**20
DEFAULT_MAX_CONNECTIONS = 1024
#: herd_cold_start: how long after it starts listening the defective build cannot serve clients.
COLD_START_S = 1.5
#: The RFC 6455 close codes websockets fails a connection with for a malformed frame or message.
PROTOCOL_ERROR_CODES = frozenset({1002, 1007, 1009})
#: ping_flood_guard: more pings than this from one peer within PING_GUARD_WINDOW_S is taken for an attack.
PING_GUARD_MAX = 50
PING_GUARD_WINDOW_S = 1.0
#: open_budget_short: the whole time a new upstream may take, over every backend tried.
OPEN_BUDGET_S = 0.5
#: reply_deadline: how long after forwarding a client message a backend reply must have come.
REPLY_DEADLINE_S = 0.15
#: resend_filtered: how many of the last client messages a repeat of which is dropped.
RESEND_FILTER_SIZE = 32
log = logging.getLogger("minibalancer")
DEFECT: str | None = None
#: --black-box: a build that implements only the required part of the contract.
BLACK_BOX = False
#: --no-drain: no SIGHUP drain (contract section 8a), and /status does not declare it.
NO_DRAIN = False
DEFAULT_DRAIN_TIMEOUT_S = 30.0


def defect(name: str) -> bool:
    return DEFECT == name


def emit(event: str, ts: float | None = None, **fields: Any) -> None:
    if BLACK_BOX:
        return
    """One contract event line on stdout, flushed so the harness sees it even if we are killed."""
    print(json.dumps({"event": event, "ts": time.time() if ts is None else ts, **fields}), flush=True)


def move_seq(msg: str | bytes, kind: str) -> int | None:
    """repeated_ack_crashes only: the seq of a game message of type ``kind``, if it is one."""
    try:
        obj = json.loads(msg)
    except ValueError:
        return None
    seq = obj.get("seq") if isinstance(obj, dict) and obj.get("type") == kind else None
    return seq if isinstance(seq, int) else None


def hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


@dataclass
class Backend:
    name: str
    url: str
    down_since: float | None = None

    def healthy(self, now: float) -> bool:
        return self.down_since is None or now - self.down_since >= RETRY_DOWN_S


class Limiter:
    """Failovers of one client connection: <= max_attempts per window_s, >= min_interval_s apart."""

    def __init__(self, max_attempts: int, window_s: float, min_interval_s: float) -> None:
        if defect("max_attempts_plus_one"):  # DEFECT(max_attempts_plus_one): one attempt too many
            max_attempts += 1
        if defect("max_attempts_minus_one"):  # DEFECT(max_attempts_minus_one): one attempt too few
            max_attempts -= 1
        if defect("min_interval_short"):  # DEFECT(min_interval_short): the interval 0.4 s short
            min_interval_s -= 0.4
        if defect("min_interval_long"):  # DEFECT(min_interval_long): the interval 0.5 s long
            min_interval_s += 0.5
        if defect("window_short"):  # DEFECT(window_short): attempts forgotten after half the window
            window_s /= 2
        self.max_attempts, self.window_s, self.min_interval_s = max_attempts, window_s, min_interval_s
        self.times: collections.deque[float] = collections.deque()

    def allow(self, now: float) -> bool:
        while self.times and now - self.times[0] >= self.window_s:
            self.times.popleft()
        if len(self.times) >= self.max_attempts:
            return False
        too_soon = bool(self.times) and now - self.times[-1] < self.min_interval_s
        if too_soon and not defect("no_min_interval"):  # DEFECT(no_min_interval): check skipped
            return False
        self.times.append(now)
        return True


@dataclass
class Session:
    sid: str
    client: ServerConnection
    path: str
    upstream: ClientConnection | None = None
    backend: Backend | None = None
    pending: str | bytes | None = None  # read from the client, not delivered before a loss
    last_forwarded: str | bytes | None = None  # resent_twice only
    old_upstreams: list[ClientConnection] = field(default_factory=list)  # two_upstreams only
    # reply_deadline only: per forwarded message, oldest first, the loop time its reply is due by;
    # set whenever that queue changes.
    reply_dues: collections.deque[float] = field(default_factory=collections.deque)
    replies_changed: asyncio.Event = field(default_factory=asyncio.Event)
    forwarded: set[int] = field(default_factory=set)  # repeated_ack_crashes only: moves awaiting an ack
    recent: collections.deque[str | bytes] = field(  # resend_filtered only: the last messages relayed
        default_factory=lambda: collections.deque(maxlen=RESEND_FILTER_SIZE)
    )
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def reply_came(self) -> None:
        if self.reply_dues:
            self.reply_dues.popleft()
        self.replies_changed.set()


class PingGuardConnection(ServerConnection):
    """ping_flood_guard only: a client connection that takes a burst of pings for an attack."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ping_times: collections.deque[float] = collections.deque()

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING and self.protocol.state is State.OPEN:
            now = self.loop.time()
            self.ping_times.append(now)
            while now - self.ping_times[0] > PING_GUARD_WINDOW_S:
                self.ping_times.popleft()
            if len(self.ping_times) > PING_GUARD_MAX:
                # DEFECT(ping_flood_guard): a burst of pings, which RFC 6455 lets a peer send, fails the
                # connection with 1008 (policy violation) instead of being answered or ignored.
                self.protocol.fail(1008, "ping flood")
                self.send_data()  # data_received has already flushed this round's output
                return
        super().process_event(event)


class Balancer:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.backends = [Backend(b["name"], b["url"].rstrip("/")) for b in cfg["backends"]]
        self.sessions: dict[str, Session] = {}
        self.active_connections: dict[str, ServerConnection] = {}
        self.connection_states: dict[str, str] = {}
        self.reconnect_attempts: dict[str, Limiter] = {}
        self.upstreams: dict[ClientConnection, Backend] = {}  # every open upstream socket
        self.concurrent_recv = 0
        self.open_clients = 0  # admitted client connections, for max_connections
        self.no_clients = asyncio.Event()  # set while open_clients is 0: a drain waits on it
        self.no_clients.set()
        self.draining = False
        self.started = time.monotonic()  # reset when the client-facing server starts listening
        self._ids = itertools.count(1)

    # ---- admin ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "sessions": len(self.sessions),
            "tables": {
                "active_connections": len(self.active_connections),
                "connection_states": len(self.connection_states),
                "reconnect_attempts": len(self.reconnect_attempts),
            },
            "backends": [
                {
                    "name": b.name,
                    "connection_count": sum(v is b for v in self.upstreams.values()),
                    "healthy": b.healthy(now),
                }
                for b in self.backends
            ],
            "errors": {"concurrent_recv": self.concurrent_recv},
            **({} if NO_DRAIN else {"draining": self.draining}),
        }

    async def admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await asyncio.wait_for(reader.readline(), 5)).decode("latin-1").split()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            target = request[1].partition("?")[0] if len(request) > 1 else ""
            code, body = (
                ("200 OK", json.dumps(self.status()))
                if target == "/status"
                else (("200 OK", '{"ok": true}') if target == "/healthz" else ("404 Not Found", "{}"))
            )
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: "
                f"{len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    # ---- upstream management --------------------------------------------------------------
    def admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """HTTP 503 once max_connections client connections are open."""
        if self.draining and not defect("drain_keeps_accepting"):  # DEFECT(drain_keeps_accepting): admitted
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        limit = self.cfg["max_connections"]
        if defect("max_connections_plus_one"):  # DEFECT(max_connections_plus_one): one client too many
            limit += 1
        if self.open_clients >= limit and not defect("no_503"):  # DEFECT(no_503): handshake accepted
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None

    async def open_upstream(self, s: Session, failover: bool = False) -> bool:
        """Connect to the first healthy backend (then the others), forwarding path+query."""
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        # DEFECT(open_budget_short): one short budget for opening an upstream, over every backend tried,
        # whatever open_timeout_s says: a slow first backend uses it up and the next is never tried.
        budget_ends = loop.time() + OPEN_BUDGET_S if defect("open_budget_short") else None
        path = s.path
        if failover and defect("path_dropped_on_failover"):
            path = "/?" + urlsplit(s.path).query  # DEFECT(path_dropped_on_failover): only the query
        # DEFECT(upgrade_retried_forever): no open timeout, so a stalled upgrade is waited on for ever.
        open_timeout = None if defect("upgrade_retried_forever") else self.cfg.get("open_timeout_s") or OPEN_TIMEOUT_S
        for b in sorted(self.backends, key=lambda b: not b.healthy(now)):  # stable: keeps priority
            if budget_ends is not None:
                open_timeout = budget_ends - loop.time()  # DEFECT(open_budget_short)
                if open_timeout <= 0:
                    break
            try:
                ws = await self.connect_retrying(
                    b.url + path,
                    proxy=None,
                    open_timeout=open_timeout,
                    close_timeout=1.0,
                    # DEFECT(no_keepalive): no pings upstream, so a blackholed backend goes unnoticed.
                    # two_upstreams runs its own keepalive (watchdog) that does not close the socket.
                    ping_interval=None if DEFECT in ("no_keepalive", "two_upstreams") else self.cfg["ping_interval_s"],
                    # DEFECT(half_open_unnoticed): pings go out, a missing pong is never acted on.
                    ping_timeout=None if defect("half_open_unnoticed") else self.cfg["ping_timeout_s"],
                )
            except Exception as exc:  # refused, reset, bad handshake, open_timeout: try the next
                log.info("backend %s unreachable: %r", b.name, exc)
                b.down_since = time.monotonic()
                continue
            b.down_since = None
            s.upstream, s.backend, self.upstreams[ws] = ws, b, b
            emit("upstream_open", session=s.sid, backend=b.name)
            return True
        return False

    async def connect_retrying(self, url: str, **kwargs: Any) -> ClientConnection:
        while True:
            try:
                return await connect(url, **kwargs)
            except InvalidStatus:
                if not defect("upgrade_retried_forever"):
                    raise
                # DEFECT(upgrade_retried_forever): a backend refusing the upgrade is asked again, until it agrees.
                await asyncio.sleep(0.1)

    async def release(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2)
        self.upstreams.pop(ws, None)

    # ---- the relay ------------------------------------------------------------------------
    def spawn(self, s: Session, coro: Coroutine[Any, Any, str]) -> asyncio.Task[str]:
        task = asyncio.create_task(coro)
        s.tasks.add(task)
        task.add_done_callback(s.tasks.discard)
        return task

    def count_concurrent_recv(self, exc: ConcurrencyError) -> None:
        self.concurrent_recv += 1
        log.error("concurrent recv on a client socket", exc_info=exc)

    async def forward(self, s: Session, msg: str | bytes) -> str | None:
        up = s.upstream
        assert up is not None
        if defect("resend_filtered"):
            # DEFECT(resend_filtered): a client message the balancer already relayed is taken for a
            # duplicate (its own re-send after a failover, say) and dropped, so a client re-sending
            # after a lost frame is never heard.
            if msg in s.recent:
                return None
            s.recent.append(msg)
        try:
            await up.send(msg)
        except ConnectionClosed:
            s.pending = msg  # re-sent once on the next upstream
            return UPSTREAM_LOST
        s.last_forwarded = msg
        if defect("reply_deadline"):
            # DEFECT(reply_deadline): every message must be answered within REPLY_DEADLINE_S.
            s.reply_dues.append(asyncio.get_running_loop().time() + REPLY_DEADLINE_S)
            s.replies_changed.set()
        if defect("repeated_ack_crashes") and (seq := move_seq(msg, "move")) is not None:
            s.forwarded.add(seq)  # DEFECT(repeated_ack_crashes): every move is expected to be acked once
        for old in list(s.old_upstreams):
            # DEFECT(two_upstreams): client messages also go to the upstream we failed over from.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.send(msg), 0.2)
        return None

    async def client_to_upstream(self, s: Session) -> str:
        try:
            if defect("async_for_shared"):
                # DEFECT(async_for_shared): `async for` reader, while drain_client() also reads.
                async for msg in s.client:
                    if lost := await self.forward(s, msg):
                        return lost
                return CLIENT_CLOSED
            while True:
                msg = await s.client.recv()
                if lost := await self.forward(s, msg):
                    return lost
        except ConnectionClosed as exc:
            if defect("protocol_error_bans_peer") and exc.sent is not None and exc.sent.code in PROTOCOL_ERROR_CODES:
                await self.ban_peer(s)
            return CLIENT_CLOSED
        except ConcurrencyError as exc:  # honest instrumentation, reached only by the mutants
            self.count_concurrent_recv(exc)
            raise

    async def ban_peer(self, s: Session) -> None:
        """protocol_error_bans_peer only: 'a peer that breaks the protocol is hostile'."""
        host = s.client.remote_address[0]
        others = [c for c in self.active_connections.values() if c is not s.client and c.remote_address[0] == host]
        # DEFECT(protocol_error_bans_peer): every other client from the offender's address is closed
        # too, although behind a NAT or a proxy (the harness's lb link) that address is everyone's.
        log.warning("protocol error from %s: closing its %d other connection(s)", host, len(others))
        await asyncio.gather(*(c.close(1008, "peer banned") for c in others), return_exceptions=True)

    async def drain_client(self, s: Session) -> None:
        """async_for_shared only: 'flush what the client sent during the failover'."""
        try:
            # DEFECT(async_for_shared): second recv() on the client; nothing retrieves this task.
            msg = await asyncio.wait_for(s.client.recv(), 0.5)
        except ConcurrencyError:
            self.concurrent_recv += 1  # counted, then left to surface as an unretrieved exception
            raise
        except (TimeoutError, ConnectionClosed):
            return
        await self.forward(s, msg)

    async def upstream_to_client(self, s: Session) -> str:
        up = s.upstream
        assert up is not None
        while True:
            try:
                msg = await up.recv()
            except ConnectionClosed:
                return UPSTREAM_LOST
            s.reply_came()  # reply_deadline only
            if defect("repeated_ack_crashes") and (seq := move_seq(msg, "ack")) is not None:
                # DEFECT(repeated_ack_crashes): a second ack of one move (a repeated frame, a dup) has
                # nothing left to remove: KeyError, the relay task fails, the client is closed 1011.
                s.forwarded.remove(seq)
            try:
                await s.client.send(msg)
            except ConnectionClosed:
                return CLIENT_CLOSED

    async def watchdog(self, s: Session) -> str:
        """two_upstreams only: keepalive that reports an unresponsive upstream but leaves it open."""
        up = s.upstream
        assert up is not None
        while True:
            await asyncio.sleep(self.cfg["ping_interval_s"])
            try:
                await asyncio.wait_for(await up.ping(), self.cfg["ping_timeout_s"])
            except TimeoutError:
                return UNRESPONSIVE
            except ConnectionClosed:
                return UPSTREAM_LOST

    async def reply_watch(self, s: Session) -> str:
        """reply_deadline only: reports a backend reply that is later than REPLY_DEADLINE_S."""
        loop = asyncio.get_running_loop()
        while True:
            s.replies_changed.clear()
            if not s.reply_dues:
                await s.replies_changed.wait()
                continue
            left = s.reply_dues[0] - loop.time()
            if left <= 0:
                return REPLY_OVERDUE
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(s.replies_changed.wait(), left)

    async def discard(self, s: Session, ws: ClientConnection) -> str:
        """two_upstreams only: sole reader of a kept old upstream; its replies are dropped."""
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass
        s.old_upstreams.remove(ws)
        self.upstreams.pop(ws, None)
        return UPSTREAM_LOST

    async def failover(self, s: Session, outcome: str) -> bool:
        assert s.upstream is not None and s.backend is not None
        emit("upstream_lost", session=s.sid, backend=s.backend.name)
        s.backend.down_since = time.monotonic()
        if outcome == UNRESPONSIVE:
            # DEFECT(two_upstreams): the unresponsive upstream is kept "in case it comes back".
            s.old_upstreams.append(s.upstream)
            self.spawn(s, self.discard(s, s.upstream))
        else:
            await self.release(s.upstream)
        self.connection_states[s.sid] = "failing_over"
        s.reply_dues.clear()  # reply_deadline only: what the old upstream owed is not waited for
        now = time.time()  # same clock as the event's ts, so a checker sees what we judged
        # DEFECT(no_rate_limit): every failover is allowed.
        allowed = True if defect("no_rate_limit") else self.reconnect_attempts[s.sid].allow(now)
        emit("failover_attempt", ts=now, session=s.sid, allowed=allowed)
        if not allowed or not await self.open_upstream(s, failover=True):
            await s.client.close(1013, "failover limit" if not allowed else "no backend")
            return False
        self.connection_states[s.sid] = "connected"
        if defect("queued_dropped"):
            # DEFECT(queued_dropped): what the client sent during the failover is thrown away as stale.
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                while True:
                    await asyncio.wait_for(s.client.recv(), 0.005)
        if defect("resent_twice") and s.last_forwarded is not None and s.pending is None:
            # DEFECT(resent_twice): the last message, already delivered, is sent again "to be safe".
            await self.forward(s, s.last_forwarded)
        if s.pending is not None:
            msg, s.pending = s.pending, None
            await self.forward(s, msg)  # a second loss is noticed by the next relay round
        return True

    async def relay(self, s: Session) -> None:
        if not await self.open_upstream(s):
            await s.client.close(1013, "no backend")
            return
        self.connection_states[s.sid] = "connected"
        reader: asyncio.Task[str] | None = None
        failed_over = False
        while True:
            if reader is None or reader.done():
                reader = self.spawn(s, self.client_to_upstream(s))
            # After every failover, whether or not the kept reader is still in recv(): had these
            # waited for that, a client message arriving during the failover (the kept reader then
            # ends on the dead upstream) would hide the defect, as it did under load.
            if failed_over and defect("second_reader"):
                # DEFECT(second_reader): a new reader for the new upstream, the old one still reads.
                asyncio.create_task(self.client_to_upstream(s))  # noqa: RUF006
            elif failed_over and defect("async_for_shared"):
                asyncio.create_task(self.drain_client(s))  # noqa: RUF006  (see drain_client)
            failed_over = False
            watch = {reader, self.spawn(s, self.upstream_to_client(s))}
            if defect("two_upstreams"):
                watch.add(self.spawn(s, self.watchdog(s)))
            if defect("reply_deadline"):
                watch.add(self.spawn(s, self.reply_watch(s)))
            done, pending = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
            # These two mutants keep their client reader across a failover: it forwards to
            # whatever s.upstream is.  That alone is fine; their extra readers are the defects.
            keep = DEFECT in ("second_reader", "async_for_shared")
            for task in pending - ({reader} if keep else set()):
                task.cancel()
            await asyncio.gather(*(pending - ({reader} if keep else set())), return_exceptions=True)
            if not keep or reader.done():
                reader = None
            outcomes = {t.result() if not t.exception() else repr(t.exception()) for t in done}
            if CLIENT_CLOSED in outcomes or s.client.state is not State.OPEN:
                return
            if REPLY_OVERDUE in outcomes:
                # DEFECT(reply_deadline): one late reply ends the session, as a hung backend would.
                await s.client.close(1011, "backend reply timeout")
                return
            if not outcomes <= {UPSTREAM_LOST, UNRESPONSIVE}:
                log.error("relay task failed: %s", outcomes)
                await s.client.close(1011, "internal error")
                return
            up = s.upstream
            assert up is not None
            if up.state is State.OPEN and UNRESPONSIVE not in outcomes:
                # A kept reader reported the loss of an earlier upstream: nothing to fail over.
                if s.pending is not None:
                    msg, s.pending = s.pending, None
                    await self.forward(s, msg)
                continue
            code = up.close_code or 1006
            sent = up.protocol.close_sent
            if defect("upstream_error_bad_gateway") and sent is not None and sent.code in PROTOCOL_ERROR_CODES:
                # DEFECT(upstream_error_bad_gateway): a backend that broke the protocol is reported to the
                # client as 1014 (bad gateway) instead of being treated as lost and failed over.
                await s.client.close(1014, "bad gateway")
                return
            ends = code == 1000 or 4000 <= code <= 4999  # the backend ended the session on purpose
            if defect("backend_close_passed") and up.close_code is not None:
                ends = True  # DEFECT(backend_close_passed): any close frame from a backend reaches the client
            if ends and not defect("close_code_swallowed"):  # DEFECT(close_code_swallowed): fails over
                await s.client.close(code, up.close_reason or "")
                return
            if not await self.failover(s, UNRESPONSIVE if UNRESPONSIVE in outcomes else UPSTREAM_LOST):
                return
            failed_over = True

    async def handle(self, client: ServerConnection) -> None:
        self.open_clients += 1
        self.no_clients.clear()
        try:
            if defect("herd_cold_start") and time.monotonic() - self.started < COLD_START_S:
                # DEFECT(herd_cold_start): while it warms up it admits clients it cannot serve yet
                # and drops them (no close frame: 1006) instead of refusing them with 503.
                client.transport.abort()
                return
            if defect("no_503") and self.open_clients > self.cfg["max_connections"]:
                await client.close(1013, "too many connections")  # DEFECT(no_503): admitted, then closed
                return
            await self.session(client)
        finally:
            self.open_clients -= 1
            if self.open_clients == 0:
                self.no_clients.set()

    async def session(self, client: ServerConnection) -> None:
        assert client.request is not None
        s = Session(f"s{next(self._ids)}", client, client.request.path)
        self.sessions[s.sid], self.active_connections[s.sid] = s, client
        self.connection_states[s.sid] = "connecting"
        f = self.cfg["failover"]
        self.reconnect_attempts[s.sid] = Limiter(
            int(f["max_attempts"]), float(f["window_s"]), float(f["min_interval_s"])
        )
        emit("session_open", session=s.sid, path=s.path)
        try:
            await self.relay(s)
        finally:
            self.connection_states[s.sid] = "closing"
            for task in list(s.tasks):
                task.cancel()
            await asyncio.gather(*s.tasks, return_exceptions=True)
            # DEFECT(upstream_left_open): the upstream stays open (and counted in self.upstreams).
            if s.upstream is not None and not defect("upstream_left_open"):
                await self.release(s.upstream)
            for old in s.old_upstreams:
                await self.release(old)
            if not defect("leaky_tables"):  # DEFECT(leaky_tables): the tables are never cleaned
                for table in (self.sessions, self.active_connections, self.connection_states, self.reconnect_attempts):
                    table.pop(s.sid, None)
            emit("session_close", session=s.sid)


async def first_set(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def drain(bal: Balancer, server: Server, stop: asyncio.Event) -> None:
    """SIGHUP (contract section 8a): stop accepting; live sessions go on until they end, SIGTERM, or
    drain_timeout_s; the caller's shutdown then closes the rest with 1001."""
    bal.draining = True
    if defect("drain_drops_all"):
        # DEFECT(drain_drops_all): every live session is dropped at once, without a close frame (1006).
        for client in list(bal.active_connections.values()):
            client.transport.abort()
        return
    if not defect("drain_keeps_accepting"):  # DEFECT(drain_keeps_accepting): the listener stays open
        server.server.close()  # the listening socket only; server.close() below closes the connections
    if defect("drain_no_wait"):  # DEFECT(drain_no_wait): no drain timeout, live sessions closed at once
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(first_set(stop, bal.no_clients), float(bal.cfg["drain_timeout_s"]))


async def amain(cfg: dict[str, Any]) -> int:
    bal = Balancer(cfg)
    stop = asyncio.Event()
    hangup = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not NO_DRAIN:
        loop.add_signal_handler(signal.SIGHUP, hangup.set)
    admin = None
    if cfg.get("admin") and not BLACK_BOX:  # before `listen`, so /status answers as soon as the build is ready
        admin = await asyncio.start_server(bal.admin, *hostport(cfg["admin"]))
    server = await serve(
        bal.handle,
        *hostport(cfg["listen"]),
        close_timeout=1.0,
        ping_interval=cfg["ping_interval_s"],
        ping_timeout=cfg["ping_timeout_s"],
        # DEFECT(max_size_plus_one): one byte more than max_size is accepted.
        max_size=cfg["max_size"] + 1 if defect("max_size_plus_one") else cfg["max_size"],
        process_request=bal.admit,
        # DEFECT(ping_flood_guard): client connections that fail on a burst of pings.
        create_connection=PingGuardConnection if defect("ping_flood_guard") else None,
    )
    bal.started = time.monotonic()
    await first_set(stop, hangup)
    if not stop.is_set():
        await drain(bal, server, stop)
    server.close()  # closes every client with 1001; their handlers then close the upstreams
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 5)
    if admin is not None:
        admin.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    global DEFECT, BLACK_BOX, NO_DRAIN
    parser = argparse.ArgumentParser(description="minibalancer: a small contract balancer")
    parser.add_argument("--defect", choices=DEFECTS)
    parser.add_argument(
        "--black-box", action="store_true", help="no /status and no event lines: the contract's optional parts off"
    )
    parser.add_argument("--no-drain", action="store_true", help="no SIGHUP drain, none declared in /status")
    parser.add_argument("config")
    args = parser.parse_args(argv)
    DEFECT = args.defect
    BLACK_BOX = args.black_box
    NO_DRAIN = args.no_drain
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        with open(args.config) as fh:
            cfg = json.load(fh)
        hostport(cfg["listen"])
        if not cfg["backends"]:
            raise ValueError("no backends")
        for key in ("max_attempts", "window_s", "min_interval_s"):
            float(cfg["failover"][key])
        cfg.setdefault("ping_interval_s", 1.0)
        cfg.setdefault("ping_timeout_s", 1.0)
        cfg.setdefault("drain_timeout_s", DEFAULT_DRAIN_TIMEOUT_S)
        if isinstance(cfg["drain_timeout_s"], bool) or not isinstance(cfg["drain_timeout_s"], int | float):
            raise ValueError(f"drain_timeout_s: expected a number, got {cfg['drain_timeout_s']!r}")
        if not 0 <= cfg["drain_timeout_s"] < float("inf"):
            raise ValueError(f"drain_timeout_s: expected a finite number >= 0, got {cfg['drain_timeout_s']!r}")
        for key, default in (("max_size", DEFAULT_MAX_SIZE), ("max_connections", DEFAULT_MAX_CONNECTIONS)):
            cfg[key] = cfg.get(key, default)
            if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
                raise ValueError(f"{key}: expected an integer >= 1, got {cfg[key]!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"minibalancer: bad config {args.config}: {exc!r}", file=sys.stderr)
        return 2
    return asyncio.run(amain(cfg))


if __name__ == "__main__":
    sys.exit(main())
