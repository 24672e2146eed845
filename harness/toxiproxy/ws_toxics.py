"""Frame-aware toxics for WebSocket links (extensions; absent unless a client creates one).

Each stage parses its stream into RFC 6455 frames (:mod:`.wsframes`) and acts on whole frames,
so a fault lands exactly on a frame boundary. The upgrade head and any bytes the parser cannot
place yet (a toxic added mid-stream resynchronises first) pass through untouched. Frames the
stage injects are masked as their direction requires: upstream is client → server on every
proxy of this topology (``lb``: client → balancer; ``primary``/``secondary``: balancer →
backend), so upstream frames get a fresh random key and downstream frames none.

Attributes (all integers, as Toxiproxy's):

* ``nth`` (all types, default 1): the data frame (text, binary or continuation) the toxic acts
  on, counted per link from when the toxic was added or last updated; 0 means every data frame.
* ``ws_drop``: the frame is not forwarded.
* ``ws_duplicate``: the frame is forwarded twice (the copy re-masked with a fresh key upstream).
* ``ws_delay``: the frame is held ``delay`` ms; what follows it waits behind it, so order is kept.
* ``ws_split``: the frame is written as ``segments`` pieces, ``delay`` µs apart.
* ``ws_ping``: ``count`` pings of ``size`` payload bytes (≤ 125) are injected before the frame.
* ``ws_protocol_error``: one malformed frame is injected before the frame: ``kind`` 0 a reserved
  opcode (0x3), 1 a text frame of invalid UTF-8, 2 a binary frame of ``size`` bytes (default
  1 MiB + 1, over websockets' default ``max_size``). A correct receiver closes with 1002, 1007
  or 1009 respectively.
* ``ws_close``: a close frame with ``code`` (reason ``wschaos <toxic name>``) replaces the frame,
  then the link closes, as a middlebox ending the connection would.

``connections`` (``ws_protocol_error``, ``ws_close``; 0 = no limit) bounds how many connections
of the proxy the toxic fires on: the first ones to reach their ``nth`` data frame. It lets a
scenario hit one client of many and judge that the others were unaffected. The count belongs to
the toxic as created or updated, so an update starts it again.

Data frames are injected only at a message boundary, never between the fragments of a
message (that would be a different protocol error from the one asked for).

On a permessage-deflate stream with context takeover (websockets' default), dropping or
duplicating a compressed frame also desynchronises the receiver's decompressor: later messages
inflate to garbage or fail (docs/toxiproxy-extensions.md has a measured case). That is what a
real middlebox doing the same would cause, and the stage does not hide it.
"""

from __future__ import annotations

import weakref
from collections import deque

from .toxic_spec import UPSTREAM, ToxicSpec
from .toxics import _EARLY, STAGES, Sink, Stage, StageHost
from .wsframes import (
    Frame,
    FrameParser,
    Opcode,
    close_payload,
    make_frame,
    rebuilt,
)

RESERVED_OPCODE, INVALID_UTF8, OVERSIZED = 0, 1, 2
#: The ``kind`` attribute of ``ws_protocol_error`` by name.
PROTOCOL_ERRORS = {"reserved_opcode": RESERVED_OPCODE, "invalid_utf8": INVALID_UTF8, "oversized": OVERSIZED}
# Each is well formed but for the one rule it breaks: a truncated UTF-8 sequence ("\xc3(") in an
# otherwise valid text frame.
_INVALID_UTF8 = b"wschaos \xc3\x28 invalid utf-8"


