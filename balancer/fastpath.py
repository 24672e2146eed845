"""The "frames" data path's I/O: relaying frames between a session's two legs.

websockets still owns both connections: the opening handshake, the closing
handshake, pings and pongs, close codes, ``wait_closed``. Once a leg is
relaying, its connection's ``data_received`` hands the bytes to a
``FrameReader`` instead of websockets' parser, and that reader is the one and
only reader of the socket. Its ``FrameSplitter`` (balancer.frames) cuts the
stream into frames: data frames are written straight to the other leg's
transport from the protocol callback (no task wake-up, no message decode or
re-encode); control frames and anything websockets must reject go to
websockets' own parser on that leg, which answers or fails the connection
exactly as on the messages path.

A message split into several frames is held until its last frame and then
written whole, so a failover never leaves half a message on either leg, and
the client message in flight is always a whole message the RelayMachine can
have re-sent. A message counts as delivered once written and the other leg's
transport is not paused, i.e. when websockets' ``send()`` would have returned.

Backpressure: while the other leg's transport is paused, messages queue in the
reader; past ``PENDING_HIGH`` of them, reading the source pauses (as
websockets' own receive queue does), and resumes below ``PENDING_LOW``. A send
blocked longer than the send deadline is the leg's ``SendWatchdog``'s business.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection
from websockets.asyncio.messages import MAX_FRAGMENTS
from websockets.frames import CloseCode
from websockets.protocol import State

from balancer.frames import BadText, Break, ControlFrame, DataFrame, FrameSplitter
from balancer.watchdog import SendWatchdog

# websockets' default receive queue: pause past 16 messages, resume at 4.
PENDING_HIGH = 16
PENDING_LOW = 4


class MaskKeys:
    """Masking keys for the frames sent upstream (RFC 6455 section 5.3: fresh and
    unpredictable per frame), from the OS's CSPRNG as websockets takes them, but
    fetched ``batch`` at a time: one getrandom() per batch instead of one per frame."""

    __slots__ = ("_batch", "_keys", "_next")

    def __init__(self, batch: int = 1024) -> None:
        self._batch = batch
        self._keys = b""
        self._next = 0

    def __call__(self) -> bytes:
        at = self._next
        if at >= len(self._keys):
            self._keys, at = os.urandom(4 * self._batch), 0
        self._next = at + 4
        return self._keys[at : at + 4]


new_mask = MaskKeys()


class FramedConnection(Connection):
    """A websockets connection whose data frames can be taken over by a ``FrameReader``.

    Reading the socket is paused while any reason to pause holds (a set of
    reasons): websockets' full receive queue, and whatever subclasses and the
    frame reader add.
    """

    frame_reader: FrameReader | None = None
    on_writable: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._read_blockers: set[str] = set()
        self.recv_messages.pause = functools.partial(self._block_reading, "receive queue full")
        self.recv_messages.resume = functools.partial(self._unblock_reading, "receive queue full")

    def data_received(self, data: bytes) -> None:
        reader = self.frame_reader
        if reader is not None and reader.attached:
            reader.feed(data)
            return
        super().data_received(data)
        if reader is not None:
            reader.try_attach()

    def websocket_data_received(self, data: bytes) -> None:
        """Bytes for websockets' own parser on this leg."""
        super().data_received(data)

    def resume_writing(self) -> None:
        super().resume_writing()
        if (callback := self.on_writable) is not None:
            callback()

    def _block_reading(self, reason: str) -> None:
        if not self._read_blockers:
            self.transport.pause_reading()
        self._read_blockers.add(reason)

    def _unblock_reading(self, reason: str) -> None:
        if reason not in self._read_blockers:
            return
        self._read_blockers.discard(reason)
        if not self._read_blockers:
            self.transport.resume_reading()


class UpstreamConnection(FramedConnection, ClientConnection):
    """The balancer's connection to a backend."""


def at_frame_boundary(conn: Connection) -> bool:
    """Whether websockets' parser holds no part of a frame (so the next byte starts one).

    Its parser is a chain of generators (the handshake's, then the frames') whose
    innermost waits in ``StreamReader.at_eof`` exactly when its buffer is empty
    between frames; anywhere else it is inside a frame.
    """
    protocol = conn.protocol
    if protocol.reader.buffer:
        return False
    inner = protocol.parser
    while (deeper := getattr(inner, "gi_yieldfrom", None)) is not None:
        inner = deeper
    return getattr(inner, "__name__", None) == "at_eof"


