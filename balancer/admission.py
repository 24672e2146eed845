"""Admission control: refuse a new client at once while too much opening work is in flight.

A herd (every client reconnecting at once after a restart) otherwise queues its handshakes: each
admitted client costs the loop a 101, a session and an upstream handshake, the queue outgrows the
clients' own handshake timeout, every attempt is abandoned and retried, and the work is done for
nothing (congestion collapse). A 503 before any upstream work is the cheap answer; the client
comes back later and finds the queue shorter.

What counts as "opening": a client admitted (its handshake answered 101, or about to be) whose
first upstream open has not finished yet. That is the work a refusal saves. Handshakes whose
request the loop has not even read yet are not counted: their cost is spent whatever the answer.

Pure: no sockets, and the clock is injected (it only paces the event lines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# One ``load_shed`` event line per this many seconds at most, carrying the refusals since the
# previous one: a line per refusal would add to the very load being shed.
REPORT_INTERVAL_S = 1.0

# Sent as Retry-After on a shedding 503 (whole seconds, RFC 9110 section 10.2.3): a client that
# honours it spreads its next attempt past the current burst.
RETRY_AFTER_S = 1


@dataclass
class ShedReport:
    """What one ``load_shed`` event line says."""

    refused: int  # refusals since the previous line (this one included)
    refused_total: int
    opening: int
    limit: int


@dataclass
class Admission:
    limit: int
    clock: Callable[[], float]
    opening: int = 0
    refused_total: int = 0
    _unreported: int = 0
    _last_report: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"the admission limit must be at least 1, got {self.limit}")

    def try_admit(self) -> bool:
        """Admit one client (it then counts as opening until :meth:`release`), or count a refusal."""
        if self.opening >= self.limit:
            self.refused_total += 1
            self._unreported += 1
            return False
        self.opening += 1
        return True

    def release(self) -> None:
        """An admitted client's first upstream open finished (either way), or the client is gone."""
        if self.opening <= 0:
            raise RuntimeError("admission released more often than taken")
        self.opening -= 1

    def report_due(self) -> ShedReport | None:
        """The refusals to put in an event line now, if any are unreported and the last line is old enough."""
        if self._unreported == 0:
            return None
        now = self.clock()
        if self._last_report is not None and now - self._last_report < REPORT_INTERVAL_S:
            return None
        self._last_report = now
        report = ShedReport(self._unreported, self.refused_total, self.opening, self.limit)
        self._unreported = 0
        return report
