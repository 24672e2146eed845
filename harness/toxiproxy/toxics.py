"""The data side of toxics: per-link pipeline stages.

A link (one direction of one connection) is a chain of stages ending in a writer.
Stages are push-based: ``push`` hands a chunk on, possibly later from a timer, and
``eof`` says the source is finished. This keeps every toxic on the one event loop
without a task per stage, so a chain with only pass-through stages costs a few
method calls per chunk.

Stages see the link only through :class:`StageHost` (a clock, timers, the held-bytes
count and a connection reset), so they can be driven by a fake host in tests.

Each stage counts what it does to its connection in its toxic's shared
:class:`extensions.ToxicState` (an increment or two per chunk, on toxic paths only), which
``GET /wschaos/...`` serves as evidence that the toxic landed.

Timestamps travel with chunks (the host's ``time()`` when read), as in Toxiproxy, so
stacked latency toxics add up and a restarted latency toxic keeps the delay already served.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .extensions import ToxicState
from .toxic_spec import ToxicSpec


class Timer(Protocol):
    def cancel(self) -> None: ...


class StageHost(Protocol):
    """What a stage may use of the link it runs on."""

    def time(self) -> float:
        """The clock chunk timestamps and timers use (seconds)."""
        ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> Timer:
        """Run ``callback`` once at ``when`` on the host's clock, unless cancelled."""
        ...

    def hold(self, delta: int) -> None:
        """Bytes held by a stage changed by ``delta`` (the host applies back-pressure)."""
        ...

    def reset_peer_after(self, delay: float) -> None:
        """Reset both sockets of the connection after ``delay`` seconds, whatever happens."""
        ...

    def note_active(self) -> None:
        """A byte crossed the connection now (for idle tracking shared by both directions)."""
        ...

    def last_active(self) -> float:
        """When :meth:`note_active` was last called for this connection."""
        ...

    def silence(self) -> None:
        """From now on drop everything in both directions, closing nothing (a lost NAT entry)."""
        ...

    def at_stream_start(self) -> bool:
        """No byte has crossed this link yet: the next one opens the stream (a request line)."""
        ...

    def reply(self, data: bytes) -> None:
        """Write ``data`` back to this link's source, the peer whose bytes the stages read."""
        ...


class Sink(Protocol):
    def push(self, data: bytes, ts: float) -> None: ...

    def eof(self) -> None: ...


# Timer callbacks fire when the clock has reached their time within this margin; it keeps
# a chunk due a few microseconds from now from being rescheduled over and over.
_EARLY = 0.0002


