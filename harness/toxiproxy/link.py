"""The data path: one Connection per accepted client, two Links per connection.

Upstream link = client → server, downstream link = server → client. Each link feeds
what its source socket reads through its toxic stages into its destination socket.

Close semantics follow Toxiproxy: when a link's chain ends (source EOF, or a toxic
closing it) the destination is fully closed (half-close is not propagated), and the
other link then sees its own source end and closes the remaining socket.

Aimed toxics (an extension, ``extensions.Aim``) need to know whose connection this is: the
upstream link reads the first request line on its way through (``?client=ID`` of a WebSocket
upgrade). Triggered toxics (``extensions.Trigger``) wait for the upgrade: the downstream link
reads the first response head on its way through; or for N data frames: their
:class:`FrameCounter` pass-through parses its own stream (only while it waits). Until its
connection qualifies, an extension toxic is a :class:`Dormant` pass-through; each such event
wakes the ones that now act.

Performance: with no toxics on a link, the source protocol's sink is the destination
transport's ``write``, so a chunk crosses the proxy through one Python frame of ours; the
server runs on uvloop when it is installed. Flow control pauses the source while the destination's
write buffer, or data held by toxics, is above its high-water mark.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any, Protocol, cast

from .extensions import REQUEST_LINE_LIMIT, RESPONSE_HEAD_LIMIT, client_id_of, is_upgrade
from .toxic_spec import DOWNSTREAM, UPSTREAM, ToxicSpec
from .toxics import Sink, Stage, StageHost, Timer, make_stage
from .ws_toxics import WS_STAGES  # noqa: F401  importing it registers the frame-aware stages
from .wsframes import Frame, FrameParser

log = logging.getLogger("harness.toxiproxy")

# Bytes a link's toxics may hold (latency, bandwidth, slicer queues) before the source
# is paused. Large enough that latency does not throttle a fast stream (100 MB/s x 100 ms
# needs ~10 MB in flight), small enough that a stalled link cannot eat memory.
HOLD_HIGH = 16 * 1024 * 1024
HOLD_LOW = HOLD_HIGH // 2
# asyncio's default 64 KiB write high-water mark pauses bulk transfers too eagerly.
WRITE_HIGH = 1024 * 1024
# A graceful close waits for the write buffer to drain; a peer that never reads must not
# keep the connection (and its sockets) alive for ever.
CLOSE_DEADLINE = 30.0
DIAL_TIMEOUT = 30.0
READ_SIZE = 64 * 1024


class ConnectionOwner(Protocol):
    """What a connection needs of its proxy (``proxy.Proxy``)."""

    name: str
    upstream: str
    # Toxics per direction (index: UPSTREAM / DOWNSTREAM), as new links start with them.
    chains: tuple[list[ToxicSpec], list[ToxicSpec]]
    conns: set[Connection]

    async def dial(self, side: Side) -> None: ...

    def next_ordinal(self) -> int:
        """A number for a new connection, increasing in accept order."""
        ...


_LINGER_ZERO = struct.pack("ii", 1, 0)


def set_linger_zero(sock: Any) -> None:
    """Make the next close send RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    except OSError:
        pass


class Dormant(Stage):
    """The pass-through an aimed or triggered toxic is on a connection where it does not (yet) act."""

    __slots__ = ()


class FrameCounter(Dormant):
    """The pass-through of a toxic triggered after N data frames: it counts them as they cross.

    When the Nth data frame has passed, the chunk is cut right behind it: the bytes up to its
    end go on untouched, the rest is handed to the woken toxic (as held data, through
    :meth:`drain`), so the toxic acts from the very next byte.
    """

    __slots__ = ("counted", "parser", "rest", "seen", "spent")

    def __init__(
        self, host: StageHost, spec: ToxicSpec, nxt: Sink, *, upstream: bool, counted: Callable[[FrameCounter], None]
    ) -> None:
        super().__init__(host, spec, nxt)
        self.parser = FrameParser(expect_masked=upstream)
        # Told once the Nth data frame has passed (the link wakes the toxic), the rest in ``rest``.
        self.counted = counted
        self.seen = 0
        self.rest: list[tuple[bytes, float]] = []
        # The count was reached but the toxic is aimed elsewhere: stop parsing.
        self.spent = False

    def push(self, data: bytes, ts: float) -> None:
        if self.closed:
            return
        trigger = self.spec.extras.trigger
        if self.spent or trigger is None or trigger.frames is None:
            self.next.push(data, ts)
            return
        held_before = self.parser.buffered
        end = 0
        cut: int | None = None
        for event in self.parser.feed(data):
            end += len(event.raw)
            if isinstance(event, Frame) and event.is_data:
                self.seen += 1
                if self.seen >= trigger.frames:
                    # Bytes held by the parser before this chunk were already passed on.
                    cut = end - held_before
                    break
        if cut is None:
            self.next.push(data, ts)
            return
        if cut > 0:
            self.next.push(data[:cut], ts)
        if cut < len(data):
            self.rest.append((data[cut:], ts))
        self.counted(self)

    def drain(self) -> tuple[list[tuple[bytes, float]], bool]:
        rest, self.rest = self.rest, []
        return rest, False

    def carry(self, old: Stage) -> None:
        super().carry(old)
        if isinstance(old, FrameCounter):
            self.parser, self.seen, self.spent = old.parser, old.seen, old.spent