@dataclass(frozen=True, slots=True)
class Fail:
    """Fail the source connection with ``code`` once the messages before it are relayed."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Resent:
    """The in-flight message the machine asked to re-send; already counted as in flight."""

    wire: bytes


Pending = bytes | Resent | Fail


class Route:
    """Where one reader's messages go during a leg: the other leg's connection.

    ``on_message`` is told of each message about to be written (the client's
    messages go to the RelayMachine); ``on_delivered`` once it counts as
    delivered. Only the client-to-upstream route passes them.
    """

    def __init__(
        self,
        dest: FramedConnection,
        watchdog: SendWatchdog,
        on_message: Callable[[bytes], None] | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        self.dest = dest
        self._watchdog = watchdog
        self._on_message = on_message
        self._on_delivered = on_delivered
        self._waiting = False  # a write is waiting for the dest to drain
        self._undelivered = False  # the last message is written, not yet drained
        self.source: FrameReader | None = None
        dest.on_writable = self._writable_again

    def offer(self, item: bytes | Resent) -> bool:
        """Write one message if the dest can take it now."""
        dest = self.dest
        if dest.paused:
            # Paused by our writes or by websockets' own (pongs, pings): either way
            # a message now waits for the peer to read, within the send deadline.
            if not self._waiting:
                self._waiting = True
                self._watchdog.begin()
            return False
        if dest.protocol.state is not State.OPEN or dest.transport.is_closing():
            return False
        if type(item) is Resent:
            wire = item.wire
        else:
            assert isinstance(item, bytes)
            wire = item
            if self._on_message is not None:
                self._on_message(wire)
        dest.transport.write(wire)
        if dest.paused:
            if not self._waiting:
                self._waiting = True
                self._watchdog.begin()
            self._undelivered = self._on_delivered is not None
        elif self._on_delivered is not None and not dest.transport.is_closing():
            self._on_delivered()
        return True

    def _writable_again(self) -> None:
        if self._waiting:
            self._waiting = False
            self._watchdog.end()
        if self._undelivered:
            self._undelivered = False
            if not (self._watchdog.stalled or self.dest.transport.is_closing()):
                assert self._on_delivered is not None
                self._on_delivered()
        if self.source is not None:
            self.source.flush()

    def close(self) -> None:
        if self.dest.on_writable == self._writable_again:
            self.dest.on_writable = None
        self.source = None


def _abort_unless_lost(conn: Connection) -> None:
    if not conn.connection_lost_waiter.done():
        conn.transport.abort()


class FrameReader:
    """The only reader of one connection while it relays; see the module doc.

    ``on_error`` gets any unexpected exception raised in a protocol callback
    (which the event loop would otherwise only log), so the session ends.
    """

    def __init__(self, conn: FramedConnection, splitter: FrameSplitter, on_error: Callable[[BaseException], None]):
        self.conn = conn
        self.splitter = splitter
        self._on_error = on_error
        self.attached = False
        self.retired = False  # handed back to websockets for good (an error, or the closing handshake)
        self.pending: deque[Pending] = deque()
        self._parts: list[bytes] = []  # the frames so far of a message split into several
        self.route: Route | None = None
        self._blocked = False
        conn.frame_reader = self

    def set_on_error(self, on_error: Callable[[BaseException], None]) -> None:
        self._on_error = on_error

    def connect(self, route: Route) -> None:
        """Relay to ``route`` from now on (the start of a leg)."""
        self.route = route
        route.source = self
        if self.attached:
            self.flush()

    def disconnect(self) -> None:
        """The leg is over: messages wait here for the next one."""
        if self.route is not None:
            self.route.close()
            self.route = None

    def try_attach(self) -> None:
        """Take over reading, once websockets' parser is between frames.

        Until then websockets parses, and the messages it has queued are taken
        from its receive queue after every read (a client may send while its
        upstream is being opened): left there, a full queue would pause reading
        in the middle of a frame, and the boundary would never come.
        """
        conn = self.conn
        if self.attached or self.retired or conn.protocol.state is not State.OPEN:
            return
        try:
            assembler = conn.recv_messages
            queued = assembler.frames.queue
            while queued:
                if not self._frame(self.splitter.adopt(queued.popleft())):
                    return
            if assembler.paused:
                assembler.paused = False
                assembler.resume()
            if at_frame_boundary(conn):
                self.attached = True
            self.flush()
        except Exception as exc:
            self._on_error(exc)

    def feed(self, data: bytes) -> None:
        try:
            if self.retired:
                self.conn.websocket_data_received(data)
                return
            splitter = self.splitter
            if splitter.stopped:
                return  # a failure waits in the queue for its turn; websockets would discard this
            if (wire := splitter.whole(data)) is not None:
                self._message(wire)
                return
            for item in splitter.feed(data):
                if not self._frame(item):
                    return
        except Exception as exc:
            self._on_error(exc)

    def _frame(self, item: DataFrame | ControlFrame | Break | BadText) -> bool:
        """Handle one item in order; False once the rest of the stream is websockets' again."""
        if type(item) is DataFrame:
            if self.conn.protocol.state is not State.OPEN:
                return True  # after the close frame, as websockets does: discard
            parts = self._parts
            if parts and len(parts) >= MAX_FRAGMENTS:
                # websockets' own limit on the messages path (its receive queue's)
                self._queue_failure(Fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments"))
                return False
            if not item.fin:
                parts.append(item.wire)
                return True
            wire = item.wire
            if parts:
                parts.append(wire)
                wire = b"".join(parts)
                parts.clear()
            self._relay(wire)
            return True
        conn = self.conn
        if type(item) is ControlFrame:
            # websockets judges a close frame inside a fragmented message by this.
            conn.protocol.current_size = item.message_size
            conn.websocket_data_received(item.wire)
            if conn.protocol.state is not State.OPEN:
                self._retire()
                return False
            return True
        if type(item) is Break:
            conn.protocol.current_size = self.splitter.message_size
            self._retire()
            conn.websocket_data_received(item.rest)
            return False
        assert isinstance(item, BadText)
        self._queue_failure(Fail(CloseCode.INVALID_DATA, item.reason))
        return False

    def _message(self, wire: bytes) -> None:
        """A whole message in one frame (``FrameSplitter.whole``), judged as ``_frame`` would."""
        if self.conn.protocol.state is State.OPEN:
            self._relay(wire)

    def _relay(self, wire: bytes) -> None:
        """Write a whole message now if nothing waits before it and the route takes it; else queue it."""
        pending = self.pending
        route = self.route
        if pending or route is None or not route.offer(wire):
            pending.append(wire)
            if not self._blocked and len(pending) >= PENDING_HIGH:
                self._blocked = True
                self.conn._block_reading("relay queue full")

    def _queue_failure(self, failure: Fail) -> None:
        self.splitter.stopped = True  # what follows is discarded, as websockets does after failing
        self.pending.append(failure)
        self.flush()

    def resend(self, wire: bytes) -> None:
        """The machine's in-flight message goes first on the new upstream."""
        self.pending.appendleft(Resent(wire))

    def forget_resends(self) -> None:
        """A re-send the leg never wrote: the machine has already judged it lost."""
        if self.pending and type(self.pending[0]) is Resent:
            self.pending.popleft()

    def flush(self) -> None:
        """Write what the route can take now, in order."""
        pending = self.pending
        while pending:
            head = pending[0]
            if type(head) is Fail:
                pending.clear()
                self._fail(head)
                return
            route = self.route
            if route is None or not route.offer(head):  # type: ignore[arg-type]
                break
            pending.popleft()
        if self._blocked and len(pending) <= PENDING_LOW:
            self._blocked = False
            self.conn._unblock_reading("relay queue full")

    def _fail(self, failure: Fail) -> None:
        """Fail this leg as websockets' recv() does (1007 for invalid UTF-8, 1009 for too many fragments)."""
        conn = self.conn
        self._retire()
        if conn.protocol.state is not State.OPEN:
            return
        conn.protocol.fail(failure.code, failure.reason)
        conn.send_data()
        # What websockets' send_context does after a failure: wait close_timeout
        # for the peer to close the TCP connection, then abort it.
        if conn.close_deadline is None:
            conn.close_deadline = conn.loop.time() + (conn.close_timeout or 0.0)
        conn.loop.call_at(conn.close_deadline, _abort_unless_lost, conn)

    def _retire(self) -> None:
        """From here on websockets reads this connection (it discards or fails it)."""
        self.retired = True
        self._parts.clear()
        rest = self.splitter.take_buffer()
        if self._blocked:
            self._blocked = False
            self.conn._unblock_reading("relay queue full")
        if rest:
            self.conn.websocket_data_received(rest)
