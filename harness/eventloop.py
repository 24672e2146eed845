"""The harness's own event loops: which loop to run, and evidence of when a loop was starved.

A harness process (a client swarm, a backend) that cannot get the CPU answers the balancer's
keepalive pings late, and the balancer then rightly drops its connections. Such a failure is the
harness's, not the build's, and only the starved process can tell: :func:`watch_loop_lag` ticks
every :data:`TICK_S` and records each tick that ran later than :data:`LAG_THRESHOLD_S` as a
``loop_lag`` record (``lag_ms``: how late; the record's time is when the late tick ran, so the
loop was stalled over ``[t - lag, t]``). :mod:`harness.analysis` reads them (``harness_stalls``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

TICK_S = 0.05
# Below this a late tick is ordinary scheduling noise; well below any keepalive timeout.
LAG_THRESHOLD_S = 0.1
# The record names: `loop_lag` from every watched process (swarms in the history, backends in
# their journals), and `swarm_start` naming the clients a swarm process runs.
LOOP_LAG = "loop_lag"
SWARM_START = "swarm_start"
LOOP_ENV = "WSCHAOS_LOOP"

RecordLag = Callable[[float, int], Any]  # (lag_s, ticks_late_in_a_row)


async def watch_loop_lag(record: RecordLag, *, tick_s: float = TICK_S, threshold_s: float = LAG_THRESHOLD_S) -> None:
    """Runs until cancelled; calls ``record(lag_s, streak)`` for every tick late by more than
    `threshold_s`. Owned by the caller's TaskGroup (cancel it when the process stops)."""
    loop = asyncio.get_running_loop()
    due = loop.time() + tick_s
    streak = 0
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        now = loop.time()
        lag = now - due
        if lag > threshold_s:
            streak += 1
            record(lag, streak)
        else:
            streak = 0
        # The next tick is due one period after this one ran, so one stall is reported once,
        # not once per missed period.
        due = now + tick_s


def loop_factory(env: str = LOOP_ENV) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: it roughly halves the per-event cost (docs/performance.md), so a
    busy machine starves a harness process less. ``<env>=asyncio`` forces the standard loop."""
    if os.environ.get(env, "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name(env: str = LOOP_ENV) -> str:
    return "uvloop" if loop_factory(env) is not None else "asyncio"


# -- the machine's slowness -------------------------------------------------------------------------

# A busy loop until this much CPU time is spent: long enough to see the scheduler share, short
# enough (tens of ms on a quiet machine) to run at every swarm start.
CALIBRATION_CPU_S = 0.03
CALIBRATION_MAX_WALL_S = 2.0


def slowness_factor(wall_s: float, cpu_s: float) -> float:
    """How many times longer than its own CPU time a busy loop took: 1.0 on a machine with a core
    to spare, N when N runnable processes share each core. Never below 1."""
    if cpu_s <= 0:
        return 1.0
    return max(1.0, wall_s / cpu_s)


def measure_slowness(
    *,
    cpu_s: float = CALIBRATION_CPU_S,
    max_wall_s: float = CALIBRATION_MAX_WALL_S,
    wall: Callable[[], float] = time.perf_counter,
    cpu: Callable[[], float] = time.process_time,
) -> float:
    """The machine's slowness as this process sees it now: a calibrated busy loop's wall time over
    its CPU time. Bounded by `max_wall_s` (a machine so slow it cannot finish is judged from what
    it did). Blocks the caller: call it before the event loop has work."""
    wall0, cpu0 = wall(), cpu()
    spins = 0
    while cpu() - cpu0 < cpu_s and wall() - wall0 < max_wall_s:
        for _ in range(1000):
            spins += 1
    return slowness_factor(wall() - wall0, cpu() - cpu0)
