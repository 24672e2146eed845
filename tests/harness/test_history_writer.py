"""HistoryWriter on a disk that is full: the recorder keeps going, the loss is remembered.

/dev/full answers every write with ENOSPC, a real full disk in a file name.
"""

from __future__ import annotations

import errno
from pathlib import Path

from harness.history import HistoryWriter, describe_write_failure, read_jsonl


def test_a_full_disk_is_remembered_not_raised() -> None:
    writer = HistoryWriter("/dev/full", "c001")
    for seq in range(1, 4):
        rec = writer.record("invoke", "move", seq=seq)
        assert rec["seq"] == seq  # the caller still gets its record
    assert writer.lost is not None and writer.lost.startswith("disk full (No space left on device) writing /dev/full")
    assert writer.dropped == 3
    writer.close()  # flushing the lost line again must not raise either


def test_a_whole_history_has_nothing_lost(tmp_path: Path) -> None:
    with HistoryWriter(tmp_path / "h.jsonl", "c001") as writer:
        writer.event("conn_open", conn=1)
    assert writer.lost is None and writer.dropped == 0
    records, problems = read_jsonl(tmp_path / "h.jsonl")
    assert [r["f"] for r in records] == ["conn_open"] and problems == []


def test_write_failures_are_named() -> None:
    assert describe_write_failure("x", OSError(errno.EDQUOT, "Disk quota exceeded")).startswith("disk full")
    assert describe_write_failure("x", OSError(errno.EFBIG, "File too large")) == (
        "file size limit reached (File too large) writing x"
    )
    assert describe_write_failure("x", OSError(errno.EIO, "Input/output error")) == "Input/output error writing x"
