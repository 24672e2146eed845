"""The reference balancer with one defect in its frame-level data path: it takes every TCP read to
end on a frame boundary.

A build that parses frames itself (``balancer.frames.FrameSplitter``, used by sessions whose
client negotiated no compression) must keep the start of a frame that a read ends with until the
rest arrives. This one throws it away, as a parser written for "one read, whole frames" does: the
next read then starts in the middle of a frame, its bytes are taken for a frame header, and the
client is failed with 1002 (or its message silently lost). websockets-based builds such as the
minibalancer reassemble segments in the protocol layer, so they cannot carry this defect honestly.

Everything else is the reference, unchanged: the one patched method is wrapped, then
``balancer.__main__`` runs as ``python -m balancer`` would.

    python tests/selftest/mutants/partial_frame_dropped.py CONFIG.json [flags]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The balancer package of the same tree as this file, whatever else is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from balancer.__main__ import main
from balancer.frames import FrameSplitter, Item

_feed = FrameSplitter.feed


def _feed_whole_reads(self: FrameSplitter, data: bytes) -> list[Item]:
    items = _feed(self, data)
    # DEFECT(partial_frame_dropped): a read is taken to hold whole frames; the start of a frame it
    # DEFECT(partial_frame_dropped): ends with is dropped instead of kept for the next read.
    self._buffer.clear()
    return items


FrameSplitter.feed = _feed_whole_reads  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