def _drop(data: bytes) -> None:
    """data_received after a link has ended: Toxiproxy discards it too."""


class Side(asyncio.Protocol):
    """Protocol for one socket of a proxied connection (client or upstream)."""

    def __init__(self, conn: Connection, name: str) -> None:
        self.conn = conn
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.sock: Any = None
        self.lost = False
        # Link reading from this socket and link writing to it; set when both are up.
        self.out_link: Link | None = None
        self.in_link: Link | None = None
        # Where received bytes go; rebound as toxics come and go (see module doc). Until the
        # links exist, bytes are kept: uvloop may deliver a first read even though reading
        # was paused in connection_made.
        self.early: list[bytes] = []
        self.sink: Callable[[bytes], None] = self.early.append
        # An EOF that came before the links existed: the link reading this side replays it
        # after the early bytes, or the other end would wait for ever.
        self.early_eof = False

    def data_received(self, data: bytes) -> None:
        # A real method rather than a rebound attribute: uvloop looks data_received up
        # once per transport, so rebinding the attribute itself would be ignored there.
        self.sink(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.sock = transport.get_extra_info("socket")
        if self.sock is not None:
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)
        # asyncio reads up to 256 KiB per recv(); allocating (and trimming) a buffer that
        # size for every 64-byte message costs more than the proxying itself. 64 KiB keeps
        # bulk throughput and halves the small round-trip time (docs/performance.md).
        if hasattr(transport, "max_size"):
            transport.max_size = READ_SIZE  # the standard loop's selector transport only
        self.conn.side_made(self)

    def eof_received(self) -> bool:
        if self.out_link is not None:
            self.out_link.source_eof()
        else:
            self.early_eof = True
        # Keep the socket open: it is still the destination of the other link, which
        # closes it when that link ends (Toxiproxy does not propagate half-close).
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.side_lost(self)

    def pause_writing(self) -> None:
        if self.in_link is not None:
            self.in_link.set_dest_paused(True)

    def resume_writing(self) -> None:
        if self.in_link is not None:
            self.in_link.set_dest_paused(False)


class _Writer:
    """End of a link's chain: writes to the destination socket."""

    __slots__ = ("link",)

    def __init__(self, link: Link) -> None:
        self.link = link

    def push(self, data: bytes, ts: float) -> None:
        link = self.link
        if not link.finished and not link.dst.lost and not link.silenced and not link.awaiting_reset:
            assert link.dst.transport is not None
            link.dst.transport.write(data)

    def eof(self) -> None:
        self.link.finish()


