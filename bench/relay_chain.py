"""The Python cost of one round trip on the frames data path, without sockets or an event loop.

A client's 64 B frame goes through ``FrameReader.feed`` (the whole-frame shortcut, the route, the
relay machine's two callbacks) to a transport that keeps only the last write, and a backend's reply goes back the
same way. Subtracting this from ``bench/cpu_split.py``'s user µs per round trip leaves what the
event loop (uvloop's reads, callbacks and writes) costs around the balancer's own code.

    .venv/bin/python bench/relay_chain.py [--frames 300000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import timeit
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from balancer.fastpath import FrameReader, Route, new_mask
from balancer.frames import FrameSplitter
from balancer.machine import RelayMachine
from balancer.policy import FailoverLimiter


class LastWriteTransport:
    """Keeps only the last write: the relay's output can be checked, and costs one store."""

    last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def is_closing(self) -> bool:
        return False


class OpenProtocol:
    """What the route and the reader read of websockets' protocol: its state, a property there too."""

    def __init__(self) -> None:
        self._state = State.OPEN

    @property
    def state(self) -> State:
        return self._state


class Leg:
    """The attributes of a ``FramedConnection`` the relay touches per frame."""

    def __init__(self) -> None:
        self.paused = False
        self.protocol = OpenProtocol()
        self.transport = LastWriteTransport()
        self.on_writable = None


class NoWatchdog:
    stalled = False

    def begin(self) -> None:
        pass

    def end(self) -> None:
        pass


def no_failover() -> FailoverLimiter:
    raise AssertionError("a relay without faults never decides a failover")


def relay_pair() -> tuple[FrameReader, FrameReader]:
    """A reader of the client's frames and one of the backend's, each relaying to the other's leg."""
    machine = RelayMachine(["primary", "secondary"], limiter=no_failover)

    def delivered() -> None:
        for _action in machine.message_delivered():
            pass

    client, upstream = Leg(), Leg()
    c2u = Route(upstream, NoWatchdog(), on_message=machine.client_message, on_delivered=delivered)  # type: ignore[arg-type]
    u2c = Route(client, NoWatchdog())  # type: ignore[arg-type]
    from_client = FrameReader(client, FrameSplitter(masked=True, new_mask=new_mask, max_size=1 << 20), print)  # type: ignore[arg-type]
    from_backend = FrameReader(upstream, FrameSplitter(masked=False, new_mask=None, max_size=None), print)  # type: ignore[arg-type]
    for reader, route in ((from_client, c2u), (from_backend, u2c)):
        reader.attached = True
        reader.connect(route)
    return from_client, from_backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    payload = os.urandom(64)
    masked = Frame(Opcode.BINARY, payload).serialize(mask=True)
    plain = Frame(Opcode.BINARY, payload).serialize(mask=False)
    from_client, from_backend = relay_pair()
    rows: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        c2u = timeit.timeit(lambda: from_client.feed(masked), number=args.frames) / args.frames * 1e6
        u2c = timeit.timeit(lambda: from_backend.feed(plain), number=args.frames) / args.frames * 1e6
        rows.append({"client_to_backend_us": c2u, "backend_to_client_us": u2c, "round_trip_us": c2u + u2c})
    print("| client → backend µs | backend → client µs | round trip µs |")
    print("|---:|---:|---:|")
    for row in rows:
        print(f"| {row['client_to_backend_us']:.2f} | {row['backend_to_client_us']:.2f} | {row['round_trip_us']:.2f} |")


if __name__ == "__main__":
    main()
