"""Failover policy: the per-session reconnect limiter and backend choice.

Pure: the caller passes ``now`` (any monotonic seconds), so the limiter can be
tested to the millisecond with a fake clock and never reads a clock itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

ALLOWED = "allowed"
REFUSED_MIN_INTERVAL = "min_interval"
REFUSED_MAX_ATTEMPTS = "max_attempts"
REFUSED_SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


class FailoverLimiter:
    """At most ``max_attempts`` per sliding ``window_s``, ``min_interval_s`` apart.

    An attempt made at ``t`` counts while ``now - t < window_s``, so it stops
    counting exactly ``window_s`` later. Two attempts exactly ``min_interval_s``
    apart are allowed. A refused attempt consumes nothing.
    """

    def __init__(
        self,
        max_attempts: int = 3,
        window_s: float = 60.0,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if max_attempts < 0 or window_s < 0 or min_interval_s < 0:
            raise ValueError("limiter parameters must not be negative")
        self.max_attempts = max_attempts
        self.window_s = window_s
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._granted: deque[float] = deque()
        # Kept apart from the window, which may be shorter than min_interval.
        self._last: float | None = None

    def _now(self, now: float | None) -> float:
        if now is not None:
            return now
        if self._clock is None:
            raise TypeError("pass now= or construct the limiter with a clock")
        return self._clock()

    def _expire(self, now: float) -> None:
        while self._granted and now - self._granted[0] >= self.window_s:
            self._granted.popleft()

    def attempts_in_window(self, now: float | None = None) -> int:
        t = self._now(now)
        self._expire(t)
        return len(self._granted)

    def try_acquire(self, now: float | None = None) -> Decision:
        t = self._now(now)
        self._expire(t)
        if self._last is not None and t - self._last < self.min_interval_s:
            return Decision(False, REFUSED_MIN_INTERVAL)
        if len(self._granted) >= self.max_attempts:
            return Decision(False, REFUSED_MAX_ATTEMPTS)
        self._granted.append(t)
        self._last = t
        return Decision(True, ALLOWED)


def choose_backend(
    backends: Iterable[str],
    health: Mapping[str, bool],
    exclude: Collection[str] = (),
) -> str | None:
    """The first healthy backend in priority order, or None; one missing from ``health`` counts as healthy."""
    for b in backends:
        if b not in exclude and health.get(b, True):
            return b
    return None
