"""The RFC 6455 frame parser and encoder: pure, so Hypothesis can drive them hard."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode
from websockets.streams import StreamReader

from harness.toxiproxy.wsframes import (
    MAX_HEAD,
    RESERVED_OPCODES,
    Event,
    Frame,
    FrameParser,
    Head,
    Opaque,
    Opcode,
    apply_mask,
    close_payload,
    encode_frame,
    make_frame,
    parse_close,
    rebuilt,
)

REQUEST_HEAD = (
    b"GET /play?client=c1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
RESPONSE_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)

# Payloads across the 7-bit, 16-bit and 64-bit length encodings; big ones are built, not drawn
# byte by byte, which would be slow.
payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, b: bytes([b]) * n, st.sampled_from([125, 126, 65535, 65536]), st.integers(0, 255)),
)
keys = st.one_of(st.none(), st.binary(min_size=4, max_size=4))


@st.composite
def frames(draw: st.DrawFn, masked: bool | None = None) -> Frame:
    control = draw(st.booleans())
    if control:
        opcode = draw(st.sampled_from([Opcode.CLOSE, Opcode.PING, Opcode.PONG]))
        payload = draw(st.binary(max_size=125))
        fin, rsv = True, 0
    else:
        opcode = draw(st.sampled_from([Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY]))
        payload = draw(payloads)
        fin, rsv = draw(st.booleans()), draw(st.sampled_from([0, 0b100]))
    if masked is None:
        key = draw(keys)
    else:
        key = draw(st.binary(min_size=4, max_size=4)) if masked else None
    return Frame(fin, rsv, int(opcode), key, payload, encode_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=key))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def feed_all(parser: FrameParser, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


# -- masking and encoding ---------------------------------------------------------------------


@given(st.binary(max_size=2000), st.binary(min_size=4, max_size=4))
def test_masking_twice_is_identity_and_matches_the_rfc(data: bytes, key: bytes) -> None:
    masked = apply_mask(data, key)
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert apply_mask(masked, key) == data


def test_masking_key_must_be_four_bytes() -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"abc", b"\x00\x01")


def test_rfc_example_frames() -> None:
    # RFC 6455 section 5.7: "Hello", unmasked then masked with 37 fa 21 3d.
    assert encode_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert encode_frame(Opcode.TEXT, b"Hello", mask_key=bytes.fromhex("37fa213d")) == bytes.fromhex(
        "818537fa213d7f9f4d5158"
    )
    assert encode_frame(Opcode.BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert encode_frame(Opcode.BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")


@pytest.mark.parametrize(("opcode", "rsv"), [(16, 0), (-1, 0), (1, 8)])
def test_encode_rejects_out_of_range_fields(opcode: int, rsv: int) -> None:
    with pytest.raises(ValueError, match="bits"):
        encode_frame(opcode, b"", rsv=rsv)


@settings(max_examples=200)
@given(frames().filter(lambda f: f.rsv == 0))  # websockets without extensions refuses RSV1
def test_websockets_reads_what_we_encode(frame: Frame) -> None:
    reader = StreamReader()
    reader.feed_data(frame.raw)
    reader.feed_eof()
    parse = WsFrame.parse(reader.read_exact, mask=frame.masked, max_size=None, extensions=None)
    try:
        next(parse)
    except StopIteration as done:
        theirs = done.value
    else:  # pragma: no cover - the parser needs no more than what was fed
        pytest.fail("websockets wanted more bytes")
    assert (theirs.opcode.value, theirs.data, theirs.fin) == (frame.opcode, frame.payload, frame.fin)


@settings(max_examples=200)
@given(payloads, st.booleans(), st.sampled_from([WsOpcode.TEXT, WsOpcode.BINARY, WsOpcode.CONT]))
def test_we_read_what_websockets_writes(payload: bytes, mask: bool, opcode: WsOpcode) -> None:
    raw = WsFrame(opcode, payload).serialize(mask=mask)
    parser = FrameParser(expect_masked=mask)
    events = feed_all(parser, [b"\x81\x00" if not mask else encode_frame(1, b"", mask_key=b"abcd"), raw])
    frame = events[-1]
    assert isinstance(frame, Frame)
    assert (frame.opcode, frame.payload, frame.masked, frame.raw) == (opcode.value, payload, mask, raw)


# -- the parser ---------------------------------------------------------------------------------


@settings(max_examples=150)
@given(
    st.sampled_from([REQUEST_HEAD, RESPONSE_HEAD]),
    st.lists(frames(), max_size=8),
    st.lists(st.integers(min_value=0), max_size=40),
)
def test_any_chunking_yields_the_head_then_the_frames(head: bytes, sent: list[Frame], cuts: list[int]) -> None:
    stream = head + b"".join(f.raw for f in sent)
    parser = FrameParser()
    events = feed_all(parser, chunked(stream, cuts))
    assert events == [Head(head), *sent]
    assert parser.buffered == 0
    assert parser.in_step


@settings(max_examples=200)
@given(st.lists(frames(masked=True), min_size=1, max_size=6), st.lists(st.integers(min_value=0), max_size=20))
def test_bytes_out_equal_bytes_in(sent: list[Frame], cuts: list[int]) -> None:
    stream = REQUEST_HEAD + b"".join(f.raw for f in sent)
    parser = FrameParser(expect_masked=True)
    events = feed_all(parser, chunked(stream, cuts))
    assert b"".join(e.raw for e in events) + parser.take_buffered() == stream


@given(frames(), st.integers(min_value=1))
def test_an_incomplete_frame_is_held_and_can_be_taken(frame: Frame, cut: int) -> None:
    cut = 1 + cut % (len(frame.raw) - 1)  # strictly inside the frame (a frame is at least 2 bytes)
    parser = FrameParser()
    assert parser.feed(RESPONSE_HEAD) == [Head(RESPONSE_HEAD)]
    assert parser.feed(frame.raw[:cut]) == []
    assert parser.buffered == cut
    assert parser.take_buffered() == frame.raw[:cut]
    assert parser.buffered == 0


def test_a_frame_split_mid_extended_length_and_mid_key() -> None:
    frame = make_frame(Opcode.BINARY, bytes(range(200)), to_server=True)
    parser = FrameParser()
    parser.feed(REQUEST_HEAD)
    # 2 header bytes, 2 of extended length, 4 of key: cut inside each.
    for start, end in ((0, 1), (1, 3), (3, 5), (5, 7)):
        assert parser.feed(frame.raw[start:end]) == []
    assert parser.feed(frame.raw[7:]) == [frame]


def test_malformed_frames_are_reported_as_they_are() -> None:
    parser = FrameParser(expect_masked=True)
    parser.feed(REQUEST_HEAD)
    weird = encode_frame(0x3, b"x", rsv=0b011)  # reserved opcode, RSV2/3, unmasked toward a server
    (frame,) = parser.feed(weird)
    assert isinstance(frame, Frame)
    assert (frame.opcode, frame.rsv, frame.masked, frame.raw) == (0x3, 0b011, False, weird)


def test_a_head_too_long_is_forwarded_opaque() -> None:
    parser = FrameParser()
    junk = b"GET /" + b"a" * MAX_HEAD
    assert parser.feed(junk) == [Opaque(junk)]
    assert not parser.in_step


# -- resynchronising mid-stream ---------------------------------------------------------------


@given(st.lists(frames(masked=False), min_size=1, max_size=5))
def test_mid_stream_a_chunk_of_whole_frames_puts_the_parser_in_step(sent: list[Frame]) -> None:
    parser = FrameParser(expect_masked=False)
    events = parser.feed(b"".join(f.raw for f in sent))
    assert events == sent
    assert parser.in_step


@given(frames(masked=False), st.integers(min_value=1))
def test_mid_stream_a_chunk_ending_inside_a_frame_is_forwarded_opaque(frame: Frame, cut: int) -> None:
    cut = 1 + cut % (len(frame.raw) - 1)  # strictly inside the frame
    parser = FrameParser(expect_masked=False)
    assert parser.feed(frame.raw[:cut]) == [Opaque(frame.raw[:cut])]
    assert not parser.in_step


def test_mid_stream_the_tail_of_a_json_frame_does_not_pass_for_a_frame() -> None:
    message = b'{"type":"ack","seq":17,"state":{"score":42}}'
    frame = encode_frame(Opcode.TEXT, message)
    parser = FrameParser(expect_masked=False)
    for cut in range(1, len(frame)):
        assert parser.feed(frame[cut:]) == [Opaque(frame[cut:])]
        assert not parser.in_step
    assert parser.feed(frame) == [Frame(True, 0, Opcode.TEXT, None, message, frame)]


@pytest.mark.parametrize(
    ("raw", "expect_masked"),
    [
        (encode_frame(Opcode.TEXT, b"hi", mask_key=b"abcd"), False),  # masked toward a client
        (encode_frame(Opcode.TEXT, b"hi"), True),  # unmasked toward a server
        (encode_frame(0x3, b"hi"), False),  # reserved opcode
        (encode_frame(Opcode.TEXT, b"hi", rsv=0b010), False),  # RSV2
        (encode_frame(Opcode.PING, b"hi", fin=False), False),  # fragmented control frame
        (encode_frame(Opcode.PING, b"x" * 126), False),  # control frame too long
        (encode_frame(Opcode.PING, b"hi", rsv=0b100), False),  # compressed control frame
    ],
)
def test_resynchronising_skips_implausible_frames(raw: bytes, expect_masked: bool) -> None:
    parser = FrameParser(expect_masked=expect_masked)
    assert parser.feed(raw) == [Opaque(raw)]
    assert not parser.in_step


# -- building frames to inject -------------------------------------------------------------------


def test_frames_toward_a_server_are_masked_with_fresh_keys() -> None:
    keys = {make_frame(Opcode.PING, b"p", to_server=True).mask_key for _ in range(50)}
    assert None not in keys
    assert len(keys) > 45  # 32 random bits each: a repeat in 50 is a 3e-7 event


@given(frames())
def test_rebuilt_frames_keep_their_fields_and_take_the_direction_masking(frame: Frame) -> None:
    toward_client = rebuilt(frame, to_server=False)
    assert not toward_client.masked
    assert toward_client.raw == encode_frame(frame.opcode, frame.payload, fin=frame.fin, rsv=frame.rsv)
    toward_server = rebuilt(frame, to_server=True)
    parser = FrameParser()
    parser.feed(REQUEST_HEAD)
    (again,) = parser.feed(toward_server.raw)
    assert isinstance(again, Frame)
    assert again.masked
    assert (again.fin, again.rsv, again.opcode, again.payload) == (frame.fin, frame.rsv, frame.opcode, frame.payload)


def test_close_payloads() -> None:
    assert close_payload(1002, "bad") == struct.pack("!H", 1002) + b"bad"
    assert parse_close(close_payload(4000, "é")) == (4000, "é")
    assert parse_close(b"") == (None, "")
    with pytest.raises(ValueError, match="at most 123 bytes"):
        close_payload(1000, "x" * 124)
    with pytest.raises(ValueError, match="16 bits"):
        close_payload(70000)


def test_reserved_opcodes_are_the_rfc_ones() -> None:
    assert sorted(RESERVED_OPCODES) == [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]


def test_mid_stream_a_chunk_starting_with_g_or_h_is_not_taken_for_a_head() -> None:
    for chunk in (b'Hello", "seq": 3}', b"GETS", b"HTTP"):
        parser = FrameParser(expect_masked=False)
        events = parser.feed(chunk)
        if chunk == b"HTTP":  # still possibly "HTTP/": held, then released once it is not
            assert events == []
            assert parser.feed(b"X") == [Opaque(b"HTTPX")]
        else:
            assert events == [Opaque(chunk)]
        assert parser.buffered == 0