class _ConnectionBudget:
    """How many connections one toxic (as created or updated) may still fire on."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0
        # Weak: a link that has ended must not be kept alive, nor its id mistaken for a new one's.
        self.hosts: weakref.WeakSet[StageHost] = weakref.WeakSet()

    def take(self, host: StageHost) -> bool:
        if self.limit == 0 or host in self.hosts:
            return True
        if self.spent >= self.limit:
            return False
        self.spent += 1
        self.hosts.add(host)
        return True


# One budget per ToxicSpec object, shared by the stages of every link the toxic is on; dropped
# with the spec (specs are frozen dataclasses holding a dict, so they cannot be dict keys).
_BUDGETS: dict[int, _ConnectionBudget] = {}


def _budget_for(spec: ToxicSpec) -> _ConnectionBudget:
    key = id(spec)
    budget = _BUDGETS.get(key)
    if budget is None:
        budget = _BUDGETS[key] = _ConnectionBudget(spec.attributes.get("connections", 0))
        weakref.finalize(spec, _BUDGETS.pop, key, None)
    return budget


class FrameStage(Stage):
    """Parses the stream into frames and hands each to :meth:`on_frame`; keeps byte order.

    Everything leaves through :meth:`emit`, which can hold a piece until a given time; later
    pieces queue behind it, so delaying or pacing one frame never reorders the stream.
    """

    __slots__ = ("data_frames", "eof_pending", "mid_message", "parser", "queue", "to_server")

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        self.to_server = spec.direction == UPSTREAM
        self.parser = FrameParser(expect_masked=self.to_server)
        self.data_frames = 0
        # Inside a fragmented data message: data frames must not be injected here.
        self.mid_message = False
        # (bytes, read time, release time), oldest first.
        self.queue: deque[tuple[bytes, float, float]] = deque()
        self.eof_pending = False

    # -- input ----------------------------------------------------------------------------------
    def push(self, data: bytes, ts: float) -> None:
        if self.closed or self.eof_pending:
            return
        before = self.parser.buffered
        events = self.parser.feed(data)
        self.host.hold(self.parser.buffered - before)
        for event in events:
            if self.closed:
                return
            if isinstance(event, Frame):
                target = event.is_data and self._counts(event)
                self.on_frame(event, ts, target)
                if event.is_data:
                    self.mid_message = not event.fin
            else:
                self.emit(event.raw, ts)

    def _counts(self, frame: Frame) -> bool:
        self.data_frames += 1
        nth = self.spec.attributes["nth"]
        return nth == 0 or self.data_frames == nth

    def on_frame(self, frame: Frame, ts: float, target: bool) -> None:
        """One parsed frame; ``target`` says it is the data frame the toxic acts on."""
        self.emit(frame.raw, ts)

    def inject(self, opcode: int, payload: bytes, ts: float) -> None:
        """Send a frame of our own, masked as this direction requires."""
        self._touch()  # evidence that the toxic acted (docs/toxiproxy-extensions.md)
        self.emit(make_frame(opcode, payload, to_server=self.to_server).raw, ts)

    # -- output, in order -------------------------------------------------------------------------
    def emit(self, data: bytes, ts: float, not_before: float | None = None) -> None:
        """Send ``data`` on after anything still held, and not before ``not_before``."""
        if not self.queue and (not_before is None or not_before <= self.host.time() + _EARLY):
            self.next.push(data, ts)
            return
        release = max(not_before or 0.0, self.queue[-1][2] if self.queue else 0.0)
        self.queue.append((data, ts, release))
        self.host.hold(len(data))
        if self.timer is None:
            self._schedule(self.queue[0][2])

    def _fire(self) -> None:
        self.timer = None
        horizon = self.host.time() + _EARLY
        while self.queue and self.queue[0][2] <= horizon:
            data, ts, _ = self.queue.popleft()
            self.host.hold(-len(data))
            self.next.push(data, ts)
            if self.closed:
                return
        if self.queue:
            self._schedule(self.queue[0][2])
        elif self.eof_pending:
            self.eof_pending = False
            self.close()

    def end(self) -> None:
        """Close the link once everything emitted so far has gone."""
        if self.queue:
            self.eof_pending = True
        else:
            self.close()

    def eof(self) -> None:
        if self.closed or self.eof_pending:
            return
        partial = self._take_partial()
        if partial:
            # The stream ends inside a frame: pass on what there is, as a plain proxy would.
            self.emit(partial, self.host.time())
        self.end()

    def _take_partial(self) -> bytes:
        partial = self.parser.take_buffered()
        self.host.hold(-len(partial))
        return partial

    def drain(self) -> tuple[list[tuple[bytes, float]], bool]:
        # A replacement stage starts afresh and resynchronises on these bytes: the queue
        # starts at a frame boundary.
        self.cancel()
        held = [(data, ts) for data, ts, _ in self.queue]
        self.host.hold(-sum(len(data) for data, _ in held))
        self.queue.clear()
        partial = self._take_partial()
        if partial:
            held.append((partial, self.host.time()))
        pending, self.eof_pending = self.eof_pending, False
        return held, pending


class DropStage(FrameStage):
    __slots__ = ()

    def on_frame(self, frame: Frame, ts: float, target: bool) -> None:
        if not target:
            self.emit(frame.raw, ts)
        else:
            self._touch().bytes_dropped += len(frame.raw)


class DuplicateStage(FrameStage):
    __slots__ = ()

    def on_frame(self, frame: Frame, ts: float, target: bool) -> None:
        self.emit(frame.raw, ts)
        if target:
            self._touch()
            self.emit(rebuilt(frame, to_server=self.to_server).raw, ts)


class DelayStage(FrameStage):
    __slots__ = ()

    def on_frame(self, frame: Frame, ts: float, target: bool) -> None:
        if target:
            self._touch().bytes_delayed += len(frame.raw)
            self.emit(frame.raw, ts, self.host.time() + self.spec.attributes["delay"] / 1000.0)
        else:
            self.emit(frame.raw, ts)


class SplitStage(FrameStage):
    __slots__ = ()

    def on_frame(self, frame: Frame, ts: float, target: bool) -> None:
        if not target:
            self.emit(frame.raw, ts)
            return
        raw = frame.raw
        self._touch()
        pieces = min(self.spec.attributes["segments"], len(raw))
        gap = self.spec.attributes["delay"] / 1e6
        now = self.host.time()
        for i in range(pieces):
            piece = raw[len(raw) * i // pieces : len(raw) * (i + 1) // pieces]
            self.emit(piece, ts, now + i * gap if gap else None)


class _Injecting(FrameStage):
    """Injects before the target data frame; a data frame waits for the next message start."""

    __slots__ = ("due",)
    injects_data = False

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        self.due = False

    def on_frame(self, frame: Frame, ts: float, target: bool) -> None:
        self.due = self.due or target
        if self.due and not (self.injects_data and (self.mid_message or frame.opcode == Opcode.CONTINUATION)):
            self.due = False
            if self.fire(frame, ts):
                return
        self.emit(frame.raw, ts)

    def fire(self, frame: Frame, ts: float) -> bool:
        """Inject before ``frame``; True if ``frame`` is consumed."""
        raise NotImplementedError


class PingStage(_Injecting):
    __slots__ = ()

    def fire(self, frame: Frame, ts: float) -> bool:
        size = self.spec.attributes["size"]
        for i in range(self.spec.attributes["count"]):
            self.inject(Opcode.PING, f"wschaos {i} ".encode().ljust(size, b".")[:size], ts)
        return False


class ProtocolErrorStage(_Injecting):
    __slots__ = ()
    injects_data = True

    def fire(self, frame: Frame, ts: float) -> bool:
        if not _budget_for(self.spec).take(self.host):
            return False
        kind = self.spec.attributes["kind"]
        if kind == RESERVED_OPCODE:
            self.inject(0x3, b"wschaos reserved opcode", ts)
        elif kind == INVALID_UTF8:
            self.inject(Opcode.TEXT, _INVALID_UTF8, ts)
        else:
            self.inject(Opcode.BINARY, bytes(self.spec.attributes["size"]), ts)
        return False


class CloseStage(_Injecting):
    __slots__ = ()

    def fire(self, frame: Frame, ts: float) -> bool:
        if not _budget_for(self.spec).take(self.host):
            return False
        reason = f"wschaos {self.spec.name}".encode()[:123].decode(errors="ignore")
        self.inject(Opcode.CLOSE, close_payload(self.spec.attributes["code"], reason), ts)
        self.end()
        return True


WS_STAGES: dict[str, type[Stage]] = {
    "ws_drop": DropStage,
    "ws_duplicate": DuplicateStage,
    "ws_delay": DelayStage,
    "ws_split": SplitStage,
    "ws_ping": PingStage,
    "ws_protocol_error": ProtocolErrorStage,
    "ws_close": CloseStage,
}

#: The ``mode`` attribute of ``ws_upgrade`` by name.
UPGRADE_MODES = {"refuse": 0, "stall": 1, "slow": 2}
REFUSE, STALL, SLOW = 0, 1, 2
#: Longest request head a refusing stage waits for before it answers anyway.
REQUEST_HEAD_LIMIT = 16384
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def refusal(status: int, toxic: str) -> bytes:
    """The whole HTTP response a refusing ``ws_upgrade`` answers with, then closes."""
    body = f"wschaos {toxic}: upgrade refused with {status}\n".encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Refused')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class UpgradeStage(Stage):
    """``ws_upgrade``: a backend that refuses, stalls or slows the opening handshake (extension).

    On the upstream (request) stream of a backend link it acts on a connection's first bytes only,
    the upgrade request, so it meets every handshake made while it is in place and never a live
    session (on a connection it joins mid-stream it is a pass-through). ``mode``:

    * 0 ``refuse``: the request never reaches the backend; the proxy answers it with ``status``
      (default 503) and closes the connection, as a backend shedding load or crashing in its
      handler would (counted: ``bytes_dropped``, one ``cut`` per connection);
    * 1 ``stall``: the request is swallowed (``bytes_dropped``), so the TCP connection is up and
      nothing ever answers it, not even after the toxic is removed (only new handshakes pass
      then): the client gives up at its open timeout, or the backend at its own handshake timeout;
    * 2 ``slow``: the request is held ``delay`` ms and then passes, so the answer comes that late
      (``bytes_delayed``); a client that gives up first drops it (``bytes_dropped``). Removing the
      toxic releases what it holds.
    """

    __slots__ = ("active", "head", "held", "replied")

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        # Only at a stream start is the next byte an upgrade request.
        self.active = host.at_stream_start()
        self.head = bytearray()
        self.held: list[tuple[bytes, float]] = []
        self.replied = False

    def push(self, data: bytes, ts: float) -> None:
        if self.closed:
            return
        if not self.active:
            self.next.push(data, ts)
            return
        mode = self.spec.attributes["mode"]
        if mode != SLOW:
            self._touch().bytes_dropped += len(data)
            self.head += data
            if mode == REFUSE and (b"\r\n\r\n" in self.head or len(self.head) >= REQUEST_HEAD_LIMIT):
                self._refuse()
            return
        self._touch().bytes_delayed += len(data)
        self.held.append((data, ts))
        self.host.hold(len(data))
        if self.timer is None:
            self._schedule(self.host.time() + self.spec.attributes["delay"] / 1000.0)

    def _refuse(self) -> None:
        self.replied = True
        self._cut()
        self.host.reply(refusal(self.spec.attributes["status"], self.spec.name))
        self.close()

    def _fire(self) -> None:
        """The slow handshake's delay is over: release the request and pass from now on."""
        self.timer = None
        self.active = False
        held, self.held = self.held, []
        for data, ts in held:
            self.host.hold(-len(data))
            self.next.push(data, ts)

    def eof(self) -> None:
        # The client gave up before the backend had its request: nothing of it is delivered.
        if self.held:
            dropped = sum(len(data) for data, _ in self.held)
            self._touch().bytes_dropped += dropped
            self.host.hold(-dropped)
            self.held = []
        self.close()

    def drain(self) -> tuple[list[tuple[bytes, float]], bool]:
        self.cancel()
        held, self.held = self.held, []
        for data, _ in held:
            self.host.hold(-len(data))
        return held, False

    def carry(self, old: Stage) -> None:
        super().carry(old)
        # An update keeps the connection's place: a handshake still held stays held, one already
        # passed stays passed (a woken Dormant stage keeps what the stream start says).
        if isinstance(old, UpgradeStage):
            self.active, self.replied = old.active, old.replied
            self.head = bytearray(old.head)


# The link builds stages from toxics.STAGES; link.py imports this module so they are there.
STAGES.update(WS_STAGES)
STAGES["ws_upgrade"] = UpgradeStage
