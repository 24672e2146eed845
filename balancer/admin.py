"""Admin HTTP endpoint: /status (the contract's shape), /metrics, /healthz.

HTTP/1.1 is parsed by websockets, which the balancer already depends on: its
server hands every request to ``process_request``, and answering each one
with a ``Response`` means the admin port never upgrades to WebSocket. One
request per connection; ``open_timeout`` bounds the whole exchange, so a slow
or hostile admin client can't hold anything for long. Requests websockets
can't parse (garbage, a body, a bad protocol) get the connection closed or its
own 4xx, without a log line. With ``admin_token`` set, /status and /metrics
need it as a bearer token (401 otherwise).
"""

from __future__ import annotations

import asyncio
import hmac
import http
import json
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from balancer.session import Context

_READ_TIMEOUT_S = 5.0
# What admin_token guards: everything that reports on the balancer's sessions.
_GUARDED_PATHS = frozenset({"/status", "/metrics"})


def status_snapshot(ctx: Context) -> dict[str, Any]:
    counts = ctx.table.counts()
    return {
        "sessions": counts["active_connections"],
        "tables": counts,
        "backends": [
            {"name": b.name, "connection_count": b.connection_count, "healthy": b.healthy}
            for b in ctx.pool.backends.values()
        ],
        "errors": {"concurrent_recv": ctx.stats.concurrent_recv},
        "states": ctx.table.by_state(),
        "failovers": {
            "allowed": ctx.stats.failover_allowed,
            "refused": ctx.stats.failover_refused,
            "resent_messages": ctx.stats.resent_messages,
        },
        "sessions_total": ctx.stats.sessions_total,
        # Admission control (balancer.admission): "refused" counts its 503s only, not those of
        # max_connections, draining or shutting down.
        "admission": {
            "opening": ctx.admission.opening,
            "max_opening": ctx.admission.limit,
            "handshakes": ctx.handshakes_in_flight(),
            "refused": ctx.admission.refused_total,
        },
        # Its presence declares SIGHUP drain support (docs/contract.md, section 8a).
        "draining": ctx.draining,
    }


class _LiveCollector(Collector):
    """Reads the live tables at scrape time, so metrics can't drift from /status."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        counts = ctx.table.counts()
        yield GaugeMetricFamily("wschaos_balancer_sessions", "Live client sessions", value=counts["active_connections"])
        tables = GaugeMetricFamily("wschaos_balancer_table_entries", "Entries per internal table", labels=["table"])
        for name, n in counts.items():
            tables.add_metric([name], n)
        yield tables
        states = GaugeMetricFamily("wschaos_balancer_connection_state", "Sessions per state", labels=["state"])
        for name, n in ctx.table.by_state().items():
            states.add_metric([name], n)
        yield states
        conns = GaugeMetricFamily("wschaos_balancer_backend_connections", "Open upstreams", labels=["backend"])
        healthy = GaugeMetricFamily("wschaos_balancer_backend_healthy", "1 if healthy", labels=["backend"])
        for b in ctx.pool.backends.values():
            conns.add_metric([b.name], b.connection_count)
            healthy.add_metric([b.name], 1 if b.healthy else 0)
        yield conns
        yield healthy
        s = ctx.stats
        yield CounterMetricFamily("wschaos_balancer_sessions_opened", "Client sessions opened", value=s.sessions_total)
        yield CounterMetricFamily(
            "wschaos_balancer_concurrent_recv_errors",
            "ConcurrencyError seen (must stay 0)",
            value=s.concurrent_recv,
        )
        fo = CounterMetricFamily("wschaos_balancer_failover_attempts", "Failover decisions", labels=["allowed"])
        fo.add_metric(["true"], s.failover_allowed)
        fo.add_metric(["false"], s.failover_refused)
        yield fo
        yield CounterMetricFamily(
            "wschaos_balancer_resent_messages",
            "Client messages re-sent on a new upstream",
            value=s.resent_messages,
        )
        yield CounterMetricFamily("wschaos_balancer_upstreams_lost", "Upstreams lost", value=s.upstreams_lost)
        yield GaugeMetricFamily(
            "wschaos_balancer_opening",
            "Admitted clients whose first upstream open has not finished",
            value=ctx.admission.opening,
        )
        yield GaugeMetricFamily(
            "wschaos_balancer_handshakes",
            "Accepted client connections still in their handshake",
            value=ctx.handshakes_in_flight(),
        )
        yield CounterMetricFamily(
            "wschaos_balancer_shed",
            "Client handshakes refused with 503 by admission control (max_opening)",
            value=ctx.admission.refused_total,
        )


class AdminServer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Per instance, so tests can run several balancers in one process.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_LiveCollector(ctx))
        self._server: Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await serve(
            _never_upgraded,
            host,
            port,
            process_request=self._respond,
            open_timeout=_READ_TIMEOUT_S,
            ping_interval=None,
            server_header=None,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            except TimeoutError:
                pass

    def route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        path = path.split("?", 1)[0]
        if path == "/status":
            body = json.dumps(status_snapshot(self.ctx)).encode()
            return 200, "application/json", body
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            return 200, "text/plain; charset=utf-8", b"ok\n"
        return 404, "text/plain; charset=utf-8", b"not found\n"

    def authorized(self, path: str, authorization: list[str]) -> bool:
        """Whether a request for ``path`` with these Authorization header values may be answered.

        With ``admin_token`` set, /status and /metrics need exactly one
        "Authorization: Bearer TOKEN" (RFC 6750); /healthz and unknown paths reveal
        nothing and stay open. The comparison takes the same time wherever the values
        differ, so the token can't be guessed a byte at a time.
        """
        token = self.ctx.config.admin_token
        if token is None or path.split("?", 1)[0] not in _GUARDED_PATHS:
            return True
        if len(authorization) != 1:
            return False
        scheme, _, credentials = authorization[0].strip().partition(" ")
        given = credentials.strip().encode("utf-8", "surrogateescape")
        return scheme.lower() == "bearer" and hmac.compare_digest(given, token.encode())

    def _respond(self, _conn: ServerConnection, request: Request) -> Response:
        if self.authorized(request.path, request.headers.get_all("Authorization")):
            status, ctype, body = self.route(request.method, request.path)
        else:
            status, ctype, body = 401, "text/plain; charset=utf-8", b"admin_token required\n"
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close")])
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="wschaos-balancer admin"'
        if status == 405:
            headers["Allow"] = "GET, HEAD"
        return Response(status, http.HTTPStatus(status).phrase, headers, b"" if request.method == "HEAD" else body)


async def _never_upgraded(conn: ServerConnection) -> None:
    # _respond answers every request, so no admin connection becomes a WebSocket.
    await conn.close()
