"""How certify shares its work out among lanes (pure parts; the real run is in tests/chaos)."""

from __future__ import annotations

import pytest

from harness.certify import LANES_PER_CORE, MAX_LANES, default_parallel, generated_chunks


@pytest.mark.parametrize(
    ("examples", "lanes", "chunks"),
    [
        (0, 4, []),
        (1, 4, [1]),
        (5, 1, [5]),
        (5, 4, [3, 2]),  # at least 2 a chunk: a run of 1 would only ever try the simplest plan
        (20, 4, [5, 5, 5, 5]),
        (21, 4, [6, 5, 5, 5]),
    ],
)
def test_generated_plans_are_shared_evenly_and_all_drawn(examples: int, lanes: int, chunks: list[int]) -> None:
    assert generated_chunks(examples, lanes) == chunks
    assert sum(chunks) == examples


def test_default_parallel_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert default_parallel() == LANES_PER_CORE
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert default_parallel() == MAX_LANES
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert default_parallel() >= 1
