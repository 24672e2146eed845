"""Go ``net`` address handling, where Toxiproxy clients can see it.

``listen`` is rewritten to the bound address (``localhost:0`` → ``127.0.0.1:41234``; an
empty or wildcard host → ``[::]:port`` on a dual-stack socket), and error texts read like
Go's (``listen tcp 127.0.0.1:3310: bind: address already in use``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from dataclasses import dataclass

RESOLVE_TIMEOUT = 10.0
BACKLOG = 1024


class AddressError(Exception):
    """An address cannot be parsed, resolved or bound; the text is Go's wording."""


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


def bind_listener(resolved: Resolved, shown: str) -> tuple[socket.socket, str]:
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
    raise AddressError(f"listen tcp {shown}: bind: {strerror(last)}")


def strerror(exc: OSError) -> str:
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    # Go's syscall error table is lower-case ("address already in use").
    return text[:1].lower() + text[1:]


async def upstream_hosts(upstream: str) -> tuple[list[str], int]:
    """The IP literals to dial for an upstream, in Go's order, and its port."""
    host, port_text = split_host_port(upstream)
    port = parse_port(upstream, port_text)
    # Go dials the loopback for an empty host.
    hosts = ["127.0.0.1", "::1"] if host == "" else await resolve_hosts(host)
    return hosts, port


# -- which hosts a proxy may use ------------------------------------------------------------------

LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


class AddressNotAllowed(Exception):
    """A proxy address outside the allowed hosts (a 400, not one of Go's address errors)."""


@dataclass(frozen=True)
class HostPolicy:
    """Which hosts a proxy may listen on and dial. By default only the loopback (127.0.0.0/8,
    ::1, ``localhost``): the embedded server is a test fixture, and a proxy on a public address
    or to an arbitrary host would make it an open relay. `allowed` adds hosts (names compared
    case-insensitively, IP literals by value); `allow_any` lifts the rule.

    An address that does not parse is not judged here: Go's own error for it stays the answer.
    An empty host is "all interfaces" for `listen` (refused) and the loopback for `upstream`.
    """

    allowed: frozenset[str] = frozenset()
    allow_any: bool = False

    @classmethod
    def of(cls, hosts: list[str] | tuple[str, ...] = (), allow_any: bool = False) -> HostPolicy:
        return cls(frozenset(_host_key(h) for h in hosts), allow_any)

    def permits(self, host: str, *, listening: bool) -> bool:
        if self.allow_any:
            return True
        if host == "":
            return not listening
        if _host_key(host) in self.allowed:
            return True
        if host.lower() in LOOPBACK_NAMES:
            return True
        literal = _literal(host)
        return literal is not None and ipaddress.ip_address(literal).is_loopback

    def check(self, field: str, address: str) -> None:
        """Raises :class:`AddressNotAllowed` for a `field` ("listen", "upstream") whose host is
        not allowed; returns quietly for an allowed or unparseable address."""
        try:
            host, _ = split_host_port(address)
        except AddressError:
            return
        if self.permits(host, listening=field == "listen"):
            return
        shown = host or "all interfaces"
        raise AddressNotAllowed(
            f"{field} address {address} is not allowed: {shown} is not a loopback host "
            f"(start the server with --allow-host {host or '0.0.0.0'} or --allow-any-host to allow it)"
        )


def _host_key(host: str) -> str:
    literal = _literal(host.strip("[]"))
    return literal if literal is not None else host.lower().rstrip(".")
