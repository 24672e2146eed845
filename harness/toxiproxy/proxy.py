"""Proxies: listen addresses, listeners, upstream dialing and toxic bookkeeping.

Address handling copies Go's ``net`` package where clients can see it: ``listen`` is
rewritten to the bound address (``localhost:0`` → ``127.0.0.1:41234``; an empty or
wildcard host → ``[::]:port`` on a dual-stack socket), and error texts read like Go's
(``listen tcp 127.0.0.1:3310: bind: address already in use``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .link import Connection
from .toxics import ToxicSpec

if TYPE_CHECKING:
    from .link import Side

RESOLVE_TIMEOUT = 10.0
BACKLOG = 1024


class AddressError(Exception):
    """An address cannot be parsed, resolved or bound; the text is Go's wording."""


class ProxyAlreadyStarted(Exception):
    pass


@dataclass(frozen=True)
class Resolved:
    """A resolved TCP address: ``host`` is an IP literal or "" (all interfaces)."""

    host: str
    port: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        # Go's TCPAddr.String(): brackets for IPv6, nothing before the colon for "any".
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def split_host_port(address: str) -> tuple[str, str]:
    """Go's net.SplitHostPort, with its error texts."""

    def fail(why: str) -> AddressError:
        return AddressError(f"address {address}: {why}")

    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise fail("missing ']' in address")
        if end + 1 == len(address):
            raise fail("missing port in address")
        if address[end + 1] != ":":
            raise fail("missing port in address")
        if ":" in address[end + 2 :]:
            raise fail("too many colons in address")
        host = address[1:end]
        port = address[end + 2 :]
        if "[" in host or "]" in port or "[" in port:
            raise fail("unexpected '[' in address")
        return host, port
    colon = address.rfind(":")
    if colon < 0:
        raise fail("missing port in address")
    host, port = address[:colon], address[colon + 1 :]
    if ":" in host:
        raise fail("too many colons in address")
    if "[" in host or "]" in host or "[" in port or "]" in port:
        raise fail("unexpected '[' in address")
    return host, port


def parse_port(address: str, port: str) -> int:
    if port == "":
        return 0
    if port.isdigit() or (port[:1] in "+-" and port[1:].isdigit()):
        number = int(port)
        if not 0 <= number <= 65535:
            raise AddressError(f"address {address}: invalid port")
        return number
    try:
        return socket.getservbyname(port, "tcp")
    except (OSError, UnicodeError):
        raise AddressError(f"lookup tcp/{port}: unknown port") from None


def _literal(host: str) -> str | None:
    """The canonical text of an IP literal, or None if ``host`` is a name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.compressed


async def resolve_hosts(host: str) -> list[str]:
    """IP literals for a host name, IPv4 first as Go orders them for TCP."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    if host.lower() in ("localhost", "localhost."):
        # Answered without the resolver's worker thread: the common case stays on-loop.
        return ["127.0.0.1", "::1"]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, TimeoutError, ValueError):
        raise AddressError(f"lookup {host}: no such host") from None
    seen: list[str] = []
    for family, _, _, _, sockaddr in sorted(infos, key=lambda info: info[0] != socket.AF_INET):
        ip = str(sockaddr[0]).split("%", 1)[0] if family == socket.AF_INET6 else str(sockaddr[0])
        if family in (socket.AF_INET, socket.AF_INET6) and ip not in seen:
            seen.append(ip)
    if not seen:
        raise AddressError(f"lookup {host}: no such host")
    return seen


async def resolve_tcp(address: str) -> Resolved:
    """Go's net.ResolveTCPAddr("tcp", address)."""
    host, port_text = split_host_port(address)
    port = parse_port(address, port_text)
    if host == "":
        return Resolved("", port)
    return Resolved((await resolve_hosts(host))[0], port)


def _bind(resolved: Resolved, shown: str) -> tuple[socket.socket, str]:
    """Bind a listening socket; returns it with Go's text for the bound address."""
    host = resolved.host
    wildcard = host in ("", "0.0.0.0", "::")
    candidates: list[tuple[int, str, bool]] = []
    if wildcard:
        # Go listens on a dual-stack [::] for these, and shows it as such.
        candidates.append((socket.AF_INET6, "::", True))
        candidates.append((socket.AF_INET, "0.0.0.0", False))
    else:
        candidates.append((resolved.family, host, False))
    last: OSError | None = None
    for family, bind_host, dual in candidates:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            last = exc
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if dual:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((bind_host, resolved.port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno in (getattr(os, "EAFNOSUPPORT", -1), getattr(os, "EADDRNOTAVAIL", -1)) and dual:
                continue
            break
        bound = sock.getsockname()
        text = f"[{bound[0]}]:{bound[1]}" if family == socket.AF_INET6 else f"{bound[0]}:{bound[1]}"
        return sock, text
    assert last is not None
    raise AddressError(f"listen tcp {shown}: bind: {_strerror(last)}")


def _strerror(exc: OSError) -> str:
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    # Go's syscall error table is lower-case ("address already in use").
    return text[:1].lower() + text[1:]


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
        sock, bound = _bind(resolved, str(resolved))
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: Connection(self, loop).client, sock=sock, backlog=BACKLOG)
        except OSError as exc:
            sock.close()
            raise AddressError(f"listen tcp {bound}: {_strerror(exc)}") from None
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
        host, port_text = split_host_port(self.upstream)
        port = parse_port(self.upstream, port_text)
        hosts = ["127.0.0.1", "::1"] if host == "" else await resolve_hosts(host)
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

    def _links(self, direction: int) -> list[Any]:
        return [conn.links[direction] for conn in list(self.conns) if conn.links]

    def add_toxic(self, spec: ToxicSpec) -> None:
        self.chains[spec.direction].append(spec)
        for link in self._links(spec.direction):
            link.add_toxic(spec)

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
        direction, index, _ = found
        del self.chains[direction][index]
        for link in self._links(direction):
            link.remove_toxic(index)
        return True

    def reset_toxics(self) -> None:
        for chain in self.chains:
            while chain:
                self.remove_toxic(chain[0].name)
