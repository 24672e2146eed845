"""A tiny echo backend for the balancer tests, runnable in-process or as a process.

Text replies are JSON ``{"server", "path", "msg"}``; binary replies are
``b"NAME|" + data``, so a test can tell which backend answered. Text commands:
``close:CODE:REASON`` closes with that code, ``abort`` drops the TCP connection
without a close frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import Server, ServerConnection, serve


def make_handler(name: str, log: list[str] | None = None) -> Callable[[ServerConnection], Awaitable[None]]:
    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        if log is not None:
            log.append(path)
        async for msg in ws:
            if isinstance(msg, str):
                if msg.startswith("close:"):
                    _, code, reason = msg.split(":", 2)
                    await ws.close(int(code), reason)
                    return
                if msg == "abort":
                    ws.transport.abort()
                    return
            await ws.send(echo_reply(name, path, msg))

    return handler


def echo_reply(name: str, path: str, msg: str | bytes) -> str | bytes:
    """The reply to a message that is not a command."""
    if isinstance(msg, str):
        return json.dumps({"server": name, "path": path, "msg": msg})
    return name.encode() + b"|" + msg


async def start(name: str, port: int = 0, log: list[str] | None = None) -> Server:
    return await serve(make_handler(name, log), "127.0.0.1", port, max_size=None, compression=None)


async def _main(name: str, port: int) -> None:
    server = await start(name, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    asyncio.run(_main(a.name, a.port))