class Link:
    """One direction of one connection; the :class:`toxics.StageHost` of its stages."""

    def __init__(self, conn: Connection, direction: int, src: Side, dst: Side) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.direction = direction
        self.src = src
        self.dst = dst
        self.writer = _Writer(self)
        self.stages: list[Stage] = []
        self.head: Sink = self.writer
        self.finished = False
        self.source_done = False
        self.held = 0
        self.dest_paused = False
        self.src_paused = False
        # Silenced by an idle_timeout: everything is dropped, nothing closed.
        self.silenced = False
        # A reset_peer fired here: nothing more crosses this way before the reset (reset_peer_after).
        self.awaiting_reset = False
        # Whether any byte has crossed; every first chunk goes through _pass (module doc).
        self.started = False
        # The upstream link reads the first request line for the client id (module doc).
        self.request_line: bytearray | None = bytearray() if direction == UPSTREAM else None
        # The downstream link reads the first response head for an upgrade (module doc).
        self.response_head: bytearray | None = bytearray() if direction == DOWNSTREAM else None
        src.out_link = self
        dst.in_link = self

    def _make(self, spec: ToxicSpec, nxt: Sink) -> Stage:
        """The stage ``spec`` gets on this link: a pass-through when it is aimed elsewhere."""
        if not self.conn.acts(spec):
            trigger = spec.extras.trigger
            if trigger is not None and trigger.frames is not None:
                return FrameCounter(self, spec, nxt, upstream=self.direction == UPSTREAM, counted=self.frames_crossed)
            return Dormant(self, spec, nxt)
        return make_stage(self, spec, nxt)

    def start(self, specs: list[ToxicSpec]) -> None:
        nxt: Sink = self.writer
        for spec in reversed(specs):
            nxt = self._make(spec, nxt)
            self.stages.insert(0, nxt)
        self.head = nxt
        self._rebind()
        early, self.src.early = self.src.early, []
        for data in early:
            self.src.sink(data)

    def _rebind(self) -> None:
        if self.finished or self.source_done or self.silenced or self.awaiting_reset:
            self.src.sink = _drop
        elif self.request_line is not None:
            self.src.sink = self._read_request_line
        elif self.response_head is not None:
            self.src.sink = self._read_response_head
        elif not self.stages:
            assert self.dst.transport is not None
            self.src.sink = self.dst.transport.write
        else:
            self.src.sink = self._feed

    def _feed(self, data: bytes) -> None:
        self.head.push(data, self.loop.time())

    def _read_request_line(self, data: bytes) -> None:
        """Pass ``data`` on; once the first line is complete, identify the connection first."""
        line = self.request_line
        assert line is not None
        line += data
        end = line.find(b"\n")
        if end >= 0 or len(line) >= REQUEST_LINE_LIMIT:
            self.request_line = None
            self._rebind()
            self.conn.identify(client_id_of(bytes(line[: end if end >= 0 else REQUEST_LINE_LIMIT])))
        # Never held back for the line: a protocol that sends less and waits must not stall.
        self._pass(data)

    def _read_response_head(self, data: bytes) -> None:
        """Pass ``data`` on; once the first response head is complete, tell the connection if it upgraded."""
        head = self.response_head
        assert head is not None
        head += data
        end = head.find(b"\r\n\r\n")
        self._pass(data)  # the head itself crosses as it was: a trigger acts from the next byte on
        if end >= 0 or len(head) >= RESPONSE_HEAD_LIMIT:
            self.response_head = None
            self._rebind()
            if end >= 0 and is_upgrade(bytes(head[:end])):
                self.conn.upgrade()

    def _pass(self, data: bytes) -> None:
        self.started = True
        if self.finished or self.source_done or self.silenced or self.awaiting_reset:
            return
        if self.stages:
            self._feed(data)
        else:
            assert self.dst.transport is not None
            self.dst.transport.write(data)

    # -- what the stages see (toxics.StageHost) -------------------------------------

    def time(self) -> float:
        return self.loop.time()

    def call_at(self, when: float, callback: Callable[[], object], /) -> Timer:
        return self.loop.call_at(when, callback)

    def reset_peer_after(self, delay: float) -> None:
        # Toxiproxy's reset_peer drops its chunk, then sleeps uninterruptibly before the reset,
        # and removing the toxic waits for that sleep: no later byte crosses this way. One that
        # did would follow a hole in the stream, which TCP never delivers; a compressed WebSocket
        # stream inflated across it yields different, valid-looking messages.
        self.awaiting_reset = True
        self._rebind()
        self.conn.reset_after(delay)

    def note_active(self) -> None:
        self.conn.last_active = self.loop.time()

    def last_active(self) -> float:
        return self.conn.last_active

    def silence(self) -> None:
        self.conn.silence()

    def at_stream_start(self) -> bool:
        return not self.started

    def reply(self, data: bytes) -> None:
        if not self.src.lost and self.src.transport is not None:
            self.src.transport.write(data)

    # -- flow control -------------------------------------------------------------

    def hold(self, delta: int) -> None:
        self.held += delta
        self._flow()

    def set_dest_paused(self, paused: bool) -> None:
        self.dest_paused = paused
        self._flow()

    def _flow(self) -> None:
        if self.src_paused:
            want = self.dest_paused or self.held > HOLD_LOW
        else:
            want = self.dest_paused or self.held > HOLD_HIGH
        if want == self.src_paused or self.src.lost or self.src.transport is None:
            return
        self.src_paused = want
        if want:
            self.src.transport.pause_reading()
        else:
            self.src.transport.resume_reading()

    # -- lifecycle ----------------------------------------------------------------

    def source_eof(self) -> None:
        if self.source_done:
            return
        self.source_done = True
        self._rebind()
        # A silenced connection tells neither peer anything; one awaiting its reset gets the reset.
        if not self.silenced and not self.awaiting_reset:
            self.head.eof()

    def finish(self) -> None:
        """The chain has ended: close the destination; the other link follows."""
        if self.finished:
            return
        self.finished = True
        self._rebind()
        self.conn.link_finished(self)

    def dispose(self) -> None:
        for stage in self.stages:
            stage.cancel()

    # -- live toxic changes (all synchronous: nothing else runs meanwhile) ----------

    def _set_next(self, index: int, nxt: Sink) -> None:
        if index == 0:
            self.head = nxt
        else:
            self.stages[index - 1].next = nxt

    def add_toxic(self, spec: ToxicSpec) -> None:
        if self.finished:
            return
        stage = self._make(spec, self.writer)
        self._set_next(len(self.stages), stage)
        # Data still held by earlier stages now passes the new toxic too, as in Toxiproxy.
        self.stages.append(stage)
        self._rebind()

    def update_toxic(self, index: int, spec: ToxicSpec) -> None:
        if self.finished:
            return
        old = self.stages[index]
        held, eof_pending = old.drain()
        new = self._make(spec, old.next)
        new.carry(old)
        self.stages[index] = new
        self._set_next(index, new)
        for data, ts in held:
            new.push(data, ts)
        if eof_pending:
            new.eof()

    def frames_crossed(self, counter: FrameCounter) -> None:
        """``counter``'s toxic saw its N data frames on this connection: wake it here if it is aimed here."""
        self.conn.frames_done.add(counter.spec.state)
        if self.conn.acts(counter.spec):
            self.update_toxic(self.stages.index(counter), counter.spec)
            return
        counter.spent = True
        for data, ts in counter.drain()[0]:
            counter.next.push(data, ts)

    def remove_toxic(self, index: int) -> None:
        old = self.stages.pop(index)
        self._set_next(index, old.next)
        held, eof_pending = old.drain()
        if not self.finished:
            if old.spec.type == "timeout" and not isinstance(old, Dormant):
                # Toxiproxy's timeout Cleanup closes the link on removal, whatever the draw.
                old.close()
            else:
                # Held data is older than anything upstream of it: flushing it on first
                # keeps the byte order.
                for data, ts in held:
                    old.next.push(data, ts)
                if eof_pending:
                    old.next.eof()
        self._rebind()


