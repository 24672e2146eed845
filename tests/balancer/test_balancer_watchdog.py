"""The send deadline's watchdog: no timer per send, and still a bounded send."""

from __future__ import annotations

import asyncio

from balancer.watchdog import SendWatchdog


async def test_a_send_past_the_deadline_is_stalled_once() -> None:
    loop = asyncio.get_running_loop()
    stalls: list[float] = []
    dog = SendWatchdog(loop, 0.05, lambda: stalls.append(loop.time()))
    t0 = loop.time()
    dog.begin()
    await asyncio.sleep(0.2)
    assert dog.stalled
    assert len(stalls) == 1
    assert stalls[0] - t0 >= 0.05 - loop._clock_resolution  # type: ignore[attr-defined]
    dog.end()
    dog.cancel()


async def test_sends_that_complete_in_time_never_stall() -> None:
    loop = asyncio.get_running_loop()
    dog = SendWatchdog(loop, 0.05, lambda: None)
    # Many short sends spanning several deadlines: only the current send counts.
    for _ in range(15):
        dog.begin()
        await asyncio.sleep(0.01)
        dog.end()
    assert not dog.stalled
    dog.cancel()


async def test_a_late_send_is_judged_by_its_own_start() -> None:
    loop = asyncio.get_running_loop()
    stalls: list[float] = []
    dog = SendWatchdog(loop, 0.1, lambda: stalls.append(loop.time()))
    dog.begin()
    await asyncio.sleep(0.08)
    dog.end()
    t1 = loop.time()
    dog.begin()  # begun just before the first timer fires: that timer must re-arm, not stall it
    await asyncio.sleep(0.05)
    assert not dog.stalled
    await asyncio.sleep(0.15)
    assert dog.stalled and len(stalls) == 1
    assert stalls[0] - t1 >= 0.1 - loop._clock_resolution  # type: ignore[attr-defined]
    dog.cancel()


async def test_an_idle_or_cancelled_watchdog_holds_no_timer() -> None:
    loop = asyncio.get_running_loop()
    dog = SendWatchdog(loop, 0.02, lambda: None)
    dog.begin()
    dog.end()
    await asyncio.sleep(0.05)
    assert dog._timer is None, "the timer of an idle leg is not re-armed"
    dog.begin()
    dog.cancel()
    assert dog._timer is None
    await asyncio.sleep(0.05)
    assert not dog.stalled
