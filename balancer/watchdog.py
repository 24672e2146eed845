"""The send deadline, without a timer per message.

A send that outlasts the deadline means the peer stopped reading (see
``Session._deliver``). Wrapping every ``send()`` in ``asyncio.timeout`` made a
timer, a handle and a cancellation per message (16% of the relay's Python time
in the profile). A ``SendWatchdog`` instead marks when the current send began;
one timer, armed by the first send after an idle spell, checks at the earliest
moment that send could be overdue and re-arms itself for the current send's
deadline while sends keep completing. An idle leg has no timer at all, a busy
one about one timer per deadline, and a send is still never allowed to block
longer than the deadline (plus the loop's own lateness).

When the deadline passes, ``on_stall`` is called (the session aborts the
transport, which ends the blocked ``send()``), and ``stalled`` stays true, so
the sender can tell a stall from an ordinary close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class SendWatchdog:
    __slots__ = ("_deadline", "_loop", "_on_stall", "_started", "_timer", "stalled")

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline_s: float, on_stall: Callable[[], None]) -> None:
        self._loop = loop
        self._deadline = deadline_s
        self._on_stall = on_stall
        self._started: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.stalled = False

    def begin(self) -> None:
        """A send starts now."""
        now = self._loop.time()
        self._started = now
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._deadline, self._check)

    def end(self) -> None:
        """The send started by the last ``begin`` is over (done, failed or cancelled)."""
        self._started = None

    def cancel(self) -> None:
        """The leg is over: no more checks."""
        self._started = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        started = self._started
        if started is None:
            return  # idle: the next begin() arms a new timer
        due = started + self._deadline
        if self._loop.time() < due:
            # A later send is in progress; check again when it could be overdue.
            self._timer = self._loop.call_at(due, self._check)
            return
        self.stalled = True
        self._started = None
        self._on_stall()
