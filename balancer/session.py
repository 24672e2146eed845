"""The relay's I/O: one client connection, one upstream at a time, failover in place.

Every choice (passthrough, failover, 1013, 1001, the resend-once rule) is made
by the session's ``RelayMachine`` (balancer.machine); this module only reads
and writes the sockets, reports what happened to the machine, and carries out
the actions it returns.

Reader discipline: each socket has exactly one reader at any moment. A "leg"
is one upstream connection's lifetime; it runs the two pumps in a TaskGroup
under ``asyncio.wait(FIRST_COMPLETED)`` and cancels the other, and the group
only exits once both pumps have finished. The next leg (and so the next
reader of the client socket and of the new upstream) starts only after that.
Cancelling ``recv()`` is safe in websockets' asyncio implementation: the next
``recv()`` returns the message that was pending.

That is the messages data path. On the frames path (``data_path: "frames"``,
``_frame_leg``) no task reads: each connection's protocol hands its bytes to
its one ``FrameReader`` (balancer.fastpath), which writes data frames to the
other leg and gives control frames to websockets; the leg only waits for a
connection to be lost. Both paths report the same events to the same machine.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConcurrencyError, ConnectionClosed
from websockets.protocol import State
from websockets.typing import Data

from balancer.admission import Admission
from balancer.config import Config
from balancer.events import EventLog, Stats
from balancer.fastpath import FramedConnection, FrameReader, Route, UpstreamConnection, new_mask
from balancer.frames import FrameSplitter
from balancer.machine import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    Action,
    CloseClient,
    CloseUpstream,
    Connect,
    Count,
    Emit,
    Enter,
    MarkDown,
    RelayMachine,
    Resend,
)
from balancer.policy import FailoverLimiter
from balancer.pool import Pool
from balancer.state import ConnState, SessionTable
from balancer.watchdog import SendWatchdog

log = logging.getLogger("balancer.session")


def is_concurrent_recv(exc: BaseException) -> bool:
    # The legacy implementation raises a plain RuntimeError with this text.
    return isinstance(exc, ConcurrencyError) or (
        isinstance(exc, RuntimeError) and "cannot call recv while another coroutine" in str(exc)
    )


class Outcome(enum.Enum):
    CLIENT_GONE = "client_gone"
    UPSTREAM_GONE = "upstream_gone"


@dataclass
class Context:
    """What every session shares; owned by the Balancer."""

    config: Config
    pool: Pool
    table: SessionTable
    events: EventLog
    stats: Stats = field(default_factory=Stats)
    clock: Callable[[], float] = time.monotonic
    stopping: bool = False
    # SIGHUP: no new sessions; live ones go on until drain_timeout_s (then ``stopping``).
    draining: bool = False
    # Client connections accepted whose handshake has not reached their session yet (the
    # Balancer's listener knows; a Context without one has none). Reported, not limited:
    # it shows whether the queue is in front of admission or behind it.
    handshakes_in_flight: Callable[[], int] = lambda: 0
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.config.max_opening, self.clock)


class Session:
    def __init__(
        self,
        sid: str,
        client: ServerConnection,
        ctx: Context,
        on_first_open: Callable[[], None] | None = None,
    ) -> None:
        """``on_first_open`` runs once, when the first upstream open has finished either way
        (admission control counts the client as opening until then)."""
        self.sid = sid
        self._on_first_open = on_first_open
        self.client = client
        self.ctx = ctx
        self.path = client.request.path if client.request is not None else "/"
        fo = ctx.config.failover
        self.machine = RelayMachine(
            list(ctx.pool.backends),
            limiter=lambda: ctx.table.limiter(
                sid, lambda: FailoverLimiter(fo.max_attempts, fo.window_s, fo.min_interval_s)
            ),
        )
        self._upstream: ClientConnection | None = None
        # What the machine asked to deliver first on the current upstream.
        self._resend: Data | None = None
        self._close_code: int | None = None
        # Always finite, also with keepalive disabled: see Config.send_deadline_s.
        self._send_deadline = ctx.config.send_deadline_s
        # The upstream leg compresses only if the client's did: a client that
        # negotiated no compression gains nothing from deflating its messages
        # in between, and the balancer pays for it twice per message.
        self._compression = (
            "deflate" if any(ext.name == "permessage-deflate" for ext in client.protocol.extensions) else None
        )
        # Frames are relayed as they are only when no extension rewrites them
        # on either leg: with none on the client's, the upstream offers none. A
        # client that negotiated compression relays messages, whatever data_path says.
        self._frames = ctx.config.data_path == "frames" and not client.protocol.extensions
        self._client_reader: FrameReader | None = None

    @property
    def backend(self) -> str | None:
        return self.machine.backend

    # -- plumbing -------------------------------------------------------

    def _emit(self, event: str, **fields: object) -> None:
        self.ctx.events.emit(event, session=self.sid, **fields)

    def _state(self, new: ConnState) -> None:
        self.ctx.table.transition(self.sid, new)

    def _note_concurrency(self, exc: BaseException) -> None:
        self.ctx.stats.concurrent_recv += 1
        log.error("session %s: concurrent recv detected: %s", self.sid, exc)
        self._emit("concurrent_recv", error=str(exc))

    async def _carry_out(self, actions: Iterable[Action]) -> None:
        """Carry out the machine's actions in order; results go back in as events."""
        queue: deque[Action] = deque(actions)
        while queue:
            match queue.popleft():
                case Connect(backend):
                    queue.extend(await self._connect(backend))
                case Resend(data):
                    self._resend = data
                case CloseClient(code, reason):
                    await self._close_client(code, reason)
                case CloseUpstream(code, reason):
                    if self._upstream is not None:
                        await self._close(self._upstream, code, reason)
                case MarkDown(backend, why):
                    self.ctx.pool.mark_down(backend, why)
                case Enter(state):
                    self._state(state)
                case Emit() | Count() as note:
                    self._note(note)

    def _note(self, action: Emit | Count) -> None:
        """The machine's actions that only record: an event line or a counter."""
        match action:
            case Emit(event, fields):
                self._emit(event, **fields)
            case Count(stat):
                stats = self.ctx.stats
                setattr(stats, stat, getattr(stats, stat) + 1)

    async def _connect(self, name: str) -> list[Action]:
        """Open the upstream the machine chose; the outcome is the machine's next event."""
        if self.ctx.stopping:
            return self.machine.shutdown()
        if self.client.state is not State.OPEN:
            return self.machine.client_closed(self.client.close_code)
        try:
            try:
                upstream = await self.ctx.pool.connect(name, self.path, compression=self._compression)
            finally:
                self._first_open_done()
        except Exception as exc:
            log.info("session %s: connect to %s failed: %s", self.sid, name, exc)
            self._emit("upstream_connect_failed", backend=name, error=str(exc))
            return self.machine.connect_failed(name, self.ctx.pool.health())
        try:
            self._adopt(name)
        except BaseException:
            # Until _adopt returns, nobody else holds a reference to the new
            # upstream: close it here on every exit path (cancellation too),
            # or it would stay open on the backend.
            await self._discard(upstream)
            raise
        self._upstream = upstream
        return self.machine.upstream_opened(name)

    def _first_open_done(self) -> None:
        done, self._on_first_open = self._on_first_open, None
        if done is not None:
            done()

    def _adopt(self, name: str) -> None:
        """Account for a just-opened upstream; undo any partial step if one raises."""
        ctx = self.ctx
        attached = False
        try:
            ctx.table.attach(self.sid, name)
            attached = True
            ctx.pool.acquire(name)
        except BaseException:
            # The caller closes the upstream, so the tables must not go on
            # counting it (and _cleanup must not release a count never taken).
            if attached:
                ctx.table.detach(self.sid)
            raise

    async def _discard(self, upstream: ClientConnection) -> None:
        """Close an upstream nobody will use; bounded, and it is aborted if closing fails."""
        try:
            await self._close(upstream, CLOSE_GOING_AWAY, "session ended")
        finally:
            # No-op once closed; otherwise (close raised or was cancelled) drop the TCP connection.
            if upstream.state is not State.CLOSED:
                upstream.transport.abort()

    def _drop_upstream(self) -> None:
        name = self.ctx.table.detach(self.sid)
        if name is not None:
            self.ctx.pool.release(name)

    async def _finish(self, conn: ClientConnection | ServerConnection) -> None:
        """Wait for a closing connection to be closed, aborting it past the deadline."""
        try:
            async with asyncio.timeout(self.ctx.config.close_timeout_s + 0.5):
                await conn.wait_closed()
        except TimeoutError:
            conn.transport.abort()

    async def _close(self, conn: ClientConnection | ServerConnection, code: int, reason: str = "") -> None:
        try:
            async with asyncio.timeout(self.ctx.config.close_timeout_s + 0.5):
                await conn.close(code, reason[:120])
        except TimeoutError:
            conn.transport.abort()

    async def _close_client(self, code: int, reason: str) -> None:
        if self._close_code is None and self.client.state is State.OPEN:
            self._close_code = code
        await self._close(self.client, code, reason)

    async def _deliver(self, conn: ClientConnection | ServerConnection, data: Data, watchdog: SendWatchdog) -> bool:
        """Send ``data``; False if ``conn`` is closed or stopped reading.

        websockets' keepalive ping goes through the same flow control as
        ``send()``: once the peer stops reading and the buffers fill, ``ping()``
        itself blocks in ``drain()`` and the ping timeout never starts. So a
        send that outlasts ping_interval + ping_timeout is treated as a dead
        peer here, or a blackholed upstream would hang the session forever.
        With keepalive disabled nothing else would ever notice, so the deadline
        is then derived from close_timeout_s instead (Config.send_deadline_s).
        The deadline is kept by the leg's ``watchdog`` (balancer.watchdog),
        which aborts ``conn`` once a send is overdue. A send blocked in
        websockets' drain returns normally when the transport is aborted (by
        the watchdog or by the upstream keepalive), so a closing transport
        means "not delivered" too, and the message stays due for a resend.
        """
        watchdog.begin()
        try:
            await conn.send(data)
        except ConnectionClosed:
            return False
        finally:
            watchdog.end()
        return not (watchdog.stalled or conn.transport.is_closing())

    def _watchdog(self, conn: ClientConnection | ServerConnection) -> SendWatchdog:
        leg = "client" if conn is self.client else "upstream"

        def stalled() -> None:
            log.warning("session %s: %s stopped reading; aborting it", self.sid, leg)
            self._emit("send_stalled", leg=leg, backend=self.backend)
            conn.transport.abort()

        return SendWatchdog(asyncio.get_running_loop(), self._send_deadline, stalled)

    # -- the two directions ---------------------------------------------

    async def _pump_client(self, upstream: ClientConnection, resend: Data | None, to_upstream: SendWatchdog) -> Outcome:
        machine = self.machine
        if resend is not None:
            if not await self._deliver(upstream, resend, to_upstream):
                return Outcome.UPSTREAM_GONE
            await self._carry_out(machine.message_delivered())
        while True:
            try:
                data = await self.client.recv()
            except ConnectionClosed:
                return Outcome.CLIENT_GONE
            except RuntimeError as exc:
                if is_concurrent_recv(exc):
                    self._note_concurrency(exc)
                raise
            machine.client_message(data)
            if not await self._deliver(upstream, data, to_upstream):
                return Outcome.UPSTREAM_GONE
            if actions := machine.message_delivered():
                await self._carry_out(actions)

    async def _pump_upstream(self, upstream: ClientConnection, to_client: SendWatchdog) -> Outcome:
        while True:
            try:
                data = await upstream.recv()
            except ConnectionClosed:
                return Outcome.UPSTREAM_GONE
            except RuntimeError as exc:
                if is_concurrent_recv(exc):
                    self._note_concurrency(exc)
                raise
            if not await self._deliver(self.client, data, to_client):
                return Outcome.CLIENT_GONE

    async def _keepalive(
        self, conn: ClientConnection | ServerConnection, on_timeout: Callable[[], Awaitable[None]]
    ) -> None:
        """One leg's keepalive (websockets' own is off on both legs; see below).

        Two differences from websockets' keepalive, both about not blaming a
        peer for the balancer's own state:
        - A pong is not judged while reading ``conn`` is paused: websockets
          stops reading a socket once 16 messages wait unread, which happens
          whenever the pump that reads it is blocked (sending to the other
          leg, or between legs during a failover), and the peer's pong is then
          sitting unread. Under load that closed clients with 1011 right after
          a successful failover. The judgement resumes once reading does; the
          pause itself is bounded by the send deadline and open_timeout_s.
        - ``on_timeout`` acts at once: the upstream leg is aborted instead of
          waiting close_timeout_s for the closing handshake of a peer presumed
          dead, so a blackholed backend is noticed within ping_interval +
          ping_timeout, and its loss looks as before (no close frame, 1006).
        - A pong already in the socket when the deadline passes counts: the
          loop gets one more turn to read it (a starved loop is late, not the peer).
        A ping stuck behind a full send buffer counts as missed.
        """
        cfg = self.ctx.config
        while True:
            await asyncio.sleep(cfg.ping_interval_s)
            try:
                if cfg.ping_timeout_s <= 0:
                    await conn.ping()
                    continue
                async with asyncio.timeout(cfg.ping_timeout_s):
                    # A Future already; ensure_future only gives it its type.
                    pong = asyncio.ensure_future(await conn.ping())
                while True:
                    try:
                        async with asyncio.timeout(cfg.ping_timeout_s):
                            await asyncio.shield(pong)
                        break
                    except TimeoutError:
                        # The deadline is about the peer, not about this loop: a
                        # busy loop runs expired timers before it reads sockets,
                        # so let it read once more before judging.
                        await asyncio.sleep(0)
                        if pong.done():
                            break
                        if conn.transport.is_reading():
                            raise
            except ConnectionClosed:
                return
            except TimeoutError:
                await on_timeout()
                return

    async def _upstream_ping_timeout(self, upstream: ClientConnection) -> None:
        log.info("session %s: upstream keepalive ping timeout; aborting it", self.sid)
        upstream.transport.abort()

    async def _client_ping_timeout(self) -> None:
        # What websockets' keepalive did on this leg: close 1011.
        await self._close_client(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")

    def _start_keepalives(self, tg: asyncio.TaskGroup, upstream: ClientConnection) -> list[asyncio.Task[None]]:
        if self.ctx.config.ping_interval_s <= 0:
            return []
        return [
            tg.create_task(
                self._keepalive(upstream, lambda: self._upstream_ping_timeout(upstream)),
                name=f"{self.sid}:ping-upstream",
            ),
            tg.create_task(self._keepalive(self.client, self._client_ping_timeout), name=f"{self.sid}:ping-client"),
        ]

    async def _leg(self, upstream: ClientConnection, resend: Data | None) -> Outcome:
        if self._frames:
            assert isinstance(upstream, UpstreamConnection) and not isinstance(resend, str)
            return await self._frame_leg(upstream, resend)
        to_upstream, to_client = self._watchdog(upstream), self._watchdog(self.client)
        try:
            async with asyncio.TaskGroup() as tg:
                c2u = tg.create_task(self._pump_client(upstream, resend, to_upstream), name=f"{self.sid}:c2u")
                u2c = tg.create_task(self._pump_upstream(upstream, to_client), name=f"{self.sid}:u2c")
                keepalives = self._start_keepalives(tg, upstream)
                done, pending = await asyncio.wait({c2u, u2c}, return_when=asyncio.FIRST_COMPLETED)
                for task in [*pending, *keepalives]:
                    task.cancel()
        finally:
            to_upstream.cancel()
            to_client.cancel()
        outcomes = {t.result() for t in done}
        if Outcome.CLIENT_GONE in outcomes or self.client.state is not State.OPEN:
            return Outcome.CLIENT_GONE
        return Outcome.UPSTREAM_GONE

    async def _frame_leg(self, upstream: UpstreamConnection, resend: bytes | None) -> Outcome:
        """One leg on the frames data path (balancer.fastpath).

        No pump tasks: each connection's FrameReader, called from the protocol,
        writes to the other leg. The leg ends when either connection is lost
        (a pump of the messages path ends at that point too: recv() raises once
        the connection is closed), or when a reader meets an unexpected error.
        """
        client = self.client
        assert isinstance(client, FramedConnection)
        loop = asyncio.get_running_loop()
        failure: asyncio.Future[None] = loop.create_future()

        def fail(exc: BaseException) -> None:
            if not failure.done():
                failure.set_exception(exc)

        if self._client_reader is None:
            # The client's reader lives as long as the session: messages it holds
            # while no upstream is attached wait for the next one.
            self._client_reader = FrameReader(
                client, FrameSplitter(masked=True, new_mask=new_mask, max_size=self.ctx.config.max_size), fail
            )
        client_reader = self._client_reader
        client_reader.set_on_error(fail)
        upstream_reader = FrameReader(upstream, FrameSplitter(masked=False, new_mask=None, max_size=None), fail)
        to_upstream, to_client = self._watchdog(upstream), self._watchdog(client)
        machine = self.machine
        c2u = Route(upstream, to_upstream, on_message=machine.client_message, on_delivered=self._delivered)
        u2c = Route(client, to_client)
        try:
            if resend is not None:
                client_reader.resend(resend)
            client_reader.connect(c2u)
            upstream_reader.connect(u2c)
            upstream_reader.try_attach()
            client_reader.try_attach()
            async with asyncio.TaskGroup() as tg:
                keepalives = self._start_keepalives(tg, upstream)
                await asyncio.wait(
                    {client.connection_lost_waiter, upstream.connection_lost_waiter, failure},
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in keepalives:
                    task.cancel()
        finally:
            client_reader.disconnect()
            upstream_reader.disconnect()
            client_reader.forget_resends()
            # Nobody awaits this leg's failure any more: a reader error from here on
            # (both still read: the client between legs, the upstream while it closes)
            # is logged and drops that connection.
            client_reader.set_on_error(self._reader_failed(client))
            upstream_reader.set_on_error(self._reader_failed(upstream))
            to_upstream.cancel()
            to_client.cancel()
        if failure.done():
            failure.result()  # an unexpected error in a reader: the session ends with 1011
        if client.state is not State.OPEN:
            return Outcome.CLIENT_GONE
        return Outcome.UPSTREAM_GONE

    def _reader_failed(self, conn: FramedConnection) -> Callable[[BaseException], None]:
        def failed(exc: BaseException) -> None:
            log.error("session %s: frame reader failed outside a leg; dropping the connection", self.sid, exc_info=exc)
            conn.transport.abort()

        return failed

    def _delivered(self) -> None:
        """The client message in flight was written to the upstream (frames data path)."""
        for action in self.machine.message_delivered():
            # The machine answers a delivery with these only; the others need awaiting.
            assert isinstance(action, Emit | Count), action
            self._note(action)

    # -- the session ----------------------------------------------------

    async def run(self) -> None:
        ctx = self.ctx
        ctx.table.register(self.sid, self.path)
        ctx.stats.sessions_total += 1
        self._emit("session_open", path=self.path)
        try:
            await self._carry_out(self.machine.start(ctx.pool.health()))
            while not self.machine.finished:
                upstream = self._upstream
                assert upstream is not None, "the machine relays only with an upstream attached"
                # Taken here so that a leg which never got to it can't leave it for the next.
                resend, self._resend = self._resend, None
                outcome = await self._leg(upstream, resend)
                if outcome is Outcome.CLIENT_GONE:
                    await self._carry_out(self.machine.client_closed(self.client.close_code))
                else:
                    await self._carry_out(await self._upstream_lost(upstream))
        except Exception:
            log.exception("session %s failed", self.sid)
            if self.client.state is State.OPEN:
                await self._close_client(CLOSE_INTERNAL_ERROR, "balancer error")
        finally:
            await self._cleanup()

    async def _upstream_lost(self, upstream: ClientConnection) -> list[Action]:
        """Let the lost upstream finish closing, release it, and ask the machine what next."""
        ctx = self.ctx
        await self._finish(upstream)
        self._upstream = None
        self._drop_upstream()
        actions = self.machine.shutdown() if ctx.stopping else []
        return actions + self.machine.upstream_lost(
            upstream.close_code,
            upstream.close_reason or "",
            now=ctx.clock(),
            health=ctx.pool.health(),
            client_open=self.client.state is State.OPEN,
        )

    async def _cleanup(self) -> None:
        """Runs on every exit path; it is bounded and must not raise.

        Both legs are closed concurrently, so the whole cleanup takes at most
        one close (close_timeout_s + 0.5 s). Balancer.shutdown relies on that
        bound when it waits for the sessions it had to cancel.
        """
        ctx = self.ctx
        try:
            st = ctx.table.states.get(self.sid)
            if st is not None and st.state not in (ConnState.CLOSING, ConnState.CLOSED):
                st.transition(ConnState.CLOSING)
            closes = []
            upstream = self._upstream
            if upstream is not None and upstream.state is not State.CLOSED:
                closes.append(self._close(upstream, CLOSE_GOING_AWAY, "session ended"))
            if self.client.state is State.OPEN:
                closes.append(self._close_client(CLOSE_GOING_AWAY, "session ended"))
            elif self.client.state is not State.CLOSED:
                closes.append(self._finish(self.client))
            results = await asyncio.gather(*closes, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.error("session %s: cleanup error", self.sid, exc_info=result)
        except Exception:
            log.exception("session %s: cleanup error", self.sid)
        finally:
            self._drop_upstream_quietly()
            ctx.table.remove(self.sid)
            code = self._close_code
            if code is None:
                code = self._client_got()
            self._emit("session_close", code=code)

    def _client_got(self) -> int:
        """The close code the client got when the library closed it (a protocol error, 1009...):
        the code of the close frame we sent; ``close_code`` would be the one we received."""
        sent = self.client.protocol.close_sent
        if sent is not None:
            return int(sent.code)
        return self.client.close_code or CLOSE_ABNORMAL

    def _drop_upstream_quietly(self) -> None:
        try:
            self._drop_upstream()
        except Exception:
            log.exception("session %s: detach failed", self.sid)
