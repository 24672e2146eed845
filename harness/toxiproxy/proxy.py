"""One proxy: its listener, upstream dialing, live connections and toxic chains.

Addresses are parsed, resolved and bound the Go way by ``addresses``; this module keeps
a proxy's state and applies toxic changes to every live link.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .addresses import BACKLOG, AddressError, Resolved, bind_listener, resolve_tcp, strerror, upstream_hosts
from .link import Connection, Link, Side
from .toxic_spec import ToxicSpec


class ProxyAlreadyStarted(Exception):
    pass


def toxic_evidence(spec: ToxicSpec) -> dict[str, Any]:
    """``GET /wschaos/.../evidence`` for one toxic: which toxic, and what it did."""
    return {"name": spec.name, "type": spec.type, "stream": spec.stream, **spec.state.evidence()}


class Proxy:
    """One named proxy: its listener, live connections and toxic chains."""

    def __init__(self, name: str, listen: str, upstream: str) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        # Toxics per direction (index: toxics.UPSTREAM / DOWNSTREAM), insertion order.
        self.chains: tuple[list[ToxicSpec], list[ToxicSpec]] = ([], [])
        self.conns: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._accepted = 0

    # -- JSON ------------------------------------------------------------------

    def toxic_list(self) -> list[dict[str, Any]]:
        return [spec.to_json() for chain in self.chains for spec in chain]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": self.toxic_list(),
        }

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``self.listen`` (Go's start(): rewrites listen on success)."""
        if self.enabled:
            raise ProxyAlreadyStarted
        try:
            resolved = await self._resolve_listen()
        except AddressError as exc:
            raise AddressError(f"listen tcp: {exc}") from None
        sock, bound = bind_listener(resolved, str(resolved))
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: Connection(self, loop).client, sock=sock, backlog=BACKLOG)
        except OSError as exc:
            sock.close()
            raise AddressError(f"listen tcp {bound}: {strerror(exc)}") from None
        self.listen = bound
        self.enabled = True

    async def _resolve_listen(self) -> Resolved:
        return await resolve_tcp(self.listen)

    def stop(self) -> None:
        """Close the listener and every live connection (Go's stop())."""
        if not self.enabled:
            return
        self.enabled = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.conns):
            conn.abort()

    def next_ordinal(self) -> int:
        self._accepted += 1
        return self._accepted

    def dial_tasks(self) -> list[asyncio.Task[None]]:
        return [conn.dial_task for conn in self.conns if conn.dial_task is not None]

    async def differs(self, listen: str, upstream: str) -> bool:
        """Go's Proxy.Differs: compares the *resolved* new listen with the current one."""
        resolved = await resolve_tcp(listen)
        return self.listen != str(resolved) or self.upstream != upstream

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        if await self.differs(listen, upstream):
            self.stop()
            self.listen = listen
            self.upstream = upstream
        if enabled != self.enabled:
            if enabled:
                await self.start()
            else:
                self.stop()

    async def dial(self, side: Side) -> None:
        """Connect ``side`` to the upstream; raises OSError/AddressError on failure."""
        hosts, port = await upstream_hosts(self.upstream)
        loop = asyncio.get_running_loop()
        last: Exception | None = None
        for ip in hosts:
            try:
                # An IP literal keeps asyncio from resolving in its thread pool.
                await loop.create_connection(lambda: side, ip, port)
                return
            except OSError as exc:
                last = exc
        assert last is not None
        raise last

    # -- toxics ----------------------------------------------------------------

    def find_toxic(self, name: str) -> tuple[int, int, ToxicSpec] | None:
        for direction, chain in enumerate(self.chains):
            for index, spec in enumerate(chain):
                if spec.name == name:
                    return direction, index, spec
        return None

    def _links(self, direction: int) -> list[Link]:
        # Oldest connection first: an aim at the first N connections takes the oldest live ones.
        conns = sorted(self.conns, key=lambda conn: conn.ordinal)
        return [conn.links[direction] for conn in conns if conn.links]

    def add_toxic(self, spec: ToxicSpec) -> None:
        self.chains[spec.direction].append(spec)
        for link in self._links(spec.direction):
            link.add_toxic(spec)
        if spec.extras.duration_ms is not None:
            loop = asyncio.get_running_loop()
            spec.state.expiry = loop.call_later(spec.extras.duration_ms / 1000.0, self._expire, spec)

    def _expire(self, spec: ToxicSpec) -> None:
        """A ``duration_ms`` toxic's time is up: remove it, unless it is already gone."""
        found = self.find_toxic(spec.name)
        if found is not None and found[2].state is spec.state:
            self.remove_toxic(spec.name)

    def cancel_expiries(self) -> None:
        """The proxy is going away: no toxic of it may remove itself later."""
        for chain in self.chains:
            for spec in chain:
                if spec.state.expiry is not None:
                    spec.state.expiry.cancel()
                    spec.state.expiry = None

    def evidence(self) -> dict[str, dict[str, Any]]:
        """Each toxic's counters (extensions.ToxicState), by name."""
        return {spec.name: toxic_evidence(spec) for chain in self.chains for spec in chain}

    def update_toxic(self, spec: ToxicSpec) -> None:
        found = self.find_toxic(spec.name)
        assert found is not None
        direction, index, _ = found
        self.chains[direction][index] = spec
        for link in self._links(direction):
            link.update_toxic(index, spec)

    def remove_toxic(self, name: str) -> bool:
        found = self.find_toxic(name)
        if found is None:
            return False
        direction, index, spec = found
        if spec.state.expiry is not None:
            spec.state.expiry.cancel()
            spec.state.expiry = None
        del self.chains[direction][index]
        for link in self._links(direction):
            link.remove_toxic(index)
        return True

    def reset_toxics(self) -> None:
        for chain in self.chains:
            while chain:
                self.remove_toxic(chain[0].name)
