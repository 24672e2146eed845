"""The frames data path's splitter (balancer.frames) and its config key: pure, no sockets."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from balancer.config import DEFAULT_DATA_PATH, ConfigError, config_from_args, from_dict
from balancer.fastpath import MaskKeys
from balancer.frames import OP_BINARY, OP_CONT, OP_TEXT, BadText, Break, ControlFrame, DataFrame, FrameSplitter


def keys() -> itertools.count[int]:
    return itertools.count(1)


def from_client(max_size: int | None = 1 << 20) -> FrameSplitter:
    counter = keys()
    return FrameSplitter(masked=True, new_mask=lambda: next(counter).to_bytes(4, "big"), max_size=max_size)


def from_backend() -> FrameSplitter:
    return FrameSplitter(masked=False, new_mask=None, max_size=None)


def wire(opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool = True, rsv1: bool = False) -> bytes:
    """A frame as a peer puts it on the wire, also one websockets would refuse to send."""
    head = bytearray([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    bit = 0x80 if mask else 0
    if len(data) < 126:
        head.append(bit | len(data))
    elif len(data) < 1 << 16:
        head += bytes([bit | 126]) + len(data).to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + len(data).to_bytes(8, "big")
    if not mask:
        return bytes(head) + data
    key = b"\x5a\xa5\x0f\xf0"
    return bytes(head) + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


def parse(data: bytes, *, mask: bool) -> list[Frame]:
    """Frames as websockets parses them (so the output is judged by the library)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=mask)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:  # pragma: no cover - a truncated frame
            raise AssertionError("incomplete frame")
    return frames


def test_a_client_frame_is_remasked_with_a_fresh_key_and_the_same_payload() -> None:
    incoming = wire(Opcode.BINARY, b"\x00\x01payload" * 3)
    [item] = from_client().feed(incoming)
    assert isinstance(item, DataFrame) and item.opcode == OP_BINARY and item.fin
    assert item.wire[2:6] == (1).to_bytes(4, "big")  # the key the balancer chose
    assert item.wire[2:6] != incoming[2:6]
    [frame] = parse(item.wire, mask=True)
    assert frame.data == b"\x00\x01payload" * 3 and frame.opcode is Opcode.BINARY


