"""Backends, their health and their connection counts.

Health is passive (a failed connect or an abnormal close marks a backend down)
and active (a periodic probe of the backends that are down marks them up), so
new sessions fail back to the primary once it recovers. Probing only the
backends that are down keeps probe connections out of healthy backends' logs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.http11 import USER_AGENT
from websockets.uri import parse_uri

from balancer.config import Config
from balancer.events import EventLog
from balancer.fastpath import UpstreamConnection

log = logging.getLogger("balancer.pool")
# What websockets.connect() would log the upstream connections to.
UPSTREAM_LOGGER = logging.getLogger("websockets.client")

# Upstream handshakes in flight at once. A mass failover starts one per session
# at the same moment; unbounded, thousands of handshakes share the CPU, each
# one takes long enough to hit open_timeout_s (marking a healthy backend down)
# and the backend's listen backlog overflows. Bounded, each handshake is quick
# and the rest wait their turn, which open_timeout_s does not count. A
# handshake's latency is about the bound divided by the loop's handshake rate,
# and on a starved loop (5,000 sessions on a shared machine: a few dozen per
# second) 256 in flight took past the 10 s open_timeout_s: 678 timeouts and
# 669 sessions closed in one run, 59 and 58 with 64 (docs/performance.md,
# "Mass failover"). The CPU per re-homed session did not change with the bound.
MAX_CONCURRENT_OPENS = 64


def is_origin_form(target: str) -> bool:
    """Whether an HTTP request target is origin-form ("/" path, then an optional "?query"),
    the only form a client of the balancer may use: the upstream's host always comes
    from config, never from the client (RFC 9112, section 3.2.1)."""
    return target.startswith("/")


@dataclass
class Backend:
    name: str
    url: str
    healthy: bool = True
    connection_count: int = 0

    def target(self, path: str) -> str:
        """The upstream URL for a client's request target: the backend URL's scheme and
        authority, then the client's path and query unchanged.

        Raises ValueError unless ``path`` is origin-form: pasted after the authority,
        anything else would become part of it ("@evil:80/x" turns the backend's
        host:port into userinfo and evil into the host; "00/x" after ":90" changes the port).
        """
        if not is_origin_form(path):
            raise ValueError(f"request target is not a path: {path[:100]!r}")
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{path}"

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        return parts.hostname or "127.0.0.1", port


class Pool:
    def __init__(self, config: Config, events: EventLog) -> None:
        self.config = config
        self.events = events
        self.backends: dict[str, Backend] = {spec.name: Backend(spec.name, spec.url) for spec in config.backends}
        self._opening = asyncio.Semaphore(MAX_CONCURRENT_OPENS)

    def health(self) -> dict[str, bool]:
        return {name: b.healthy for name, b in self.backends.items()}

    def _set_health(self, name: str, healthy: bool, why: str) -> None:
        b = self.backends[name]
        if b.healthy != healthy:
            b.healthy = healthy
            log.info("backend %s is %s (%s)", name, "up" if healthy else "down", why)
            self.events.emit("backend_health", backend=name, healthy=healthy, reason=why)

    def mark_down(self, name: str, why: str) -> None:
        self._set_health(name, False, why)

    def mark_up(self, name: str, why: str) -> None:
        self._set_health(name, True, why)

    def acquire(self, name: str) -> None:
        self.backends[name].connection_count += 1

    def release(self, name: str) -> None:
        b = self.backends[name]
        b.connection_count = max(0, b.connection_count - 1)

    async def connect(self, name: str, path: str, compression: str | None = None) -> ClientConnection:
        """Open an upstream; a failure marks the backend down and re-raises.

        ``compression`` is "deflate" only when the client's leg negotiated it.
        """
        # Outside the try: a bad request target is the client's fault, not the backend's.
        url = self.backends[name].target(path)
        try:
            async with self._opening:
                return await self._open(url, compression)
        except Exception as exc:
            self.mark_down(name, f"connect failed: {type(exc).__name__}: {exc}")
            raise

    async def _open(self, url: str, compression: str | None) -> UpstreamConnection:
        """TCP connect and opening handshake, within open_timeout_s.

        What websockets' ``connect()`` does for one attempt, without the per-call
        machinery around it (a ``connect`` object, proxy lookup, a redirect loop):
        in a mass failover this runs once per session, on the loop every session
        shares. The handshake itself is websockets' own, so the response is
        validated exactly as before (status 101, Upgrade/Connection,
        Sec-WebSocket-Accept, extensions). A redirect is not followed: a
        backend's 3xx is a failed connect, like any other status.
        """
        cfg = self.config
        uri = parse_uri(url)
        extensions = enable_client_permessage_deflate(None) if compression == "deflate" else None

        def new_connection() -> UpstreamConnection:
            # max_size guards against clients; backends are trusted and
            # their replies may legitimately outgrow a client's request.
            protocol = ClientProtocol(uri, extensions=extensions, max_size=None, logger=UPSTREAM_LOGGER)
            # Each session runs its legs' keepalive (Session._keepalive), so
            # websockets' own is off; its data frames can be relayed as frames
            # (balancer.fastpath).
            return UpstreamConnection(
                protocol, ping_interval=None, ping_timeout=None, close_timeout=cfg.close_timeout_s
            )

        tls: dict[str, Any] = {"ssl": True, "server_hostname": uri.host} if uri.secure else {}
        loop = asyncio.get_running_loop()
        try:
            # Never "or None": config guarantees open_timeout_s > 0, and None
            # would let a blackholed backend hold the handshake forever.
            async with asyncio.timeout(cfg.open_timeout_s):
                # No proxy: proxy env vars would route around the fault proxies.
                _, upstream = await loop.create_connection(new_connection, uri.host, uri.port, **tls)
                try:
                    await upstream.handshake(None, USER_AGENT)
                except BaseException:
                    upstream.transport.abort()
                    raise
        except TimeoutError as exc:
            raise TimeoutError("timed out during opening handshake") from exc
        return upstream

    async def probe(self, name: str) -> bool:
        b = self.backends[name]
        timeout = max(0.2, min(self.config.open_timeout_s, 5.0))
        try:
            async with asyncio.timeout(timeout):
                if self.config.health_probe == "tcp":
                    host, port = b.host_port
                    _, writer = await asyncio.open_connection(host, port)
                    writer.close()
                    await writer.wait_closed()
                else:
                    # A TCP probe is fooled by a stopped process (the kernel
                    # still completes the handshake); a WS handshake is not.
                    ws = await connect(b.target("/"), proxy=None, open_timeout=None, close_timeout=timeout)
                    await ws.close()
            return True
        except InvalidStatus as exc:
            # A 4xx: it is alive and only dislikes "/". A 5xx: it says it cannot serve, as when it
            # refuses upgrades (contract section 4); marked up, it would cost the next failover.
            return exc.response.status_code < 500
        except Exception:
            # Refused, reset, timed out, a bad handshake, a TLS error: whatever
            # the kind of failure, the backend is not usable yet, so it simply
            # stays down until a later probe succeeds. (Not BaseException: a
            # cancelled probe must propagate, or shutdown would wait on it.)
            return False

    async def run_health_checks(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            down = [name for name, b in self.backends.items() if not b.healthy]
            if not down:
                continue
            results = await asyncio.gather(*(self.probe(name) for name in down))
            for name, ok in zip(down, results, strict=True):
                if ok:
                    self.mark_up(name, "probe succeeded")
