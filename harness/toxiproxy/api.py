"""Toxiproxy 2.x HTTP API: routes, request bodies, responses; a thin layer over the collection.

Mirrors Shopify/toxiproxy ``api.go``: gorilla/mux exact-path routing (unknown path →
plain-text 404, known path with another method → empty 405), the request-id and
browser-blocking middleware that only run on matched routes, and ``http.Error``
replies (JSON text served as text/plain, newline-terminated). What each request does
is ``collection.ProxyCollection``'s business; toxic bodies are decoded by ``toxic_spec``.

Extension routes live under ``/wschaos/`` (``extensions.PREFIX``), where Toxiproxy has none:
the 2.x routes and their replies are untouched (docs/toxiproxy-extensions.md).
"""

from __future__ import annotations

import base64
import logging
import os
from typing import Any
from urllib.parse import unquote, urlsplit

from . import gojson
from .addresses import HostPolicy
from .collection import ProxyCollection, ProxyConfig
from .errors import ApiError, bad_body
from .extensions import CAPABILITIES, PREFIX
from .httpserver import Request, Response
from .proxy import Proxy, toxic_evidence
from .toxic_spec import decode_fields

log = logging.getLogger("harness.toxiproxy")

VERSION = "2.12.0"

_PROXY_FIELDS: dict[str, gojson.FieldType] = {
    "name": "string",
    "listen": "string",
    "upstream": "string",
    "enabled": "bool",
}
_POPULATE_ITEM = 'struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }'

# Route name → allowed methods, as registered in api.go.
_METHODS = {
    "reset": ("POST",),
    "version": ("GET",),
    "proxies": ("GET", "POST"),
    "populate": ("POST",),
    "proxy": ("GET", "POST", "PATCH", "DELETE"),
    "toxics": ("GET", "POST"),
    "toxic": ("GET", "POST", "PATCH", "DELETE"),
    "ext_capabilities": ("GET",),
    "ext_proxy_evidence": ("GET",),
    "ext_toxic_evidence": ("GET", "DELETE"),
}

_JSON = {"Content-Type": "application/json"}


