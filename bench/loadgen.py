"""The load generator of the balancer benchmarks: one picows worker process per invocation.

The benchmark starts several of these side by side (``--procs``), all against 127.0.0.1, and
merges what they print. Three modes, each bounded in time and in connections:

``load``   N connections, each with exactly one binary message of SIZE bytes in flight: a
           reply is answered at once with the next message. Round trips completed between
           ``--start-at`` and ``--start-at + --duration`` are counted, and their RTTs go into a
           histogram. Prints one JSON object: count, histogram, errors, the worker's own CPU.
``play``   N clients, each sending one small message every ``--interval-ms`` (pipelined, like
           a game client). Each message carries its send time, so every reply is one
           (sent, received) pair. A client whose connection closes reconnects at once (every
           ``--retry-ms`` until it works). Prints per client: the pairs, the closes, the
           reconnects. The fault is injected by the parent, which knows when.
``hold``   N idle connections, opened with at most ``--open-concurrency`` handshakes at a
           time. Prints ``{"opened": N, "seconds": S, ...}`` once they are open, then a line
           ``{"t", "open", "closed"}`` every 100 ms in which something changed, until SIGTERM
           or ``--duration``.

All times on the wire and in the output are ``time.time()`` (the parent compares them with its
own fault time); RTTs are measured with ``perf_counter_ns``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
import time
from collections import Counter
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

STAMP = struct.Struct("!Qd")  # client-local message number, send time (time.time())
# Opening thousands of sessions through a busy balancer: the time to open them is what is
# measured, so a slow handshake must not be cut short by picows' default 5 s.
HANDSHAKE_S = 30.0


def rtt_bucket(micros: float) -> int:
    """Histogram key: the RTT rounded to 3 significant digits (µs), so the output stays small."""
    value = int(micros)
    if value < 1000:
        return value
    scale = 10 ** (len(str(value)) - 3)
    return value // scale * scale


# -- load ------------------------------------------------------------------------------------
class LoadConnection(WSListener):
    def __init__(self, run: LoadRun) -> None:
        self.run = run
        self.sent_ns = 0
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def fire(self) -> None:
        assert self.transport is not None
        self.sent_ns = time.perf_counter_ns()
        self.transport.send(WSMsgType.BINARY, self.run.payload)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type not in (WSMsgType.BINARY, WSMsgType.CONTINUATION):
            return
        if not frame.fin:
            return  # a proxy may split a large message; the round trip ends with the last piece
        now = time.perf_counter_ns()
        self.run.completed(now, now - self.sent_ns)
        if not self.run.stopping:
            self.fire()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.run.stopping:
            self.run.errors["disconnected"] += 1


class LoadRun:
    def __init__(self, size: int, start_ns: int, end_ns: int) -> None:
        self.payload = bytes(size)
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.count = 0
        self.histogram: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.stopping = False

    def completed(self, now_ns: int, rtt_ns: int) -> None:
        if self.start_ns <= now_ns < self.end_ns:
            self.count += 1
            self.histogram[rtt_bucket(rtt_ns / 1000)] += 1


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    # Wall-clock start shared by every worker, turned into this process's perf_counter.
    start_ns = time.perf_counter_ns() + int((args.start_at - time.time()) * 1e9)
    run = LoadRun(args.size, start_ns, start_ns + int(args.duration * 1e9))
    conns: list[LoadConnection] = []
    for _ in range(args.conns):
        try:
            _, listener = await asyncio.wait_for(
                ws_connect(lambda: LoadConnection(run), args.url, max_frame_size=64 * 1024 * 1024), timeout=10
            )
        except (OSError, TimeoutError, Exception) as exc:  # any failed connect is counted, not fatal
            run.errors[f"connect: {type(exc).__name__}"] += 1
            continue
        assert isinstance(listener, LoadConnection)
        conns.append(listener)
    for conn in conns:
        conn.fire()
    cpu0, wall0 = time.process_time(), time.perf_counter_ns()
    await asyncio.sleep(max(0.0, (run.end_ns - time.perf_counter_ns()) / 1e9))
    run.stopping = True
    cpu_s = time.process_time() - cpu0
    wall_s = (time.perf_counter_ns() - wall0) / 1e9
    for conn in conns:
        if conn.transport is not None:
            conn.transport.disconnect()
    return {
        "connections": len(conns),
        "count": run.count,
        "histogram": {str(k): v for k, v in run.histogram.items()},
        "errors": dict(run.errors),
        "cpu_share": cpu_s / wall_s if wall_s > 0 else 0.0,
    }


# -- play ------------------------------------------------------------------------------------
class PlayConnection(WSListener):
    def __init__(self, client: PlayClient) -> None:
        self.client = client
        self.closed = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.BINARY and frame.payload_size >= STAMP.size:
            _, sent = STAMP.unpack_from(frame.get_payload_as_memoryview())
            self.client.pairs.append((sent, time.time()))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class PlayClient:
    def __init__(self, name: str) -> None:
        self.name = name
        self.pairs: list[tuple[float, float]] = []
        self.closes: list[float] = []
        self.connects: list[float] = []
        self.connect_failures = 0


async def play_one(client: PlayClient, args: argparse.Namespace, end: float) -> None:
    seq = 0
    loop = asyncio.get_running_loop()
    while time.time() < end:
        try:
            transport, listener = await asyncio.wait_for(ws_connect(lambda: PlayConnection(client), args.url), 2.0)
        except Exception:  # refused, 503, handshake timeout: try again shortly, until the end
            client.connect_failures += 1
            await asyncio.sleep(args.retry_ms / 1000)
            continue
        assert isinstance(listener, PlayConnection)
        client.connects.append(time.time())
        next_at = loop.time()
        while not listener.closed.done() and time.time() < end:
            seq += 1
            transport.send(WSMsgType.BINARY, STAMP.pack(seq, time.time()) + bytes(48))
            next_at += args.interval_ms / 1000
            await asyncio.wait([listener.closed], timeout=max(0.0, next_at - loop.time()))
        if listener.closed.done():
            client.closes.append(time.time())
        else:
            transport.disconnect()
            await asyncio.wait([listener.closed], timeout=2.0)


async def run_play(args: argparse.Namespace) -> dict[str, Any]:
    end = time.time() + args.duration
    clients = [PlayClient(f"{args.name}-{i}") for i in range(args.conns)]
    async with asyncio.TaskGroup() as group:
        for client in clients:
            group.create_task(play_one(client, args, end))
    return {
        "clients": [
            {
                "name": c.name,
                "pairs": c.pairs,
                "closes": c.closes,
                "connects": c.connects,
                "connect_failures": c.connect_failures,
            }
            for c in clients
        ]
    }


# -- hold ------------------------------------------------------------------------------------
class HoldConnection(WSListener):
    def __init__(self, state: HoldState) -> None:
        self.state = state

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.state.open += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.state.open -= 1
        if not self.state.stopping:
            self.state.closed += 1


class HoldState:
    def __init__(self) -> None:
        self.open = 0
        self.closed = 0
        self.failed: Counter[str] = Counter()
        self.stopping = False


async def run_hold(args: argparse.Namespace) -> dict[str, Any]:
    state = HoldState()
    transports: list[WSTransport] = []
    gate = asyncio.Semaphore(args.open_concurrency)

    async def open_one() -> None:
        async with gate:
            try:
                transport, _ = await asyncio.wait_for(
                    ws_connect(lambda: HoldConnection(state), args.url, websocket_handshake_timeout=HANDSHAKE_S),
                    HANDSHAKE_S + 10,
                )
            except Exception as exc:  # counted and reported: the limit that binds shows up here
                state.failed[type(exc).__name__ + ": " + str(exc)[:80]] += 1
                return
            transports.append(transport)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(args.conns):
            group.create_task(open_one())
    print(
        json.dumps({"opened": len(transports), "seconds": time.perf_counter() - started, "failed": dict(state.failed)}),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    end = loop.time() + args.duration
    last = (-1, -1)
    stopped = asyncio.ensure_future(stop.wait())
    while not stop.is_set() and loop.time() < end:
        now = (state.open, state.closed)
        if now != last:
            print(json.dumps({"t": time.time(), "open": now[0], "closed": now[1]}), flush=True)
            last = now
        await asyncio.wait([stopped], timeout=0.1)
    stopped.cancel()
    state.stopping = True
    for transport in transports:
        transport.disconnect(graceful=False)
    return {"final": {"open": state.open, "closed": state.closed}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("load", "play", "hold"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--start-at", type=float, default=0.0, help="load: wall time the measured window starts")
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--retry-ms", type=float, default=10.0)
    parser.add_argument("--open-concurrency", type=int, default=64)
    parser.add_argument("--name", default="c")
    args = parser.parse_args()
    if not args.url.startswith("ws://127.0.0.1:"):
        parser.error("--url must be ws://127.0.0.1:PORT/...: the load generator only targets loopback")
    if args.start_at == 0.0:
        args.start_at = time.time() + 1.0
    runner = {"load": run_load, "play": run_play, "hold": run_hold}[args.mode]
    import uvloop

    result = uvloop.run(runner(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
