"""The embeddable server object: API listener plus the proxy collection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from . import gojson
from .addresses import HostPolicy
from .api import VERSION, ApiApp
from .errors import ApiError
from .httpserver import HttpServer


class ToxiproxyServer:
    """A Toxiproxy 2.x compatible server running on the current event loop.

    ``await start()`` binds the API listener (``port=0`` picks a free port, see
    ``.port``); ``await close()`` stops every proxy, closes every connection and
    returns once nothing of the server is left on the loop.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8474,
        *,
        version: str = VERSION,
        extensions: bool = True,
        policy: HostPolicy | None = None,
    ):
        self.host = host
        self.requested_port = port
        self.port = port
        # Proxies may only use loopback addresses unless the policy allows more.
        self.app = ApiApp(version, extensions=extensions, policy=policy)
        self._http = HttpServer(self.app)
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        server = await asyncio.start_server(
            self._http.handle,
            self.host,
            self.requested_port,
            reuse_address=True,
        )
        self._server = server
        sockets: Any = server.sockets
        for sock in sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = sockets[0].getsockname()[1]

    async def populate(self, body: bytes) -> list[str]:
        """Apply a ``/populate`` body (the ``--config`` file); returns the proxy names."""
        response = await self.app.populate(body)
        reply = gojson.decode(response.body)
        if response.status != 201:
            raise ApiError(response.status, reply.get("error", "populate failed"))
        return [item["name"] for item in reply["proxies"] or []]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._http.close()
        await self.app.shutdown()
        # Aborted transports close their sockets in loop callbacks; let those run so
        # nothing is left for the garbage collector when the loop ends.
        for _ in range(3):
            await asyncio.sleep(0)

    async def __aenter__(self) -> ToxiproxyServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@asynccontextmanager
async def serve(
    host: str = "127.0.0.1", port: int = 0, policy: HostPolicy | None = None
) -> AsyncIterator[ToxiproxyServer]:
    """``async with serve() as server:`` runs a server for the duration of the block."""
    server = ToxiproxyServer(host, port, policy=policy)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
