"""Event lines (the build contract) and counters shared by the I/O shell."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO


class EventLog:
    """One JSON object per line on stdout, flushed at once.

    Flushing per line matters: the harness tails stdout of a process it may
    SIGKILL, and a buffered line would be lost with it.
    """

    def __init__(self, stream: TextIO | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self._stream = stream
        self._wall_clock = wall_clock

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "ts": self._wall_clock(), **fields}
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(json.dumps(record, separators=(",", ":")) + "\n")
            stream.flush()
        except (OSError, ValueError):
            # A reader that went away, or a full disk under the log file, must not take the relay
            # down with it (the harness sets aside a run whose logs lost lines).
            pass


@dataclass
class Stats:
    sessions_total: int = 0
    concurrent_recv: int = 0
    failover_allowed: int = 0
    failover_refused: int = 0
    resent_messages: int = 0
    dropped_inflight: int = 0
    upstreams_lost: int = 0
