"""Bounded waits on a condition: the one home for "poll until true, or fail at a deadline".

Never sleep to synchronise; wait on a condition with a deadline. Both helpers raise
``TimeoutError`` naming what was awaited, so a stuck wait is a clear failure, never a hang.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Condition = Callable[[], bool]
AsyncCondition = Callable[[], bool | Awaitable[bool]]


def wait_until(condition: Condition, *, timeout: float, interval: float = 0.02, what: str = "condition") -> None:
    """Polls ``condition`` until it holds; raises TimeoutError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


async def wait_until_async(
    condition: AsyncCondition, *, timeout: float, interval: float = 0.02, what: str = "condition"
) -> None:
    """The asyncio twin of :func:`wait_until`: ``condition`` may be sync or return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
