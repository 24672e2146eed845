"""FailoverLimiter at its edges, with a fake clock counted in milliseconds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancer.policy import (
    REFUSED_MAX_ATTEMPTS,
    REFUSED_MIN_INTERVAL,
    Decision,
    FailoverLimiter,
    choose_backend,
)


class FakeClock:
    def __init__(self) -> None:
        self.ms = 1_000_000  # far from 0, so "no attempt yet" can't hide behind t=0

    def __call__(self) -> float:
        return self.ms / 1000

    def advance_ms(self, ms: int) -> None:
        self.ms += ms


def limiter(clock: FakeClock, **kw: float) -> FailoverLimiter:
    return FailoverLimiter(clock=clock, **kw)  # type: ignore[arg-type]


def test_defaults() -> None:
    lim = FailoverLimiter()
    assert (lim.max_attempts, lim.window_s, lim.min_interval_s) == (3, 60.0, 5.0)


def test_third_attempt_allowed_fourth_refused() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    assert lim.try_acquire() == Decision(True, "allowed")
    clock.advance_ms(5_000)
    assert lim.try_acquire().allowed
    clock.advance_ms(5_000)
    assert lim.try_acquire().allowed, "the 3rd attempt in the window is allowed"
    clock.advance_ms(5_000)
    assert lim.try_acquire() == Decision(False, REFUSED_MAX_ATTEMPTS), "the 4th is refused"
    assert lim.attempts_in_window() == 3


def test_exactly_min_interval_apart_is_allowed() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    assert lim.try_acquire().allowed
    clock.advance_ms(5_000)
    assert lim.try_acquire().allowed


def test_just_under_min_interval_is_refused() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    assert lim.try_acquire().allowed
    clock.advance_ms(4_999)
    assert lim.try_acquire() == Decision(False, REFUSED_MIN_INTERVAL)
    clock.advance_ms(1)
    assert lim.try_acquire().allowed, "a refusal consumes nothing"


def test_window_slides() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    for _ in range(3):  # attempts at t=0, 5, 10 s
        assert lim.try_acquire().allowed
        clock.advance_ms(5_000)
    # now t=15 s; the oldest (t=0) counts until t=60 s exactly
    clock.ms += 60_000 - 15_000 - 1
    assert lim.try_acquire() == Decision(False, REFUSED_MAX_ATTEMPTS)
    clock.advance_ms(1)
    assert lim.try_acquire().allowed, "allowed again once the oldest falls out"
    assert lim.try_acquire() == Decision(False, REFUSED_MIN_INTERVAL)
    clock.advance_ms(4_999)  # t=64.999: t=5 s still in the window; t=10, 60 too
    assert not lim.try_acquire().allowed
    clock.advance_ms(1)  # t=65: t=5 s falls out
    assert lim.try_acquire().allowed


def test_injected_now_and_configuration() -> None:
    lim = FailoverLimiter(max_attempts=1, window_s=1.0, min_interval_s=0.0)
    assert lim.try_acquire(now=10.0).allowed
    assert not lim.try_acquire(now=10.999).allowed
    assert lim.try_acquire(now=11.0).allowed


def test_zero_attempts_refuses_everything() -> None:
    assert FailoverLimiter(max_attempts=0).try_acquire(now=0.0).reason == REFUSED_MAX_ATTEMPTS


def test_needs_a_clock_or_now() -> None:
    with pytest.raises(TypeError):
        FailoverLimiter().try_acquire()
    with pytest.raises(ValueError):
        FailoverLimiter(max_attempts=-1)


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=20_000), max_size=40),
    max_attempts=st.integers(0, 5),
    window_ms=st.integers(0, 30_000),
    min_ms=st.integers(0, 10_000),
)
def test_never_exceeds_its_limits(gaps: list[int], max_attempts: int, window_ms: int, min_ms: int) -> None:
    lim = FailoverLimiter(max_attempts, window_ms / 1000, min_ms / 1000)
    t, granted = 0, []
    for gap in gaps:
        t += gap
        if lim.try_acquire(now=t / 1000).allowed:
            granted.append(t)
    for a, b in itertools.pairwise(granted):
        assert b - a >= min_ms
    for i, start in enumerate(granted):
        assert sum(1 for g in granted[i:] if g - start < window_ms) <= max_attempts


def test_choose_backend_priority_first_healthy() -> None:
    names = ["primary", "secondary", "tertiary"]
    assert choose_backend(names, {"primary": True, "secondary": True}) == "primary"
    assert choose_backend(names, {"primary": False, "secondary": True}) == "secondary"
    assert choose_backend(names, {}, exclude={"primary"}) == "secondary"
    assert choose_backend(names, dict.fromkeys(names, False)) is None
