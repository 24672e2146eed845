"""bench/relay_chain.py times the real relay: check that its stubs let a frame through each way."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

REPO = Path(__file__).resolve().parent.parent.parent


def _relay_chain() -> ModuleType:
    spec = importlib.util.spec_from_file_location("relay_chain", REPO / "bench" / "relay_chain.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(data: bytes, *, mask: bool) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


def test_the_timed_pair_relays_a_frame_each_way_as_the_balancer_does() -> None:
    from_client, from_backend = _relay_chain().relay_pair()
    request, reply = b"move" * 16, b"ack!" * 16
    from_client.feed(Frame(Opcode.BINARY, request).serialize(mask=True))
    to_backend = from_client.route.dest.transport.last
    assert parse(to_backend, mask=True).data == request  # re-masked for the backend
    from_backend.feed(Frame(Opcode.BINARY, reply).serialize(mask=False))
    assert parse(from_backend.route.dest.transport.last, mask=False).data == reply
    assert not from_client.pending and not from_backend.pending  # written, not queued
