"""Wiring: the client-facing WebSocket server, the admin server, health checks
and graceful shutdown. Everything long-lived is owned by ``Balancer.run``'s
TaskGroup; each client session is owned by its websockets handler task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from balancer.admin import AdminServer
from balancer.admission import RETRY_AFTER_S
from balancer.config import Address, Config
from balancer.events import EventLog
from balancer.fastpath import FramedConnection
from balancer.pool import Pool, is_origin_form
from balancer.session import Context, Session
from balancer.state import SessionTable

log = logging.getLogger("balancer.server")

# asyncio's default accept queue is 100. A burst of connects beyond it (a reconnect
# storm, or a flood past max_connections) has its SYNs dropped, and each client then
# waits out TCP's 1 s, 3 s, 7 s... retransmits before it even gets its 503. The
# kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 4096


# How much unsent output a client may leave unread before the balancer stops reading it.
# Relayed messages never get near it (send() waits for the buffer to drain below
# websockets' 32 KiB write limit), except a single larger message; so it only bites on
# automatic replies, which bypass that limit.
UNREAD_OUTPUT_LIMIT = 2**20


class ClientFacingConnection(FramedConnection, ServerConnection):
    """A client connection that stops reading while the replies it provoked pile up unread.

    websockets writes its automatic replies (a pong for each ping, the close echo) straight
    to the transport, and its flow control only holds back send(): a client that sends
    pings and never reads would grow the write buffer without bound. So once the unsent
    output passes UNREAD_OUTPUT_LIMIT, reading pauses until the client has drained it (down
    to the transport's low-water mark); the client then meets TCP backpressure instead of
    the balancer buffering for it. websockets also pauses reading while its receive queue is
    full (and the frames data path while its own is); reading resumes only when no reason
    holds (FramedConnection).
    """

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.get_write_buffer_size() > UNREAD_OUTPUT_LIMIT:
            # Past the high-water mark too, so resume_writing() follows once it drains.
            self._block_reading("output unread")

    def resume_writing(self) -> None:
        self._unblock_reading("output unread")
        super().resume_writing()

    # Admission control's hold on this client (balancer.admission): taken when its handshake is
    # admitted, given back once its first upstream open has finished, or when the connection is
    # lost before that (a handshake that never completed has no session to do it).
    _admission_release: Callable[[], None] | None = None
    _lost = False

    def hold_admission(self, release: Callable[[], None]) -> None:
        if self._lost:
            # A client that sent its request and went away at once: connection_lost has run
            # before the handshake got to process_request, so nothing would give this back.
            release()
            return
        self._admission_release = release

    def release_admission(self) -> None:
        release, self._admission_release = self._admission_release, None
        if release is not None:
            release()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.release_admission()
        super().connection_lost(exc)


async def _first_set(*events: asyncio.Event) -> None:
    """Returns once any of ``events`` is set."""
    async with asyncio.TaskGroup() as tg:
        waits = [tg.create_task(e.wait()) for e in events]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()


class BindError(OSError):
    """A listen or admin address could not be bound (reported as a config error)."""


class Balancer:
    def __init__(self, config: Config, events: EventLog | None = None) -> None:
        self.config = config
        events = events or EventLog()
        self.ctx = Context(config=config, pool=Pool(config, events), table=SessionTable(), events=events)
        self.admin = AdminServer(self.ctx)
        self._ws: Server | None = None
        self._ids = itertools.count(1)
        self._running_sessions = 0
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        # Session ids must be unique across restarts that share a log.
        self._prefix = f"{os.getpid():x}"

    @property
    def port(self) -> int:
        assert self._ws is not None
        return int(self._ws.sockets[0].getsockname()[1])

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.ctx.stopping:
            return conn.respond(503, "shutting down\n")
        if self.ctx.draining:
            # Accepted by the kernel just before the listener closed: refused like a late handshake.
            return conn.respond(503, "draining\n")
        if not is_origin_form(request.path):
            # An absolute URI or any other non-path target could otherwise steer the
            # upstream connection (see Backend.target); backends come from config only.
            return conn.respond(400, "the request target must be a path, e.g. /play?room=1\n")
        # Running sessions only; a handshake racing this check can overshoot by
        # the number of handshakes in flight, which is bounded by the backlog.
        # Not len(Server.connections): that builds a set of every connection,
        # handshakes included, on each call, so opening or refusing N sessions
        # would cost O(N^2).
        if self._running_sessions >= self.config.max_connections:
            return conn.respond(503, "too many connections\n")
        # Last, so that max_connections keeps its own 503 and meaning.
        admission = self.ctx.admission
        if not admission.try_admit():
            if (report := admission.report_due()) is not None:
                self.ctx.events.emit(
                    "load_shed",
                    refused=report.refused,
                    refused_total=report.refused_total,
                    opening=report.opening,
                    max_opening=report.limit,
                )
            refusal = conn.respond(503, "busy: too many clients connecting, retry later\n")
            refusal.headers["Retry-After"] = str(RETRY_AFTER_S)
            return refusal
        assert isinstance(conn, ClientFacingConnection), "serve() is given create_connection=ClientFacingConnection"
        conn.hold_admission(admission.release)
        return None

    async def _handler(self, conn: ServerConnection) -> None:
        sid = f"{self._prefix}-{next(self._ids)}"
        self._running_sessions += 1
        self._no_sessions.clear()
        assert isinstance(conn, ClientFacingConnection)
        try:
            await Session(sid, conn, self.ctx, on_first_open=conn.release_admission).run()
        finally:
            conn.release_admission()
            self._running_sessions -= 1
            if self._running_sessions == 0:
                self._no_sessions.set()

    async def start(self) -> None:
        """Bind admin first, then listen, so "listen accepts TCP" implies admin is up."""
        cfg = self.config
        if cfg.admin is not None:
            try:
                await self.admin.start(cfg.admin.host, cfg.admin.port)
            except OSError as exc:
                raise BindError(exc.errno, f"admin {cfg.admin}: {exc.strerror or exc}") from None
        try:
            self._ws = await serve(
                self._handler,
                cfg.listen.host,
                cfg.listen.port,
                process_request=self._process_request,
                create_connection=ClientFacingConnection,
                open_timeout=cfg.open_timeout_s,  # > 0 by config: a stalled handshake must end
                # Each session runs its legs' keepalive (Session._keepalive).
                ping_interval=None,
                ping_timeout=None,
                close_timeout=cfg.close_timeout_s,
                max_size=cfg.max_size,
                # A client that offers permessage-deflate gets it: declining would cost
                # every browser its compression. Its session then relays messages (a
                # compressed leg cannot pass frames through); a client that offers none
                # takes the frames path (Session._frames).
                compression="deflate",
                backlog=LISTEN_BACKLOG,
            )
        except OSError as exc:
            await self.admin.close()
            raise BindError(exc.errno, f"listen {cfg.listen}: {exc.strerror or exc}") from None
        ws = self._ws
        # Every accepted connection has a handler task from accept on; the running sessions are the
        # ones past their handshake. len() of a set is O(1), unlike Server.connections.
        self.ctx.handshakes_in_flight = lambda: max(0, len(ws.handler_tasks) - self._running_sessions)
        log.info("listening on %s, admin on %s", cfg.listen, cfg.admin or "(none)")
        if cfg.admin_unguarded:
            log.warning("admin endpoint %s is reachable from other hosts and has no admin_token", cfg.admin)
        self.ctx.events.emit(
            "balancer_ready",
            listen=str(Address(cfg.listen.host, self.port)),
            admin=str(Address(cfg.admin.host, self.admin.port)) if cfg.admin else None,
            pid=os.getpid(),
        )

    async def run(self, stop: asyncio.Event, drain: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set, then shut down within the close timeout.

        ``drain`` set first (SIGHUP) drains instead: see :meth:`drain`, then the same shutdown.
        """
        if self._ws is None:
            await self.start()
        assert self._ws is not None
        async with asyncio.TaskGroup() as tg:
            # Health checks go on while draining: a live session may still have to fail over.
            health = tg.create_task(self.ctx.pool.run_health_checks(), name="health")
            await _first_set(stop, *([drain] if drain is not None else []))
            if not stop.is_set():
                await self.drain(stop)
            health.cancel()
            await self.shutdown()

    async def drain(self, stop: asyncio.Event) -> None:
        """Stop accepting, then let live sessions go on until they end by themselves, ``stop`` is
        set, or ``drain_timeout_s`` has passed; :meth:`shutdown` then closes the rest with 1001."""
        assert self._ws is not None
        self.ctx.draining = True
        # The listening socket only: websockets' Server.close() runs once, and shutdown() needs it
        # to close the remaining connections.
        self._ws.server.close()
        timeout = self.config.drain_timeout_s
        log.info("draining: %d live session(s), at most %.1f s", self._running_sessions, timeout)
        self.ctx.events.emit("drain_started", sessions=self._running_sessions, drain_timeout_s=timeout)
        try:
            async with asyncio.timeout(timeout):
                await _first_set(stop, self._no_sessions)
        except TimeoutError:
            pass
        self.ctx.events.emit("drain_ended", sessions=self._running_sessions)

    async def shutdown(self) -> None:
        ws = self._ws
        self.ctx.stopping = True
        log.info("shutting down: closing client connections with 1001")
        if ws is not None:
            # Stops accepting, answers pending handshakes with 503 and closes
            # open client connections with 1001; sessions then close upstreams.
            ws.close(close_connections=True)
            try:
                async with asyncio.timeout(self.config.close_timeout_s + 0.5):
                    await ws.wait_closed()
            except TimeoutError:
                log.warning("shutdown deadline passed; cancelling remaining sessions")
                for task in list(ws.handler_tasks):
                    task.cancel()
                # A cancelled session still runs Session._cleanup, which closes
                # both legs concurrently within close_timeout_s + 0.5 s; the
                # extra 0.5 s covers websockets' own close after the handler.
                # Waiting less would report sessions that are still cleaning
                # up; waiting unbounded could hang the exit (docs/contract.md,
                # section 8, states the resulting worst case).
                try:
                    async with asyncio.timeout(self.config.close_timeout_s + 1.0):
                        await ws.wait_closed()
                except TimeoutError:
                    log.warning("sessions still closing after cancellation; exiting anyway")
        await self.admin.close()
        self.ctx.events.emit("balancer_stopped", sessions=len(self.ctx.table.active))