class Connection:
    """A client connection, its upstream connection and the two links between them."""

    def __init__(self, proxy: ConnectionOwner, loop: asyncio.AbstractEventLoop) -> None:
        self.proxy = proxy
        self.loop = loop
        self.client = Side(self, "client")
        self.upstream = Side(self, "upstream")
        self.links: list[Link] = []
        self.dial_task: asyncio.Task[None] | None = None
        self.closed = False
        self._timers: list[asyncio.TimerHandle] = []
        self.ordinal = proxy.next_ordinal()
        # From the first request line; None until then, or when it names no client.
        self.client_id: str | None = None
        # Whether the first response head switched protocols (a WebSocket upgrade).
        self.upgraded = False
        # Toxics (by their shared state) whose frame count was reached on this connection.
        self.frames_done: set[object] = set()
        self.last_active = loop.time()
        # Registered at accept time, before connection_made runs, so that a proxy
        # stopped in between still finds (and closes) this connection.
        proxy.conns.add(self)

    # -- setup ----------------------------------------------------------------

    def side_made(self, side: Side) -> None:
        if side is self.client:
            assert side.transport is not None
            if self.closed:
                side.transport.abort()
                return
            # Nothing may be read until the upstream is connected and the links exist.
            side.transport.pause_reading()
            self.dial_task = self.loop.create_task(self._dial())

    async def _dial(self) -> None:
        try:
            try:
                async with asyncio.timeout(DIAL_TIMEOUT):
                    await self.proxy.dial(self.upstream)
            except (OSError, TimeoutError, ValueError) as exc:
                log.info("proxy %s: upstream %s unreachable: %s", self.proxy.name, self.proxy.upstream, exc)
                self.closed = True
                # Toxiproxy closes the client, which then reads EOF.
                if self.client.transport is not None and not self.client.lost:
                    self.client.transport.close()
                return
            if self.closed or self.client.lost:
                self.closed = True
                self._abort_transports()
                return
            self._start_links()
        finally:
            self.dial_task = None
            if self.closed:
                self._maybe_done()

    def _start_links(self) -> None:
        up = Link(self, UPSTREAM, self.client, self.upstream)
        down = Link(self, DOWNSTREAM, self.upstream, self.client)
        self.links = [up, down]
        up.start(list(self.proxy.chains[UPSTREAM]))
        down.start(list(self.proxy.chains[DOWNSTREAM]))
        assert self.client.transport is not None
        self.client.transport.resume_reading()
        # The upstream may have closed or died (a SIGKILLed backend resets what it had not
        # accepted) between the connect and this task resuming. Nothing could act on that
        # before the links existed; act on it now, after the early bytes, or the client
        # would wait for ever on a connection with nothing left to carry. (A client lost in
        # that gap was already handled by _dial, which does not start the links then.)
        for link in self.links:
            if link.src.early_eof:
                link.src.early_eof = False
                link.source_eof()
        if self.upstream.lost:
            self.side_lost(self.upstream)

    # -- aiming (extensions) --------------------------------------------------

    def acts(self, spec: ToxicSpec) -> bool:
        """Whether the toxic acts on this connection now (its trigger happened, its aim matches)."""
        extras = spec.extras
        trigger = extras.trigger
        if trigger is not None and trigger.frames is not None:
            if spec.state not in self.frames_done:
                return False
        elif trigger is not None and not self.upgraded:
            return False
        aim = extras.aim
        if aim is None:
            return True
        if aim.first is not None:
            return spec.state.claim(self.ordinal, aim.first)
        return aim.matches(self.client_id)

    def identify(self, client_id: str | None) -> None:
        """The connection's client is known: toxics aimed at it wake up."""
        self.client_id = client_id
        if client_id is not None:
            self._wake()

    def upgrade(self) -> None:
        """The connection upgraded: toxics triggered by that wake up."""
        self.upgraded = True
        self._wake()

    def _wake(self) -> None:
        for link in self.links:
            for index, stage in enumerate(link.stages):
                if isinstance(stage, Dormant) and self.acts(stage.spec):
                    link.update_toxic(index, stage.spec)

    def silence(self) -> None:
        """Drop everything both ways from now on and close nothing: a forgotten NAT entry."""
        for link in self.links:
            link.silenced = True
            link.dispose()
            link._rebind()

    # -- teardown -------------------------------------------------------------

    def link_finished(self, link: Link) -> None:
        dst = link.dst
        if not dst.lost and dst.transport is not None:
            dst.transport.close()
            if dst.transport.get_write_buffer_size():
                self._timers.append(self.loop.call_later(CLOSE_DEADLINE, self.abort))
        other = self.links[1 - link.direction]
        # The destination just closed is the other link's source.
        other.source_eof()

    def side_lost(self, side: Side) -> None:
        if self.closed:
            self._maybe_done()
            return
        if not self.links:
            # Lost before the links existed: client went away during the dial, or the
            # dial failed and we closed the client.
            if side is self.client:
                if self.dial_task is not None:
                    self.dial_task.cancel()
                self.closed = True
                self._abort_transports()
            self._maybe_done()
            return
        if side.in_link is not None and not side.in_link.finished:
            # Nothing can be delivered any more; the link is over.
            side.in_link.finished = True
            side.in_link._rebind()
        if side.out_link is not None:
            side.out_link.source_eof()
        self._maybe_done()

    def _maybe_done(self) -> None:
        client_gone = self.client.lost or self.client.transport is None
        upstream_gone = self.upstream.lost or self.upstream.transport is None
        if client_gone and upstream_gone and self.dial_task is None:
            self._dispose()

    def _dispose(self) -> None:
        self.closed = True
        for link in self.links:
            link.dispose()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.proxy.conns.discard(self)

    def _abort_transports(self) -> None:
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                side.transport.abort()

    def abort(self) -> None:
        """Close both sockets now (proxy disabled, deleted or replaced; server exit)."""
        if self.dial_task is not None:
            self.dial_task.cancel()
        self.closed = True
        for link in self.links:
            link.dispose()
        self._abort_transports()
        self._maybe_done()

    def reset_after(self, delay: float) -> None:
        self._timers.append(self.loop.call_later(delay, self.reset))

    def reset(self) -> None:
        """Reset both peers: SO_LINGER 0 makes the close an RST (ECONNRESET)."""
        for side in (self.client, self.upstream):
            if side.sock is not None and not side.lost:
                set_linger_zero(side.sock)
        self.abort()
