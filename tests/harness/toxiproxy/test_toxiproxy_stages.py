"""Toxic stages driven through a fake StageHost: a virtual clock, no sockets, milliseconds."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import pytest

from harness.toxiproxy.toxic_spec import DOWNSTREAM, ToxicSpec
from harness.toxiproxy.toxics import STAGES, Stage, StageHost


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeHost:
    """A StageHost whose clock moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.held = 0
        self.resets: list[float] = []
        self.active_at = 0.0
        self.silenced_at: float | None = None
        self.started = False
        self.replies: list[bytes] = []
        self._timers: list[tuple[float, int, FakeTimer, Callable[[], object]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer()
        heapq.heappush(self._timers, (when, next(self._order), timer, callback))
        return timer

    def hold(self, delta: int) -> None:
        self.held += delta
        assert self.held >= 0

    def reset_peer_after(self, delay: float) -> None:
        self.resets.append(delay)

    def note_active(self) -> None:
        self.active_at = self.now

    def last_active(self) -> float:
        return self.active_at

    def silence(self) -> None:
        self.silenced_at = self.now

    def at_stream_start(self) -> bool:
        return not self.started

    def reply(self, data: bytes) -> None:
        self.replies.append(data)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, timer, callback = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                callback()
        self.now = end

    def pending(self) -> int:
        return sum(not timer.cancelled for _, _, timer, _ in self._timers)


class Collect:
    def __init__(self) -> None:
        self.chunks: list[tuple[bytes, float]] = []
        self.ended = False

    def push(self, data: bytes, ts: float) -> None:
        self.chunks.append((data, ts))

    def eof(self) -> None:
        self.ended = True

    @property
    def data(self) -> bytes:
        return b"".join(data for data, _ in self.chunks)


def build(toxic_type: str, **attributes: int) -> tuple[FakeHost, Stage, Collect]:
    host = FakeHost()
    out = Collect()
    spec = ToxicSpec(toxic_type, toxic_type, "downstream", DOWNSTREAM, 1.0, attributes)
    _: StageHost = host  # the fake satisfies the protocol the stages are typed against
    return host, STAGES[toxic_type](host, spec, out), out


def test_latency_releases_at_read_time_plus_delay_and_accounts_held_bytes() -> None:
    host, stage, out = build("latency", latency=100, jitter=0)
    stage.push(b"abc", host.time())
    assert (out.chunks, host.held) == ([], 3)
    host.advance(0.099)
    assert out.chunks == []
    host.advance(0.002)
    assert out.chunks == [(b"abc", pytest.approx(0.1))]
    assert host.held == 0


def test_bandwidth_spreads_bytes_over_time() -> None:
    host, stage, out = build("bandwidth", rate=1)  # 1 KB/s, 10-byte pieces
    stage.push(b"x" * 1000, host.time())
    host.advance(0.5)
    assert len(out.data) == pytest.approx(500, abs=10)
    host.advance(0.6)
    assert out.data == b"x" * 1000 and host.held == 0


def test_timeout_closes_after_idle_time_and_each_chunk_restarts_it() -> None:
    host, stage, out = build("timeout", timeout=100)
    host.advance(0.08)
    stage.push(b"dropped", host.time())
    host.advance(0.08)
    assert not out.ended and out.chunks == []
    host.advance(0.03)
    assert out.ended
    assert host.pending() == 0


def test_slow_close_delays_eof_and_drain_cancels_its_timer() -> None:
    host, stage, out = build("slow_close", delay=50)
    stage.eof()
    assert host.pending() == 1
    assert stage.drain() == ([], True)
    assert host.pending() == 0
    host.advance(1)
    assert not out.ended


def test_reset_peer_asks_the_host_once() -> None:
    host, stage, out = build("reset_peer", timeout=250)
    stage.push(b"a", 0.0)
    stage.push(b"b", 0.0)
    stage.eof()
    assert host.resets == [0.25] and out.chunks == []


TIMER_DRIVEN = {
    "latency": {"latency": 100, "jitter": 0},
    "bandwidth": {"rate": 1},
    "slicer": {"average_size": 1, "size_variation": 0, "delay": 1000},
    "slow_close": {"delay": 100},
    "timeout": {"timeout": 100},
}


@pytest.mark.parametrize("toxic_type", sorted(TIMER_DRIVEN))
def test_close_cancels_the_pending_timer(toxic_type: str) -> None:
    host, stage, out = build(toxic_type, **TIMER_DRIVEN[toxic_type])
    stage.push(b"abcd", host.time())
    if toxic_type == "slow_close":
        stage.eof()
    assert host.pending() == 1
    stage.close()
    assert host.pending() == 0 and out.ended


def test_idle_timeout_silences_only_after_a_whole_idle_period() -> None:
    host, stage, out = build("idle_timeout", timeout=100)
    for _ in range(5):  # traffic every 60 ms keeps the flow alive
        host.advance(0.06)
        stage.push(b"k", host.time())
    assert host.silenced_at is None and out.data == b"kkkkk"
    host.advance(0.099)
    assert host.silenced_at is None
    host.advance(0.002)
    assert host.silenced_at == pytest.approx(0.4)
    assert stage.spec.state.evidence()["cuts"] == 1 and stage.spec.state.connections == 1


def test_stages_count_what_they_do_once_per_connection() -> None:
    host, stage, out = build("latency", latency=10, jitter=0)
    stage.push(b"abc", host.time())
    stage.push(b"de", host.time())
    assert stage.spec.state.evidence() == {
        "connections": 1, "bytes_delayed": 5, "bytes_dropped": 0, "bytes_cut": 0, "cuts": 0,
    }  # fmt: skip
    host, stage, out = build("limit_data", bytes=3)
    stage.push(b"abcde", host.time())
    assert (out.data, stage.spec.state.bytes_cut, stage.spec.state.cuts) == (b"abc", 2, 1)
    host, stage, out = build("latency", latency=0, jitter=0)
    stage.push(b"abc", host.time())
    assert stage.spec.state.connections == 0  # passed straight through: not touched
