"""Builds that relay no game, for the acceptance tests of the smoke gate (docs/verdicts.md).

    python tests/chaos/nogame_builds.py --mode silent|http503|echo CONFIG.json

Each listens where the build contract's config says (``listen``) and never opens an upstream:
- ``silent`` accepts TCP and never answers a byte;
- ``http503`` answers every request with HTTP 503;
- ``echo`` completes the WebSocket handshake and echoes every frame back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the peer goes away; never a byte back
    writer.close()


async def http503(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()  # a readiness probe: connected and left
        return
    body = b"service unavailable\n"
    writer.write(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()


async def echo(ws: ServerConnection) -> None:
    async for frame in ws:
        await ws.send(frame)


async def main(mode: str, listen: str) -> None:
    host, port = listen.rsplit(":", 1)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    if mode == "echo":
        async with serve(echo, host, int(port)):
            print(f"echo build on {host}:{port}", flush=True)
            await stop.wait()
        return
    handler = silent if mode == "silent" else http503
    server = await asyncio.start_server(handler, host, int(port))
    print(f"{mode} build on {host}:{port}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("silent", "http503", "echo"), required=True)
    parser.add_argument("config", type=Path)
    args = parser.parse_args()
    asyncio.run(main(args.mode, json.loads(args.config.read_text())["listen"]))
    sys.exit(0)
