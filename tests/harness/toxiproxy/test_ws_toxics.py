"""Frame-aware toxic stages driven through the fake StageHost: frames in, frames out, no sockets."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from test_toxiproxy_stages import Collect, FakeHost

from harness.toxiproxy.errors import ApiError
from harness.toxiproxy.toxic_spec import DOWNSTREAM, UPSTREAM, ToxicSpec, new_toxic
from harness.toxiproxy.toxics import STAGES, StageHost
from harness.toxiproxy.ws_toxics import _BUDGETS, PROTOCOL_ERRORS, WS_STAGES, FrameStage
from harness.toxiproxy.wsframes import Frame, FrameParser, Head, Opcode, encode_frame, parse_close

REQUEST_HEAD = b"GET /play HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
RESPONSE_HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"


def spec_for(toxic_type: str, direction: int = DOWNSTREAM, **attributes: int) -> ToxicSpec:
    """The spec the API would create: defaults filled in and validated."""
    stream = "upstream" if direction == UPSTREAM else "downstream"
    return new_toxic({"type": toxic_type, "stream": stream, "attributes": attributes}, lambda name: False)


def build(toxic_type: str, direction: int = DOWNSTREAM, **attributes: int) -> tuple[FakeHost, FrameStage, Collect]:
    host = FakeHost()
    out = Collect()
    _: StageHost = host
    stage = WS_STAGES[toxic_type](host, spec_for(toxic_type, direction, **attributes), out)
    assert isinstance(stage, FrameStage)
    return host, stage, out


def msg(i: int, direction: int = DOWNSTREAM) -> bytes:
    key = b"\x01\x02\x03\x04" if direction == UPSTREAM else None
    return encode_frame(Opcode.TEXT, f'{{"seq":{i}}}'.encode(), mask_key=key)


def frames_out(out: Collect, direction: int = DOWNSTREAM) -> list[Frame]:
    # The stages' output is parsed from the stream start, so malformed frames count too.
    head = REQUEST_HEAD if direction == UPSTREAM else RESPONSE_HEAD
    parser = FrameParser(expect_masked=direction == UPSTREAM)
    events = parser.feed(head + out.data.removeprefix(head))
    assert parser.buffered == 0, "the output ends inside a frame"
    return [e for e in events if isinstance(e, Frame)]


def texts(out: Collect, direction: int = DOWNSTREAM) -> list[bytes]:
    return [f.payload for f in frames_out(out, direction) if f.opcode == Opcode.TEXT]


def test_every_ws_type_is_registered_with_the_api_schema_and_the_data_path() -> None:
    for toxic_type, stage in WS_STAGES.items():
        assert STAGES[toxic_type] is stage
        assert spec_for(toxic_type).attributes["nth"] == 1


@pytest.mark.parametrize(
    ("toxic_type", "attributes", "problem"),
    [
        ("ws_drop", {"nth": -1}, "ws_drop nth must be between 0 and"),
        ("ws_split", {"segments": 0}, "ws_split segments must be between 1 and 65536, got 0"),
        ("ws_ping", {"size": 126}, "ws_ping size must be at most 125"),
        ("ws_ping", {"count": 0}, "ws_ping count must be between 1 and 100000, got 0"),
        ("ws_protocol_error", {"kind": 3}, "ws_protocol_error kind must be between 0 and 2, got 3"),
        ("ws_close", {"code": 1006}, "ws_close code 1006 may not be sent in a close frame"),
        ("ws_close", {"code": 5000}, "ws_close code must be between 1000 and 4999, got 5000"),
    ],
)
def test_bad_attributes_are_a_400_naming_the_problem(toxic_type: str, attributes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ApiError) as caught:
        spec_for(toxic_type, **attributes)
    assert caught.value.status == 400
    assert problem in str(caught.value)


def test_the_head_passes_untouched_and_untargeted_frames_pass_as_they_are() -> None:
    host, stage, out = build("ws_drop", nth=3)
    stream = RESPONSE_HEAD + msg(1) + encode_frame(Opcode.PING, b"p") + msg(2)
    # Byte by byte: the stage must reassemble frames from any chunking.
    for i in range(len(stream)):
        stage.push(stream[i : i + 1], 0.0)
    assert out.data == stream
    assert host.held == 0


def test_drop_removes_exactly_the_nth_data_frame_not_control_frames() -> None:
    _host, stage, out = build("ws_drop", nth=2)
    stage.push(RESPONSE_HEAD + msg(1) + encode_frame(Opcode.PING, b"p") + msg(2) + msg(3), 0.0)
    assert out.data.startswith(RESPONSE_HEAD)
    assert [f.opcode for f in frames_out(out)] == [Opcode.TEXT, Opcode.PING, Opcode.TEXT]
    assert texts(out) == [b'{"seq":1}', b'{"seq":3}']


def test_nth_zero_means_every_data_frame() -> None:
    _host, stage, out = build("ws_drop", nth=0)
    stage.push(msg(1) + encode_frame(Opcode.PONG, b"") + msg(2), 0.0)
    assert [f.opcode for f in frames_out(out)] == [Opcode.PONG]


@pytest.mark.parametrize("direction", [UPSTREAM, DOWNSTREAM])
def test_duplicate_sends_a_copy_masked_as_the_direction_requires(direction: int) -> None:
    _host, stage, out = build("ws_duplicate", direction, nth=1)
    stage.push(msg(1, direction) + msg(2, direction), 0.0)
    sent = frames_out(out, direction)
    assert [f.payload for f in sent] == [b'{"seq":1}', b'{"seq":1}', b'{"seq":2}']
    assert all(f.masked == (direction == UPSTREAM) for f in sent)
    if direction == UPSTREAM:
        assert sent[1].mask_key != sent[0].mask_key  # a fresh key, not a replay of the original


def test_delay_holds_the_frame_and_keeps_everything_behind_it_in_order() -> None:
    host, stage, out = build("ws_delay", nth=2, delay=100)
    stage.push(msg(1) + msg(2), 0.0)
    stage.push(msg(3), 0.01)
    assert texts(out) == [b'{"seq":1}']
    assert host.held == len(msg(2)) + len(msg(3))
    host.advance(0.099)
    assert texts(out) == [b'{"seq":1}']
    host.advance(0.002)
    assert texts(out) == [b'{"seq":1}', b'{"seq":2}', b'{"seq":3}']
    assert host.held == 0


def test_delay_holds_eof_behind_the_frame() -> None:
    host, stage, out = build("ws_delay", nth=1, delay=50)
    stage.push(msg(1), 0.0)
    stage.eof()
    assert not out.ended
    host.advance(0.06)
    assert out.ended and texts(out) == [b'{"seq":1}']


def test_split_writes_the_frame_in_paced_segments() -> None:
    host, stage, out = build("ws_split", nth=1, segments=4, delay=1000)
    frame = msg(1)
    stage.push(frame + msg(2), 0.0)
    assert len(out.chunks) == 1
    host.advance(0.0035)
    assert len(out.chunks) == 5  # four segments, then the next frame behind them
    assert b"".join(c for c, _ in out.chunks[:4]) == frame
    assert out.chunks[4][0] == msg(2)
    assert host.held == 0


def test_split_without_delay_and_more_segments_than_bytes() -> None:
    _host, stage, out = build("ws_split", nth=1, segments=1000)
    frame = msg(1)
    stage.push(frame, 0.0)
    assert [c for c, _ in out.chunks] == [frame[i : i + 1] for i in range(len(frame))]


@pytest.mark.parametrize("direction", [UPSTREAM, DOWNSTREAM])
def test_ping_flood_comes_before_the_target_frame(direction: int) -> None:
    _host, stage, out = build("ws_ping", direction, nth=1, count=50, size=10)
    stage.push(msg(1, direction) + msg(2, direction), 0.0)
    sent = frames_out(out, direction)
    assert [f.opcode for f in sent] == [Opcode.PING] * 50 + [Opcode.TEXT, Opcode.TEXT]
    assert all(f.masked == (direction == UPSTREAM) for f in sent)
    assert all(len(f.payload) == 10 for f in sent[:50])
    assert len({f.payload for f in sent[:50]}) == 50


@pytest.mark.parametrize(
    ("kind", "opcode", "payload_check"),
    [
        ("reserved_opcode", 0x3, lambda p: len(p) > 0),
        ("invalid_utf8", Opcode.TEXT, lambda p: _not_utf8(p)),
        ("oversized", Opcode.BINARY, lambda p: len(p) == 1024 * 1024 + 1),
    ],
)
@pytest.mark.parametrize("direction", [UPSTREAM, DOWNSTREAM])
def test_protocol_errors(direction: int, kind: str, opcode: int, payload_check: Any) -> None:
    _host, stage, out = build("ws_protocol_error", direction, nth=2, kind=PROTOCOL_ERRORS[kind])
    stage.push(msg(1, direction) + msg(2, direction), 0.0)
    sent = frames_out(out, direction)
    assert [f.opcode for f in sent] == [Opcode.TEXT, opcode, Opcode.TEXT]
    assert payload_check(sent[1].payload)
    assert all(f.masked == (direction == UPSTREAM) for f in sent)


def _not_utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return True
    return False


def test_a_data_frame_is_never_injected_between_fragments() -> None:
    # The second data frame is the continuation: the injection waits for the next message.
    _host, stage, out = build("ws_protocol_error", nth=2, kind=PROTOCOL_ERRORS["invalid_utf8"])
    first = encode_frame(Opcode.TEXT, b"part one ", fin=False)
    ping = encode_frame(Opcode.PING, b"")
    last = encode_frame(Opcode.CONTINUATION, b"part two")
    stage.push(first + ping + last + msg(2), 0.0)
    assert [f.opcode for f in frames_out(out)] == [Opcode.TEXT, Opcode.PING, Opcode.CONTINUATION, Opcode.TEXT,
                                                    Opcode.TEXT]  # fmt: skip
    assert frames_out(out)[3].payload.startswith(b"wschaos")


def test_close_sends_the_code_then_ends_the_link_and_drops_the_rest() -> None:
    _host, stage, out = build("ws_close", nth=2, code=4001)
    stage.push(msg(1) + msg(2) + msg(3), 0.0)
    stage.push(msg(4), 0.0)
    sent = frames_out(out)
    assert [f.opcode for f in sent] == [Opcode.TEXT, Opcode.CLOSE]
    assert parse_close(sent[1].payload) == (4001, "wschaos ws_close_downstream")
    assert out.ended


def test_connections_bounds_how_many_links_a_toxic_fires_on() -> None:
    spec = spec_for("ws_protocol_error", UPSTREAM, connections=1)
    results = []
    for _ in range(3):
        # Each link is dropped before the next is made, as connections come and go: a new
        # link must not pass for one that already fired.
        host, out = FakeHost(), Collect()
        stage = WS_STAGES["ws_protocol_error"](host, spec, out)
        stage.push(msg(1, UPSTREAM) + msg(2, UPSTREAM), 0.0)
        stage.push(msg(3, UPSTREAM), 0.0)
        results.append(len(frames_out(out, UPSTREAM)))
        del host, stage
        gc.collect()
    assert results == [4, 3, 3]
    del spec
    gc.collect()
    assert not _BUDGETS


def test_added_mid_stream_it_resynchronises_on_a_whole_frame() -> None:
    _host, stage, out = build("ws_drop", nth=1)
    whole = msg(1)
    stage.push(whole[5:], 0.0)  # the tail of a frame already under way: not ours to parse
    stage.push(msg(2) + msg(3), 0.0)
    assert out.data == whole[5:] + msg(3)


def test_stream_start_head_detection_per_direction() -> None:
    _host, stage, out = build("ws_drop", UPSTREAM, nth=1)
    stage.push(REQUEST_HEAD + msg(1, UPSTREAM) + msg(2, UPSTREAM), 0.0)
    assert out.data == REQUEST_HEAD + msg(2, UPSTREAM)
    assert FrameParser().feed(REQUEST_HEAD) == [Head(REQUEST_HEAD)]


def test_drain_gives_back_held_and_partial_bytes_in_order() -> None:
    host, stage, out = build("ws_delay", nth=1, delay=1000)
    stage.push(RESPONSE_HEAD + msg(1) + msg(2)[:3], 0.0)
    assert host.held == len(msg(1)) + 3
    held, eof_pending = stage.drain()
    assert out.data == RESPONSE_HEAD
    assert b"".join(d for d, _ in held) == msg(1) + msg(2)[:3]
    assert (eof_pending, host.held, host.pending()) == (False, 0, 0)


def test_eof_inside_a_frame_passes_the_partial_bytes_then_ends() -> None:
    host, stage, out = build("ws_drop", nth=5)
    stage.push(RESPONSE_HEAD + msg(1)[:4], 0.0)
    assert host.held == 4
    stage.eof()
    assert out.data == RESPONSE_HEAD + msg(1)[:4] and out.ended and host.held == 0


@pytest.mark.parametrize("toxic_type", ["ws_drop", "ws_duplicate", "ws_delay", "ws_split", "ws_ping"])
def test_a_frame_toxic_counts_the_connection_it_acted_on_and_nothing_before(toxic_type: str) -> None:
    # The landing evidence the nemesis reads at heal (docs/toxiproxy-extensions.md): without it a
    # frame fault on a busy link would be judged "touched nothing" and the run inconclusive.
    _host, stage, _out = build(toxic_type, nth=2)
    stage.push(RESPONSE_HEAD + msg(1), 0.0)
    assert stage.spec.state.connections == 0
    stage.push(msg(2), 0.0)
    assert stage.spec.state.connections == 1
    stage.push(msg(3), 0.0)
    assert stage.spec.state.connections == 1, "one connection counts once"