def test_a_backend_frame_goes_to_the_client_byte_for_byte() -> None:
    incoming = wire(Opcode.TEXT, "héllo".encode(), mask=False)
    [item] = from_backend().feed(incoming)
    assert isinstance(item, DataFrame) and item.wire == incoming


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_every_length_encoding_survives_any_cut_of_the_stream(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    stream = wire(Opcode.BINARY, payload) + wire(Opcode.TEXT, b"next")
    for step in (1, 7, 4096, len(stream)):
        splitter = from_client()
        items = [item for i in range(0, len(stream), step) for item in splitter.feed(stream[i : i + step])]
        assert [type(i) for i in items] == [DataFrame, DataFrame]
        out = parse(b"".join(i.wire for i in items if isinstance(i, DataFrame)), mask=True)
        assert [f.data for f in out] == [payload, b"next"]


def test_message_boundaries_follow_the_fragments_and_control_frames_pass_to_websockets() -> None:
    splitter = from_client()
    stream = (
        wire(Opcode.TEXT, b"ab", fin=False)
        + wire(Opcode.PING, b"p")
        + wire(Opcode.CONT, b"cd", fin=False)
        + wire(Opcode.CONT, b"e")
    )
    items = splitter.feed(stream)
    assert [type(i) for i in items] == [DataFrame, ControlFrame, DataFrame, DataFrame]
    first, ping, second, last = items
    assert isinstance(ping, ControlFrame) and ping.wire == stream[2 + 4 + 2 : 2 + 4 + 2 + 2 + 4 + 1]
    assert ping.message_size == 2  # websockets' current_size at that point
    assert isinstance(first, DataFrame) and isinstance(last, DataFrame) and isinstance(second, DataFrame)
    assert (first.opcode, first.fin, second.opcode, last.fin) == (OP_TEXT, False, OP_CONT, True)
    assert splitter.message_size is None and not splitter.in_message


def test_utf8_is_validated_across_fragments() -> None:
    euro = "€".encode()  # three bytes, split over two frames
    splitter = from_client()
    items = splitter.feed(wire(Opcode.TEXT, euro[:1], fin=False) + wire(Opcode.CONT, euro[1:]))
    assert all(isinstance(i, DataFrame) for i in items)
    bad = from_client().feed(wire(Opcode.TEXT, b"ok") + wire(Opcode.TEXT, b"\xff\xfe") + wire(Opcode.TEXT, b"x"))
    assert isinstance(bad[0], DataFrame)
    assert bad[1] == BadText("invalid start byte at position 0")
    assert len(bad) == 2  # nothing after it is parsed
    truncated = from_backend().feed(wire(Opcode.TEXT, euro[:2], mask=False))
    assert isinstance(truncated[0], BadText)


@pytest.mark.parametrize(
    "frame",
    [
        wire(Opcode.BINARY, b"x", rsv1=True),  # reserved bit without an extension
        wire(Opcode.BINARY, b"x", mask=False),  # a client must mask
        wire(Opcode.CONT, b"x"),  # a continuation with no message started
        wire(Opcode.PING, b"x", fin=False),  # a fragmented control frame
        bytes([0x83, 0x80, 0, 0, 0, 0]),  # opcode 3 is reserved
        wire(Opcode.BINARY, b"x" * 11),  # past max_size
    ],
)
def test_what_websockets_rejects_is_left_to_it_from_that_frame_on(frame: bytes) -> None:
    splitter = from_client(max_size=10)
    items = splitter.feed(wire(Opcode.BINARY, b"fine") + frame + b"trailing")
    assert isinstance(items[0], DataFrame)
    assert items[1:] == [Break(frame + b"trailing")]
    assert splitter.stopped


def test_a_new_message_inside_a_fragmented_one_and_an_oversized_fragment_are_breaks() -> None:
    start = wire(Opcode.BINARY, b"12345", fin=False)
    for offending in (wire(Opcode.TEXT, b"x"), wire(Opcode.CONT, b"123456")):
        splitter = from_client(max_size=10)
        items = splitter.feed(start + offending)
        assert items[1:] == [Break(offending)]
        assert splitter.message_size == 5  # what websockets must be told before it judges


def test_a_frame_websockets_parsed_before_the_switch_is_adopted() -> None:
    splitter = from_client()
    item = splitter.adopt(Frame(Opcode.TEXT, b"queued", fin=False))
    assert isinstance(item, DataFrame) and item.opcode == OP_TEXT and not item.fin
    assert splitter.message_size == 6
    [frame] = parse(item.wire, mask=True)
    assert frame.data == b"queued"
    assert isinstance(splitter.adopt(Frame(Opcode.CONT, b"\xff")), BadText)


def test_unparsed_bytes_can_be_handed_back() -> None:
    splitter = from_backend()
    assert splitter.feed(b"\x82") == []
    assert splitter.take_buffer() == b"\x82"
    assert splitter.take_buffer() == b""


def test_the_data_path_is_a_validated_key_and_a_flag() -> None:
    base: dict[str, Any] = {"listen": "127.0.0.1:0", "backends": [{"name": "p", "url": "ws://127.0.0.1:1"}]}
    assert from_dict(base).data_path == DEFAULT_DATA_PATH
    assert from_dict({**base, "data_path": "messages"}).data_path == "messages"
    assert from_dict({**base, "data_path": "frames"}).data_path == "frames"
    cfg = config_from_args(["--listen", "127.0.0.1:0", "--backend", "p=ws://127.0.0.1:1", "--data-path", "messages"])
    assert cfg.data_path == "messages"
    for bad in ("frame", "", 1, None, True):
        with pytest.raises(ConfigError, match='data_path: expected "messages" or "frames"'):
            from_dict({**base, "data_path": bad})
    with pytest.raises(ConfigError, match="data-path"):
        config_from_args(["--listen", "127.0.0.1:0", "--backend", "p=ws://x:1", "--data-path", "bytes"])


def test_mask_keys_are_fresh_for_every_frame_across_batches() -> None:
    keys = MaskKeys(batch=4)
    drawn = [keys() for _ in range(10)]
    assert all(len(k) == 4 for k in drawn)
    assert len(set(drawn)) == 10  # 2**-32 per pair to collide by chance


def raw_frame(b0: int, payload: bytes, *, mask: bool, length_bytes: int) -> bytes:
    """A frame with any first byte and any length encoding, minimal or not (both are legal)."""
    bit = 0x80 if mask else 0
    if length_bytes == 0:
        head = bytes([b0, bit | len(payload)])
    elif length_bytes == 2:
        head = bytes([b0, bit | 126]) + len(payload).to_bytes(2, "big")
    else:
        head = bytes([b0, bit | 127]) + len(payload).to_bytes(8, "big")
    if not mask:
        return head + payload
    key = b"\x5a\xa5\x0f\xf0"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


SPLITTERS = {
    "from a client": lambda: from_client(max_size=64),
    "from a backend": from_backend,
    "masked, to an unmasked leg": lambda: FrameSplitter(masked=True, new_mask=None, max_size=None),
}


@settings(max_examples=600)  # pure and fast; the space is a product of seven choices
@given(
    kind=st.sampled_from(sorted(SPLITTERS)),
    b0=st.sampled_from([0x82, 0x81, 0x02, 0x01, 0x80, 0x89, 0x88, 0xC2, 0x92, 0x83]),
    payload=st.one_of(st.binary(max_size=80), st.text(max_size=30).map(str.encode)),
    mask=st.booleans(),
    length_bytes=st.sampled_from([0, 2, 8]),
    cut=st.sampled_from([None, -1, 1]),
    mid_message=st.booleans(),
)
def test_the_whole_frame_shortcut_gives_what_feed_gives_or_declines(
    kind: str, b0: int, payload: bytes, mask: bool, length_bytes: int, cut: int | None, mid_message: bool
) -> None:
    if length_bytes == 0 and len(payload) > 125:
        length_bytes = 2
    data = raw_frame(b0, payload, mask=mask, length_bytes=length_bytes)
    if cut is not None:  # not exactly one frame: a truncated one, or one with a byte of the next
        data = data[:cut] if cut < 0 else data + b"\x82"
    shortcut, reference = SPLITTERS[kind](), SPLITTERS[kind]()
    if mid_message:  # a fragmented message is open: only feed may judge what follows
        start = raw_frame(0x02, b"x", mask=shortcut._masked, length_bytes=0)
        shortcut.feed(start)
        reference.feed(start)
    wire_out = shortcut.whole(data)
    items = reference.feed(data)
    if wire_out is None:
        assert shortcut.feed(data) == items  # declining left the splitter as it was
        return
    assert not mid_message and cut is None and b0 in (0x81, 0x82)
    assert items == [DataFrame(b0 & 0x0F, True, wire_out)]
    assert (shortcut.message_size, shortcut.stopped, shortcut.take_buffer()) == (None, False, b"")


@pytest.mark.parametrize("kind", sorted(SPLITTERS))
@pytest.mark.parametrize("size", [0, 64, 126, 70_000])
@pytest.mark.parametrize("b0", [0x81, 0x82])
def test_the_whole_frame_shortcut_takes_every_whole_message_a_peer_sends_in_one_frame(
    kind: str, size: int, b0: int
) -> None:
    splitter = SPLITTERS[kind]()
    data = raw_frame(b0, b"a" * size, mask=splitter._masked, length_bytes=0 if size < 126 else 2 if size < 65536 else 8)
    out = splitter.whole(data)
    if splitter._max_size is not None and size > splitter._max_size:
        assert out is None  # feed makes it a Break, for websockets' 1009
        return
    assert out is not None
    [frame] = parse(out, mask=splitter._new_mask is not None)
    assert (frame.opcode, frame.data, frame.fin) == (Opcode(b0 & 0x0F), b"a" * size, True)


@pytest.mark.parametrize("kind", sorted(SPLITTERS))
def test_the_whole_frame_shortcut_leaves_invalid_utf8_to_feed_for_its_1007(kind: str) -> None:
    splitter = SPLITTERS[kind]()
    data = raw_frame(0x81, "€".encode()[:2], mask=splitter._masked, length_bytes=0)
    assert splitter.whole(data) is None
    assert splitter.feed(data) == [BadText("unexpected end of data at position 0")]
