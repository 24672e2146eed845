"""RFC 6455 frames on a byte stream: an incremental parser and the encoder, pure (no sockets).

:class:`FrameParser` takes the bytes of one direction of a WebSocket connection, in any
chunking, and yields events: the HTTP upgrade head (:class:`Head`, passed on untouched),
complete frames (:class:`Frame`: header fields, unmasked payload and the exact wire bytes),
and bytes it could not place (:class:`Opaque`, forwarded as they are).

Where the stream starts. A parser made for a fresh connection sees the upgrade head first:
``GET`` upstream, ``HTTP/`` downstream. Neither ``G`` (0x47) nor ``H`` (0x48) can start a valid
frame (RSV1 on a reserved opcode, RSV1 on a close), so the first byte tells a head from a
frame. A toxic added to a live connection starts mid-stream instead, at an unknown offset: the
parser then *resynchronises*, forwarding chunks as opaque bytes until one parses exactly into
whole, plausible frames (known opcodes, no RSV2/RSV3, control frames short and final, the mask
bit the direction requires). Senders write a frame with one write, so on a link carrying small
messages the first chunk after the toxic is added is normally a frame boundary; a chunk that
merely happens to look like whole frames by accident would need its bytes to spell a valid
header whose length ends exactly at the chunk's end, which JSON text (FIN clear, RSV bits set)
never does.

Masking (RFC 6455 section 5.3): frames toward a server are masked, frames toward a client are
not. Every frame this module builds toward a server gets a fresh key from ``os.urandom``, so
keys are unpredictable as the RFC asks; frames toward a client are built unmasked.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "CONTROL_OPCODES",
    "DATA_OPCODES",
    "MAX_CONTROL_PAYLOAD",
    "RESERVED_OPCODES",
    "RSV1",
    "Event",
    "Frame",
    "FrameParser",
    "Head",
    "Opaque",
    "Opcode",
    "apply_mask",
    "close_payload",
    "encode_frame",
    "make_frame",
    "parse_close",
    "rebuilt",
]


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})
RESERVED_OPCODES = frozenset(range(0x3, 0x8)) | frozenset(range(0xB, 0x10))
MAX_CONTROL_PAYLOAD = 125
#: The RSV bits as they sit in ``Frame.rsv`` (RSV1 is permessage-deflate's "compressed").
RSV1, RSV2, RSV3 = 0b100, 0b010, 0b001

# An upgrade head longer than this is not a WebSocket handshake we can follow: forward it opaque.
MAX_HEAD = 64 * 1024
_HEAD_END = b"\r\n\r\n"
_HEAD_STARTS = (b"GET ", b"HTTP/")


def _head_start(buf: bytes | bytearray) -> bool | None:
    """Whether ``buf`` begins an upgrade head; None while too short to tell."""
    for start in _HEAD_STARTS:
        common = min(len(buf), len(start))
        if buf[:common] == start[:common]:
            return True if common == len(start) else None
    return False


def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    if len(key) != 4:
        raise ValueError(f"a masking key is 4 bytes, got {len(key)}")
    if not data:
        return b""
    size = len(data)
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask_key: bytes | None = None
) -> bytes:
    """The wire bytes of one frame; ``payload`` is given unmasked and masked here when keyed."""
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"an opcode is 4 bits, got {opcode}")
    if not 0 <= rsv <= 0b111:
        raise ValueError(f"the RSV bits are 3 bits, got {rsv}")
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask_key is not None else 0
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if mask_key is None:
        return header + payload
    return header + mask_key + apply_mask(payload, mask_key)


@dataclass(frozen=True)
class Frame:
    """One frame: its header fields, its payload unmasked, and its exact bytes on the wire."""

    fin: bool
    rsv: int
    opcode: int
    mask_key: bytes | None
    payload: bytes
    raw: bytes

    @property
    def masked(self) -> bool:
        return self.mask_key is not None

    @property
    def is_data(self) -> bool:
        return self.opcode in DATA_OPCODES

    @property
    def is_control(self) -> bool:
        return self.opcode in CONTROL_OPCODES


@dataclass(frozen=True)
class Head:
    """The HTTP upgrade request or response, passed on byte for byte."""

    raw: bytes


@dataclass(frozen=True)
class Opaque:
    """Bytes the parser could not place in a frame (while resynchronising); forward them as they are."""

    raw: bytes


Event = Head | Frame | Opaque


def make_frame(opcode: int, payload: bytes, *, to_server: bool, fin: bool = True, rsv: int = 0) -> Frame:
    """A frame to inject: masked with a fresh random key toward a server, unmasked toward a client."""
    key = os.urandom(4) if to_server else None
    return Frame(fin, rsv, opcode, key, payload, encode_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=key))


def rebuilt(frame: Frame, *, to_server: bool) -> Frame:
    """``frame`` again, masked as its direction requires (a fresh key toward a server)."""
    return make_frame(frame.opcode, frame.payload, to_server=to_server, fin=frame.fin, rsv=frame.rsv)


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: the code, then the reason in UTF-8, within the 125-byte limit."""
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"a close code is 16 bits, got {code}")
    encoded = reason.encode()
    if len(encoded) > MAX_CONTROL_PAYLOAD - 2:
        raise ValueError(f"a close reason is at most {MAX_CONTROL_PAYLOAD - 2} bytes, got {len(encoded)}")
    return struct.pack("!H", code) + encoded


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """The code (None for an empty close) and reason of a close frame's payload."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode(errors="replace")


@dataclass(frozen=True)
class _Header:
    fin: bool
    rsv: int
    opcode: int
    mask_key: bytes | None
    length: int
    size: int  # header bytes, masking key included

    @property
    def masked(self) -> bool:
        return self.mask_key is not None


def _read_header(buf: bytes | bytearray, at: int) -> _Header | None:
    """The header starting at ``at``, or None if ``buf`` does not hold all of it yet."""
    if len(buf) - at < 2:
        return None
    first, second = buf[at], buf[at + 1]
    length = second & 0x7F
    pos = at + 2
    if length == 126:
        if len(buf) - pos < 2:
            return None
        (length,) = struct.unpack_from("!H", buf, pos)
        pos += 2
    elif length == 127:
        if len(buf) - pos < 8:
            return None
        (length,) = struct.unpack_from("!Q", buf, pos)
        pos += 8
    mask_key = None
    if second & 0x80:
        if len(buf) - pos < 4:
            return None
        mask_key = bytes(buf[pos : pos + 4])
        pos += 4
    return _Header(bool(first & 0x80), (first >> 4) & 0b111, first & 0x0F, mask_key, length, pos - at)


def _plausible(header: _Header, expect_masked: bool | None) -> bool:
    """Whether a header could have been written by a conforming endpoint (for resynchronising)."""
    if header.rsv & (RSV2 | RSV3) or header.length >> 63:
        return False
    if expect_masked is not None and header.masked != expect_masked:
        return False
    if header.opcode in CONTROL_OPCODES:
        return header.fin and not header.rsv and header.length <= MAX_CONTROL_PAYLOAD
    return header.opcode in DATA_OPCODES


def _frame_at(buf: bytes | bytearray, at: int) -> tuple[Frame, int] | None:
    """The complete frame starting at ``at`` and the offset after it, or None if incomplete."""
    header = _read_header(buf, at)
    if header is None:
        return None
    end = at + header.size + header.length
    if len(buf) < end:
        return None
    body = bytes(buf[at + header.size : end])
    payload = apply_mask(body, header.mask_key) if header.mask_key is not None else body
    return Frame(header.fin, header.rsv, header.opcode, header.mask_key, payload, bytes(buf[at:end])), end


class FrameParser:
    """Incremental: ``feed`` bytes in any chunking, get events in stream order.

    ``expect_masked`` is the mask bit the direction requires (True toward a server, False toward
    a client, None to accept either); it is used only to recognise a frame boundary when
    resynchronising. Once in step, every frame is reported as it is, however malformed: the
    parser describes the stream, the receiver judges it.
    """

    _START, _HEAD, _FRAMES, _RESYNC = range(4)

    def __init__(self, *, expect_masked: bool | None = None) -> None:
        self.expect_masked = expect_masked
        self._state = self._START
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held back because the head or frame they begin is not complete yet."""
        return len(self._buf)

    @property
    def in_step(self) -> bool:
        """Whether the parser knows where frames start (past the head, or resynchronised)."""
        return self._state == self._FRAMES

    def take_buffered(self) -> bytes:
        """Give up the held bytes (to forward them as they are); the parser stays where it was."""
        held, self._buf = bytes(self._buf), bytearray()
        return held

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if not data:
            return events
        if self._state == self._START:
            # "G" (0x47) and "H" (0x48) cannot start a valid frame, so a head is told apart at once.
            self._state = self._HEAD if data[0] in b"GH" else self._RESYNC
        if self._state == self._RESYNC:
            return self._resync(bytes(data))
        self._buf += data
        if self._state == self._HEAD:
            # Mid-stream, a chunk may start with a "G" or "H" of some payload: unless the bytes
            # go on to spell a request or status line, they are not a head, and holding them
            # while waiting for a blank line would stall the link.
            is_head = _head_start(self._buf)
            end = self._buf.find(_HEAD_END)
            if is_head is False or (end < 0 and len(self._buf) > MAX_HEAD):
                self._state = self._RESYNC
                return [Opaque(self.take_buffered())]
            if end < 0 or is_head is None:
                return events
            end += len(_HEAD_END)
            events.append(Head(bytes(self._buf[:end])))
            del self._buf[:end]
            self._state = self._FRAMES
        at = 0
        while True:
            found = _frame_at(self._buf, at)
            if found is None:
                break
            frame, at = found
            events.append(frame)
        del self._buf[:at]
        return events

    def _resync(self, chunk: bytes) -> list[Event]:
        frames: list[Event] = []
        at = 0
        while at < len(chunk):
            header = _read_header(chunk, at)
            if header is None or not _plausible(header, self.expect_masked):
                return [Opaque(chunk)]
            found = _frame_at(chunk, at)
            if found is None:
                return [Opaque(chunk)]
            frame, at = found
            frames.append(frame)
        self._state = self._FRAMES
        return frames