class Stage:
    """Pass-through stage; also what a toxic becomes when its toxicity draw misses."""

    __slots__ = ("closed", "host", "next", "spec", "timer", "touched")

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        self.host = host
        self.spec = spec
        self.next: Sink = nxt
        # True once EOF has been sent on; later input is dropped, as after a Go stub closes.
        self.closed = False
        # The one pending timer of a timer-driven stage (latency, bandwidth, slicer,
        # slow_close, timeout); None when nothing is scheduled.
        self.timer: Timer | None = None
        # Whether this toxic has acted on this connection yet (counted once per connection).
        self.touched = False

    def push(self, data: bytes, ts: float) -> None:
        if not self.closed:
            self.next.push(data, ts)

    def eof(self) -> None:
        self.close()

    def close(self) -> None:
        """Send EOF on and stop; a toxic 'closing the link' is exactly this."""
        if not self.closed:
            self.closed = True
            self.cancel()
            self.next.eof()

    def drain(self) -> tuple[list[tuple[bytes, float]], bool]:
        """Stop and give up held chunks (oldest first) and whether an EOF waits behind them."""
        self.cancel()
        return [], False

    def cancel(self) -> None:
        """Cancel the pending timer; the stage stops or is being discarded."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _schedule(self, when: float) -> None:
        self.timer = self.host.call_at(when, self._fire)

    def _fire(self) -> None:
        """The timer went off; unless a stage says otherwise, that ends it."""
        self.timer = None
        self.close()

    def carry(self, old: Stage) -> None:
        """Take over per-connection state from the stage this one replaces on update."""
        self.closed = old.closed
        self.touched = old.touched

    def _touch(self) -> ToxicState:
        """The toxic acts on this connection: count the connection once, return the counters."""
        state = self.spec.state
        if not self.touched:
            self.touched = True
            state.connections += 1
        return state

    def _cut(self) -> None:
        """The toxic ends the connection (closes, resets or silences it)."""
        self._touch().cuts += 1


class _Buffered(Stage):
    """A stage that holds chunks and releases them from a loop timer."""

    __slots__ = ("eof_pending", "queue")

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        self.queue: deque[tuple[bytes, float]] = deque()
        self.eof_pending = False

    def _enqueue(self, data: bytes, ts: float) -> None:
        self.queue.append((data, ts))
        self.host.hold(len(data))

    def _dequeue(self) -> tuple[bytes, float]:
        data, ts = self.queue.popleft()
        self.host.hold(-len(data))
        return data, ts

    def _fire(self) -> None:
        self.timer = None
        self._pump()

    def _pump(self) -> None:
        """Release whatever is due now; schedule the timer for the rest."""
        raise NotImplementedError

    def eof(self) -> None:
        if self.closed:
            return
        if self.queue:
            self.eof_pending = True
        else:
            self.close()

    def _finish_if_idle(self) -> None:
        if not self.queue and self.eof_pending:
            self.eof_pending = False
            self.close()

    def drain(self) -> tuple[list[tuple[bytes, float]], bool]:
        self.cancel()
        held = []
        while self.queue:
            held.append(self._dequeue())
        pending, self.eof_pending = self.eof_pending, False
        return held, pending


class LatencyStage(_Buffered):
    """Delay each chunk by latency ± jitter from when it was read, keeping order.

    Chunk k leaves at max(ts_k + d_k, departure of chunk k-1): the delays overlap,
    so throughput is unaffected, exactly as Toxiproxy's sequential sleep-until.
    """

    __slots__ = ("delays", "jitter", "last_release", "latency", "origins")

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        self.latency = spec.attributes["latency"]
        self.jitter = spec.attributes["jitter"]
        self.last_release = 0.0
        # Read times of queued chunks (the queue holds release times), so a replacement
        # stage on update computes its delay from when the data really arrived.
        self.origins: deque[float] = deque()
        self.delays = self.latency > 0 or self.jitter > 0

    def _delay(self) -> float:
        delay = self.latency
        if self.jitter > 0:
            delay += random.randrange(-self.jitter, self.jitter)
        return delay / 1000.0

    def push(self, data: bytes, ts: float) -> None:
        if self.closed:
            return
        if self.delays:
            self._touch().bytes_delayed += len(data)
        release = max(ts + self._delay(), self.last_release)
        self.last_release = release
        if not self.queue and release <= self.host.time() + _EARLY:
            self.next.push(data, release)
            return
        self._enqueue(data, release)
        self.origins.append(ts)
        if self.timer is None:
            self._schedule(release)

    def _fire(self) -> None:
        self.timer = None
        horizon = self.host.time() + _EARLY
        while self.queue and self.queue[0][1] <= horizon:
            data, release = self._dequeue()
            self.origins.popleft()
            self.next.push(data, release)
        if self.queue:
            self._schedule(self.queue[0][1])
        else:
            self._finish_if_idle()

    def drain(self) -> tuple[list[tuple[bytes, float]], bool]:
        origins = list(self.origins)
        self.origins.clear()
        held, pending = super().drain()
        return [(data, ts) for (data, _), ts in zip(held, origins, strict=True)], pending


class BandwidthStage(_Buffered):
    """Limit throughput to ``rate`` KB/s (1 KB = 1000 B); rate 0 stalls the link.

    Each piece leaves when the link would have finished sending it at the given rate
    (delay, then send), so N bytes take N/rate however they were chunked. Pieces are at
    most 10 ms worth, smoother than Toxiproxy's 100 ms and the same average.
    """

    __slots__ = ("bps", "piece", "virtual_time")

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        rate = spec.attributes["rate"]
        self.bps = rate * 1000.0
        self.piece = max(1, rate * 10)
        self.virtual_time = 0.0

    def push(self, data: bytes, ts: float) -> None:
        if self.closed or not data:
            return
        self._touch().bytes_delayed += len(data)
        was_idle = not self.queue
        self._enqueue(data, ts)
        if self.bps <= 0:
            return
        if was_idle and self.timer is None:
            self.virtual_time = max(self.virtual_time, self.host.time())
            self._pump()

    def _pump(self) -> None:
        horizon = self.host.time() + _EARLY
        while self.queue:
            data, ts = self.queue[0]
            size = min(len(data), self.piece)
            due = self.virtual_time + size / self.bps
            if due > horizon:
                self._schedule(due)
                return
            self.virtual_time = due
            if size == len(data):
                self._dequeue()
                self.next.push(data, ts)
            else:
                self.queue[0] = (data[size:], ts)
                self.host.hold(-size)
                self.next.push(data[:size], ts)
            if self.closed:
                return
        self._finish_if_idle()


class SlowCloseStage(Stage):
    """Pass data through; delay the EOF by ``delay`` ms."""

    __slots__ = ("waiting",)

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        self.waiting = False

    def eof(self) -> None:
        if self.closed or self.waiting:
            return
        self.waiting = True
        self._touch()
        delay = max(0, self.spec.attributes["delay"]) / 1000.0
        self._schedule(self.host.time() + delay)

    def drain(self) -> tuple[list[tuple[bytes, float]], bool]:
        self.cancel()
        pending, self.waiting = self.waiting, False
        return [], pending


class TimeoutStage(Stage):
    """Drop all data. timeout 0: never close. timeout > 0: close after that idle time."""

    __slots__ = ("timeout",)

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        self.timeout = spec.attributes["timeout"] / 1000.0
        self._arm()

    def _arm(self) -> None:
        if self.timeout > 0:
            self.cancel()
            self._schedule(self.host.time() + self.timeout)

    def push(self, data: bytes, ts: float) -> None:
        if not self.closed:
            self._touch().bytes_dropped += len(data)
            # Toxiproxy starts a fresh timer per received chunk: an idle timeout.
            self._arm()

    def _fire(self) -> None:
        self._cut()
        super()._fire()


class ResetPeerStage(Stage):
    """On the first chunk (or EOF), drop it, wait ``timeout`` ms, then reset both sockets."""

    __slots__ = ("triggered",)

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        self.triggered = False

    def push(self, data: bytes, ts: float) -> None:
        if not self.closed:
            self._touch().bytes_dropped += len(data)
        self._trigger()

    def eof(self) -> None:
        self._trigger()

    def _trigger(self) -> None:
        if self.closed or self.triggered:
            return
        self.triggered = True
        self._cut()
        # The reset is owned by the connection: like Toxiproxy's uninterruptible sleep,
        # removing or updating the toxic after it fired does not save the connection.
        self.host.reset_peer_after(max(0, self.spec.attributes["timeout"]) / 1000.0)

    def carry(self, old: Stage) -> None:
        super().carry(old)
        if isinstance(old, ResetPeerStage):
            self.triggered = old.triggered


class SlicerStage(_Buffered):
    """Split chunks into pieces of about ``average_size`` bytes, ``delay`` µs apart."""

    __slots__ = ("average", "delay", "ready_at", "variation")

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        self.average = spec.attributes["average_size"]
        self.variation = spec.attributes["size_variation"]
        self.delay = max(0, spec.attributes["delay"]) / 1e6
        self.ready_at = 0.0

    def _cuts(self, data: bytes) -> list[bytes]:
        # Iterative form of Toxiproxy's recursive midpoint split, same distribution.
        pieces: list[bytes] = []
        stack = [(0, len(data))]
        while stack:
            start, end = stack.pop()
            if (end - start) - self.average <= self.variation:
                pieces.append(data[start:end])
                continue
            mid = start + (end - start) // 2
            if self.variation > 0:
                mid += random.randrange(-self.variation, self.variation)
            stack.append((mid, end))
            stack.append((start, mid))
        return pieces

    def push(self, data: bytes, ts: float) -> None:
        if self.closed or not data:
            return
        pieces = self._cuts(data)
        if self.delay > 0:
            self._touch().bytes_delayed += len(data)
        elif len(pieces) > 1:
            self._touch()
        if self.delay <= 0 and not self.queue:
            for piece in pieces:
                self.next.push(piece, ts)
            return
        for piece in pieces:
            self._enqueue(piece, ts)
        if self.timer is None:
            self._pump()

    def _pump(self) -> None:
        now = self.host.time()
        while self.queue:
            if self.ready_at > now + _EARLY:
                self._schedule(self.ready_at)
                return
            data, ts = self._dequeue()
            self.next.push(data, ts)
            self.ready_at = now + self.delay
            if self.closed:
                return
        self._finish_if_idle()


class LimitDataStage(Stage):
    """Forward exactly ``bytes`` bytes per connection and direction, then close."""

    __slots__ = ("sent",)

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        self.sent = 0

    def push(self, data: bytes, ts: float) -> None:
        if self.closed:
            if data:
                self._touch().bytes_cut += len(data)
            return
        remaining = max(0, self.spec.attributes["bytes"] - self.sent)
        if remaining < len(data):
            self._touch().bytes_cut += len(data) - remaining
            data = data[:remaining]
        if data:
            self.sent += len(data)
            self.next.push(data, ts)
        if self.spec.attributes["bytes"] - self.sent <= 0:
            self._cut()
            self.close()

    def carry(self, old: Stage) -> None:
        super().carry(old)
        if isinstance(old, LimitDataStage):
            self.sent = old.sent


class IdleTimeoutStage(Stage):
    """Extension: pass data through; once the connection has been idle ``timeout`` ms, silence it.

    What a NAT gateway or cloud load balancer does to an idle flow: it forgets the flow, and
    from then on every packet in either direction is dropped, with no FIN or RST to tell anyone.
    Idle means no byte on any stream of the connection that carries an idle_timeout toxic.
    """

    __slots__ = ("idle",)

    def __init__(self, host: StageHost, spec: ToxicSpec, nxt: Sink) -> None:
        super().__init__(host, spec, nxt)
        self.idle = spec.attributes["timeout"] / 1000.0
        host.note_active()
        self._schedule(host.time() + self.idle)

    def push(self, data: bytes, ts: float) -> None:
        if not self.closed:
            self.host.note_active()
            self.next.push(data, ts)

    def _fire(self) -> None:
        self.timer = None
        if self.closed:
            return
        due = self.host.last_active() + self.idle
        if due > self.host.time() + _EARLY:
            self._schedule(due)  # traffic since the timer was set: the flow is still alive
            return
        self._cut()
        self.host.silence()


STAGES: dict[str, type[Stage]] = {
    "latency": LatencyStage,
    "bandwidth": BandwidthStage,
    "slow_close": SlowCloseStage,
    "timeout": TimeoutStage,
    "reset_peer": ResetPeerStage,
    "slicer": SlicerStage,
    "limit_data": LimitDataStage,
    "noop": Stage,
    "idle_timeout": IdleTimeoutStage,
}


def make_stage(host: StageHost, spec: ToxicSpec, nxt: Sink) -> Stage:
    """Build the stage for one link, drawing toxicity as Toxiproxy does on (re)start."""
    if random.random() < spec.toxicity:
        return STAGES[spec.type](host, spec, nxt)
    return Stage(host, spec, nxt)