def _error_response(status: int, message: str) -> Response:
    body = gojson.encode({"error": message, "status": status}) + b"\n"
    # Go's http.Error overrides the JSON content type the handler set.
    return Response(
        status,
        body,
        {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    )


def _json(status: int, value: Any) -> Response:
    return Response(status, gojson.encode(value), dict(_JSON))


def _request_id() -> str:
    # Same shape as the xid ids Toxiproxy's hlog middleware generates.
    return base64.b32hexencode(os.urandom(12)).decode().lower().rstrip("=")


def route(target: str) -> tuple[str, dict[str, str]] | None:
    """Match a request target against Toxiproxy's routes (exact paths, decoded)."""
    if target.startswith(("http://", "https://")):
        target = urlsplit(target).path or "/"
    path = unquote(target.split("?", 1)[0].split("#", 1)[0], errors="replace")
    if not path.startswith("/"):
        return None
    parts = path[1:].split("/")
    if len(parts) == 1 and parts[0] in ("reset", "version", "proxies", "populate"):
        return parts[0], {}
    if parts[0] == PREFIX:
        return _extension_route(parts[1:])
    if parts[0] != "proxies" or any(part == "" for part in parts[1:]):
        return None
    if len(parts) == 2:
        return "proxy", {"proxy": parts[1]}
    if len(parts) == 3 and parts[2] == "toxics":
        return "toxics", {"proxy": parts[1]}
    if len(parts) == 4 and parts[2] == "toxics":
        return "toxic", {"proxy": parts[1], "toxic": parts[3]}
    return None


def _extension_route(parts: list[str]) -> tuple[str, dict[str, str]] | None:
    if parts == ["capabilities"]:
        return "ext_capabilities", {}
    if len(parts) < 3 or parts[0] != "proxies" or parts[-1] != "evidence" or "" in parts:
        return None
    if len(parts) == 3:
        return "ext_proxy_evidence", {"proxy": parts[1]}
    if len(parts) == 5 and parts[2] == "toxics":
        return "ext_toxic_evidence", {"proxy": parts[1], "toxic": parts[3]}
    return None


def _decode(body: bytes) -> Any:
    try:
        return gojson.decode(body)
    except gojson.DecodeError as exc:
        raise bad_body(exc) from None


def _proxy_fields(value: Any, type_name: str = "toxiproxy.Proxy") -> dict[str, Any]:
    return decode_fields(value, _PROXY_FIELDS, type_name)


def _populate_configs(body: bytes) -> list[ProxyConfig]:
    value = _decode(body)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_body(
            f"json: cannot unmarshal {gojson.kind(value).split()[0]} into Go value of type []{_POPULATE_ITEM}"
        )
    items = [_proxy_fields(item, _POPULATE_ITEM) for item in value]
    # Everything is validated before anything is created.
    for index, fields in enumerate(items, start=1):
        if not fields.get("name"):
            raise ApiError(400, f"missing required field: name at proxy {index}")
        if not fields.get("upstream"):
            raise ApiError(400, f"missing required field: upstream at proxy {index}")
    return [
        ProxyConfig(fields["name"], fields.get("listen", ""), fields["upstream"], fields.get("enabled", True))
        for fields in items
    ]


def _populate_reply(status: int, done: list[Proxy], error: str | None = None) -> Response:
    # Populate writes its own JSON (not http.Error): error fields first, then the
    # proxies created so far, null when there are none.
    body: dict[str, Any] = {}
    if error is not None:
        body["error"] = error
        body["status"] = status
    body["proxies"] = [proxy.to_json() for proxy in done] if done else None
    return _json(status, body)


class ApiApp:
    """The HTTP handlers over one :class:`ProxyCollection`."""

    def __init__(self, version: str = VERSION, *, extensions: bool = True, policy: HostPolicy | None = None) -> None:
        self.version = version
        # False: a stock 2.x server (no /wschaos routes, extension fields ignored as Go ignores them).
        self.extensions = extensions
        self.collection = ProxyCollection(extensions=extensions, policy=policy)

    async def __call__(self, request: Request) -> Response:
        matched = route(request.target)
        if matched is not None and matched[0].startswith("ext_") and not self.extensions:
            matched = None
        if matched is None:
            return Response(
                404,
                b"404 page not found\n",
                {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
            )
        name, params = matched
        if request.method not in _METHODS[name]:
            return Response(405)
        request_id = _request_id()
        if request.header("user-agent").startswith("Mozilla/"):
            response = Response(
                403,
                b"User agent not allowed\n",
                {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
            )
        else:
            async with self.collection.lock:
                try:
                    response = await self._handle(name, request, params)
                except ApiError as exc:
                    response = _error_response(exc.status, exc.message)
        response.headers["X-Toxiproxy-Request-Id"] = request_id
        return response

    async def _handle(self, name: str, request: Request, params: dict[str, str]) -> Response:
        method = request.method
        proxies = self.collection
        if name == "version":
            body = f'{{"version": "{self.version}"}}\n'.encode()
            return Response(200, body, {"Content-Type": "application/json;charset=utf-8"})
        if name == "reset":
            await proxies.reset()
            return Response(204)
        if name == "proxies":
            if method == "GET":
                return _json(200, proxies.index())
            return await self._create_proxy(request.body)
        if name == "populate":
            return await self.populate(request.body)
        if name == "ext_capabilities":
            return _json(200, {"capabilities": list(CAPABILITIES), "version": self.version})
        proxy = proxies.get(params["proxy"])
        if name == "ext_proxy_evidence":
            return _json(200, proxy.evidence())
        if name == "ext_toxic_evidence":
            spec = proxies.toxic(proxy, params["toxic"])
            if method == "DELETE":
                # Removed before its counters are read, in one step of the loop: from here on the
                # toxic cannot act, so these counts are final (read first, a frame acted on
                # between the read and the removal would be missed).
                proxies.remove_toxic(proxy, spec)
            return _json(200, toxic_evidence(spec))
        if name == "proxy":
            if method == "GET":
                return _json(200, proxy.to_json())
            if method == "DELETE":
                proxies.delete(proxy)
                return Response(204)
            fields = _proxy_fields(_decode(request.body))
            await proxies.update(
                proxy,
                fields.get("listen", proxy.listen),
                fields.get("upstream", proxy.upstream),
                fields.get("enabled", proxy.enabled),
            )
            return _json(200, proxy.to_json())
        if name == "toxics":
            if method == "GET":
                return _json(200, proxy.toxic_list())
            return _json(200, proxies.add_toxic(proxy, _decode(request.body)).to_json())
        spec = proxies.toxic(proxy, params["toxic"])
        if method == "GET":
            return _json(200, spec.to_json())
        if method == "DELETE":
            proxies.remove_toxic(proxy, spec)
            return Response(204)
        return _json(200, proxies.update_toxic(proxy, spec, _decode(request.body)).to_json())

    async def _create_proxy(self, body: bytes) -> Response:
        fields = _proxy_fields(_decode(body))
        name = fields.get("name", "")
        upstream = fields.get("upstream", "")
        if not name:
            raise ApiError(400, "missing required field: name")
        if not upstream:
            raise ApiError(400, "missing required field: upstream")
        config = ProxyConfig(name, fields.get("listen", ""), upstream, fields.get("enabled", True))
        return _json(201, (await self.collection.create(config)).to_json())

    async def populate(self, body: bytes) -> Response:
        try:
            configs = _populate_configs(body)
        except ApiError as exc:
            return _populate_reply(exc.status, [], exc.message)
        done, error = await self.collection.populate(configs)
        if error is not None:
            return _populate_reply(error.status, done, error.message)
        return _populate_reply(201, done)

    async def shutdown(self) -> None:
        await self.collection.shutdown()
