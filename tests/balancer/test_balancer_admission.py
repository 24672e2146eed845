"""Admission control's decision (balancer.admission), with an injected clock: milliseconds."""

from __future__ import annotations

import pytest

from balancer.admission import REPORT_INTERVAL_S, Admission, ShedReport


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_admits_up_to_the_limit_then_refuses_and_counts() -> None:
    adm = Admission(limit=3, clock=FakeClock())
    assert [adm.try_admit() for _ in range(5)] == [True, True, True, False, False]
    assert (adm.opening, adm.refused_total) == (3, 2), "a refusal takes no place"


def test_a_release_makes_room_for_exactly_one() -> None:
    adm = Admission(limit=2, clock=FakeClock())
    assert adm.try_admit() and adm.try_admit()
    adm.release()
    assert adm.try_admit()
    assert not adm.try_admit()
    assert adm.opening == 2


def test_limit_one_admits_one_at_a_time() -> None:
    adm = Admission(limit=1, clock=FakeClock())
    for _ in range(3):
        assert adm.try_admit()
        assert not adm.try_admit()
        adm.release()
    assert (adm.opening, adm.refused_total) == (0, 3)


def test_release_without_a_hold_is_a_bug_not_a_negative_count() -> None:
    adm = Admission(limit=2, clock=FakeClock())
    with pytest.raises(RuntimeError, match="released more often than taken"):
        adm.release()
    assert adm.opening == 0


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match=f"at least 1, got {limit}"):
        Admission(limit=limit, clock=FakeClock())


def test_nothing_to_report_without_refusals() -> None:
    adm = Admission(limit=1, clock=FakeClock())
    assert adm.try_admit()
    assert adm.report_due() is None


def test_reports_are_paced_and_carry_every_refusal() -> None:
    clock = FakeClock()
    adm = Admission(limit=1, clock=clock)
    assert adm.try_admit()
    assert not adm.try_admit()
    assert adm.report_due() == ShedReport(refused=1, refused_total=1, opening=1, limit=1), "the first at once"
    for _ in range(4):
        assert not adm.try_admit()
        clock.now += REPORT_INTERVAL_S / 10
        assert adm.report_due() is None, "within the interval: held back"
    clock.now += REPORT_INTERVAL_S
    assert not adm.try_admit()
    assert adm.report_due() == ShedReport(refused=5, refused_total=6, opening=1, limit=1)
    assert adm.report_due() is None, "reported once"
