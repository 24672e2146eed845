"""Wiring: the client-facing WebSocket server, the admin server, health checks
and graceful shutdown. Everything long-lived is owned by ``Balancer.run``'s
TaskGroup; each client session is owned by its websockets handler task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from balancer.admin import AdminServer
from balancer.config import Address, Config
from balancer.events import EventLog
from balancer.pool import Pool
from balancer.session import Context, Session
from balancer.state import SessionTable

log = logging.getLogger("balancer.server")


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
        # Session ids must be unique across restarts that share a log.
        self._prefix = f"{os.getpid():x}"

    @property
    def port(self) -> int:
        assert self._ws is not None
        return int(self._ws.sockets[0].getsockname()[1])

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.ctx.stopping:
            return conn.respond(503, "shutting down\n")
        # Open sessions only; a handshake racing this check can overshoot by
        # the number of handshakes in flight, which is bounded by the backlog.
        # The session table's count is O(1); websockets' Server.connections
        # builds a set of every connection, which made opening N sessions O(N^2).
        if len(self.ctx.table.active) >= self.config.max_connections:
            return conn.respond(503, "too many connections\n")
        return None

    async def _handler(self, conn: ServerConnection) -> None:
        sid = f"{self._prefix}-{next(self._ids)}"
        await Session(sid, conn, self.ctx).run()

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
                open_timeout=cfg.open_timeout_s,  # > 0 by config: a stalled handshake must end
                # Each session runs its legs' keepalive (Session._keepalive).
                ping_interval=None,
                ping_timeout=None,
                close_timeout=cfg.close_timeout_s,
                max_size=cfg.max_size,
            )
        except OSError as exc:
            await self.admin.close()
            raise BindError(exc.errno, f"listen {cfg.listen}: {exc.strerror or exc}") from None
        log.info("listening on %s, admin on %s", cfg.listen, cfg.admin or "(none)")
        self.ctx.events.emit(
            "balancer_ready",
            listen=str(Address(cfg.listen.host, self.port)),
            admin=str(Address(cfg.admin.host, self.admin.port)) if cfg.admin else None,
            pid=os.getpid(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down within the close timeout."""
        if self._ws is None:
            await self.start()
        assert self._ws is not None
        async with asyncio.TaskGroup() as tg:
            health = tg.create_task(self.ctx.pool.run_health_checks(), name="health")
            await stop.wait()
            health.cancel()
            await self.shutdown()

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
