"""A picows WebSocket echo server: the backend of every balancer benchmark.

Every data frame is sent straight back with its type. Every 100 ms in which something changed
it prints one JSON line, ``{"t": UNIX_TIME, "open": N, "accepted": TOTAL}``, so a benchmark can
see from outside when sessions arrive (the peak rate of upstream connects) and how many it
holds, whatever proxy is in front of it.

    python bench/echo_backend.py --port 8765 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

STATS_PERIOD_S = 0.1


class Counters:
    open = 0
    accepted = 0


class Echo(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        Counters.open += 1
        Counters.accepted += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        Counters.open -= 1

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind in (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION):
            transport.send(kind, frame.get_payload_as_memoryview(), frame.fin)
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


def _listener(request: WSUpgradeRequest) -> Echo:
    return Echo()


async def _report() -> None:
    last = (-1, -1)
    while True:
        now = (Counters.open, Counters.accepted)
        if now != last:
            print(json.dumps({"t": time.time(), "open": now[0], "accepted": now[1]}), flush=True)
            last = now
        await asyncio.sleep(STATS_PERIOD_S)


async def serve(host: str, port: int) -> None:
    # The handshake timeout is websockets' default open_timeout (the reference balancer's too):
    # picows' own 5 s would close upstream handshakes that a balancer busy re-homing thousands of
    # sessions is slow to finish, and count them against the balancer as if they were its own limit.
    server = await ws_create_server(
        _listener, host, port, backlog=4096, max_frame_size=64 * 1024 * 1024, websocket_handshake_timeout=10
    )
    async with server:
        await _report()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
