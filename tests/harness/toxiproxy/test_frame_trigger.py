"""The pass-through of a toxic triggered after N data frames, on the fake StageHost: whatever the
chunking, the bytes up to the end of the Nth data frame pass and nothing after them does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_toxiproxy_stages import Collect, FakeHost

from harness.toxiproxy.link import FrameCounter
from harness.toxiproxy.toxic_spec import new_toxic
from harness.toxiproxy.wsframes import Opcode, encode_frame

REQUEST_HEAD = b"GET /play?client=c1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
MASK = b"\x0a\x0b\x0c\x0d"


def counter(frames: int, counted: list[FrameCounter]) -> tuple[FrameCounter, Collect]:
    body = {"type": "timeout", "stream": "upstream", "trigger": {"after": "frames", "frames": frames}}
    out = Collect()
    stage = FrameCounter(FakeHost(), new_toxic(body, lambda _: False), out, upstream=True, counted=counted.append)
    return stage, out


def upstream_frames(kinds: list[bool]) -> list[bytes]:
    """A client's frames: True a text message, False a ping (not counted)."""
    ping = encode_frame(Opcode.PING, b"", mask_key=MASK)
    text = [encode_frame(Opcode.TEXT, b'{"seq": %d}' % i, mask_key=MASK) for i in range(len(kinds))]
    return [text[i] if data else ping for i, data in enumerate(kinds)]


def check_cut(kinds: list[bool], frames: int, stream: bytes, points: list[int]) -> None:
    """Feed ``stream`` cut at ``points``; the Nth data frame of ``kinds`` must end the bytes passed."""
    raw = upstream_frames(kinds)
    counted: list[FrameCounter] = []
    stage, out = counter(frames, counted)
    sent = 0
    for start, end in zip([0, *points], [*points, len(stream)], strict=True):
        if counted:
            break  # the link has woken the toxic: what follows goes to it, not here
        stage.push(stream[start:end], 0.0)
        sent = end
    data_ends = [i for i, data in enumerate(kinds) if data]
    if len(data_ends) < frames:
        assert not counted and out.data == stream  # never reached: everything passed untouched
        return
    nth = data_ends[frames - 1]
    boundary = len(stream) - sum(len(f) for f in raw[nth + 1 :])
    assert counted == [stage]
    assert out.data == stream[:boundary]
    held, eof = stage.drain()
    assert b"".join(d for d, _ in held) == stream[boundary:sent] and not eof


@settings(max_examples=200, deadline=None, database=None)
@given(kinds=st.lists(st.booleans(), min_size=1, max_size=12), frames=st.integers(1, 6),
       cuts=st.lists(st.integers(0, 600), max_size=8))  # fmt: skip
def test_from_the_connection_start_the_cut_is_exact_whatever_the_chunking(
    kinds: list[bool], frames: int, cuts: list[int]
) -> None:
    stream = REQUEST_HEAD + b"".join(upstream_frames(kinds))
    check_cut(kinds, frames, stream, sorted({c for c in cuts if 0 < c < len(stream)}))


@settings(max_examples=200, deadline=None, database=None)
@given(kinds=st.lists(st.booleans(), min_size=1, max_size=12), frames=st.integers(1, 6), data=st.data())
def test_mid_stream_it_counts_from_chunks_that_are_whole_frames(
    kinds: list[bool], frames: int, data: st.DataObject
) -> None:
    # Met mid-stream, the parser can only trust a chunk that parses exactly into whole frames
    # (docs/toxiproxy-extensions.md); senders write a small message in one write, so chunks that
    # group whole frames are the case that matters.
    raw = upstream_frames(kinds)
    ends = [sum(len(f) for f in raw[: i + 1]) for i in range(len(raw) - 1)]
    points = sorted(data.draw(st.sets(st.sampled_from(ends))) if ends else [])
    check_cut(kinds, frames, b"".join(raw), points)


def test_a_first_frame_cut_mid_stream_is_not_counted_until_a_chunk_is_in_step() -> None:
    # The known limit of resynchronising: a chunk that starts inside a frame proves no boundary.
    first, second = upstream_frames([True, True])
    counted: list[FrameCounter] = []
    stage, out = counter(1, counted)
    stage.push(first[:1], 0.0)
    stage.push(first[1:], 0.0)
    assert not counted
    stage.push(second, 0.0)
    assert counted == [stage] and out.data == first + second
