"""Toxiproxy 2.x HTTP API: routes, handlers, status codes and error texts.

Mirrors Shopify/toxiproxy ``api.go``: gorilla/mux exact-path routing (unknown path →
plain-text 404, known path with another method → empty 405), the request-id and
browser-blocking middleware that only run on matched routes, and ``http.Error``
replies (JSON text served as text/plain, newline-terminated).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from typing import Any
from urllib.parse import unquote, urlsplit

from . import gojson
from .gojson import DecodeError, decode_struct
from .httpserver import Request, Response
from .proxy import AddressError, Proxy, ProxyAlreadyStarted
from .toxics import (
    TOXIC_ATTRIBUTES,
    TOXIC_GO_TYPES,
    ToxicSpec,
    parse_direction,
    validate_attributes,
)

log = logging.getLogger("harness.toxiproxy")

VERSION = "2.12.0"

_PROXY_FIELDS: dict[str, gojson.FieldType] = {
    "name": "string",
    "listen": "string",
    "upstream": "string",
    "enabled": "bool",
}
_POPULATE_ITEM = 'struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }'
_TOXIC_FIELDS: dict[str, gojson.FieldType] = {
    "attributes": "raw",
    "name": "string",
    "type": "string",
    "stream": "string",
    "toxicity": "float32",
}
_TOXIC_UPDATE_FIELDS: dict[str, gojson.FieldType] = {"attributes": "raw", "toxicity": "float32"}

# Route name → allowed methods, as registered in api.go.
_METHODS = {
    "reset": ("POST",),
    "version": ("GET",),
    "proxies": ("GET", "POST"),
    "populate": ("POST",),
    "proxy": ("GET", "POST", "PATCH", "DELETE"),
    "toxics": ("GET", "POST"),
    "toxic": ("GET", "POST", "PATCH", "DELETE"),
}

_JSON = {"Content-Type": "application/json"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    if parts[0] != "proxies" or any(part == "" for part in parts[1:]):
        return None
    if len(parts) == 2:
        return "proxy", {"proxy": parts[1]}
    if len(parts) == 3 and parts[2] == "toxics":
        return "toxics", {"proxy": parts[1]}
    if len(parts) == 4 and parts[2] == "toxics":
        return "toxic", {"proxy": parts[1], "toxic": parts[3]}
    return None


class ApiApp:
    """The proxy collection and the HTTP handlers operating on it."""

    def __init__(self, version: str = VERSION) -> None:
        self.version = version
        self.proxies: dict[str, Proxy] = {}
        # Handlers await (name resolution, binding); one at a time keeps each request
        # atomic, as the Go server's collection locks do.
        self._lock = asyncio.Lock()

    async def __call__(self, request: Request) -> Response:
        matched = route(request.target)
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
            async with self._lock:
                try:
                    response = await self._handle(name, request, params)
                except ApiError as exc:
                    response = _error_response(exc.status, exc.message)
        response.headers["X-Toxiproxy-Request-Id"] = request_id
        return response

    async def _handle(self, name: str, request: Request, params: dict[str, str]) -> Response:
        method = request.method
        if name == "version":
            body = f'{{"version": "{self.version}"}}\n'.encode()
            return Response(200, body, {"Content-Type": "application/json;charset=utf-8"})
        if name == "reset":
            return await self.reset()
        if name == "proxies":
            if method == "GET":
                return _json(200, {key: self.proxies[key].to_json() for key in sorted(self.proxies)})
            return await self.create_proxy(request.body)
        if name == "populate":
            return await self.populate(request.body)
        proxy = self._proxy(params["proxy"])
        if name == "proxy":
            if method == "GET":
                return _json(200, proxy.to_json())
            if method == "DELETE":
                proxy.stop()
                del self.proxies[proxy.name]
                return Response(204)
            return await self.update_proxy(proxy, request.body)
        if name == "toxics":
            if method == "GET":
                return _json(200, proxy.toxic_list())
            return self.create_toxic(proxy, request.body)
        toxic_name = params["toxic"]
        found = proxy.find_toxic(toxic_name)
        if found is None:
            raise ApiError(404, "toxic not found")
        if method == "GET":
            return _json(200, found[2].to_json())
        if method == "DELETE":
            proxy.remove_toxic(toxic_name)
            return Response(204)
        return self.update_toxic(proxy, found[2], request.body)

    def _proxy(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ApiError(404, "proxy not found")
        return proxy

    # -- proxies ---------------------------------------------------------------

    @staticmethod
    def _decode(body: bytes) -> Any:
        try:
            return gojson.decode(body)
        except DecodeError as exc:
            raise ApiError(400, f"bad request body: {exc}") from None

    @staticmethod
    def _fields(value: Any, fields: dict[str, gojson.FieldType], type_name: str) -> dict[str, Any]:
        try:
            return decode_struct(value, fields, type_name)
        except DecodeError as exc:
            raise ApiError(400, f"bad request body: {exc}") from None

    async def create_proxy(self, body: bytes) -> Response:
        fields = self._fields(self._decode(body), _PROXY_FIELDS, "toxiproxy.Proxy")
        name = fields.get("name", "")
        upstream = fields.get("upstream", "")
        if not name:
            raise ApiError(400, "missing required field: name")
        if not upstream:
            raise ApiError(400, "missing required field: upstream")
        if name in self.proxies:
            raise ApiError(409, "proxy already exists")
        proxy = Proxy(name, fields.get("listen", ""), upstream)
        if fields.get("enabled", True):
            try:
                await proxy.start()
            except AddressError as exc:
                raise ApiError(500, str(exc)) from None
        self.proxies[name] = proxy
        return _json(201, proxy.to_json())

    async def update_proxy(self, proxy: Proxy, body: bytes) -> Response:
        fields = self._fields(self._decode(body), _PROXY_FIELDS, "toxiproxy.Proxy")
        try:
            await proxy.update(
                fields.get("listen", proxy.listen),
                fields.get("upstream", proxy.upstream),
                fields.get("enabled", proxy.enabled),
            )
        except AddressError as exc:
            raise ApiError(500, str(exc)) from None
        return _json(200, proxy.to_json())

    async def populate(self, body: bytes) -> Response:
        try:
            items = self._populate_items(body)
        except ApiError as exc:
            return self._populate_reply(exc.status, [], exc.message)
        done: list[Proxy] = []
        for fields in items:
            try:
                done.append(await self._add_or_replace(fields))
            except AddressError as exc:
                return self._populate_reply(500, done, str(exc))
        return self._populate_reply(201, done)

    def _populate_items(self, body: bytes) -> list[dict[str, Any]]:
        value = self._decode(body)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ApiError(
                400,
                f"bad request body: json: cannot unmarshal {gojson.kind(value).split()[0]}"
                f" into Go value of type []{_POPULATE_ITEM}",
            )
        items = [self._fields(item, _PROXY_FIELDS, _POPULATE_ITEM) for item in value]
        # Everything is validated before anything is created.
        for index, fields in enumerate(items, start=1):
            if not fields.get("name"):
                raise ApiError(400, f"missing required field: name at proxy {index}")
            if not fields.get("upstream"):
                raise ApiError(400, f"missing required field: upstream at proxy {index}")
        return items

    async def _add_or_replace(self, fields: dict[str, Any]) -> Proxy:
        name, upstream = fields["name"], fields["upstream"]
        listen = fields.get("listen", "")
        existing = self.proxies.get(name)
        if existing is not None:
            if not await existing.differs(listen, upstream):
                return existing
            existing.stop()
        proxy = Proxy(name, listen, upstream)
        if fields.get("enabled", True):
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    @staticmethod
    def _populate_reply(status: int, done: list[Proxy], error: str | None = None) -> Response:
        # Populate writes its own JSON (not http.Error): error fields first, then the
        # proxies created so far, null when there are none.
        body: dict[str, Any] = {}
        if error is not None:
            body["error"] = error
            body["status"] = status
        body["proxies"] = [proxy.to_json() for proxy in done] if done else None
        return _json(status, body)

    async def reset(self) -> Response:
        for proxy in list(self.proxies.values()):
            try:
                await proxy.start()
            except ProxyAlreadyStarted:
                pass
            except AddressError as exc:
                raise ApiError(500, str(exc)) from None
            proxy.reset_toxics()
        return Response(204)

    # -- toxics ----------------------------------------------------------------

    def create_toxic(self, proxy: Proxy, body: bytes) -> Response:
        value = self._decode(body)
        wrapper = self._fields(value, _TOXIC_FIELDS, "toxics.ToxicWrapper")
        raw_attributes = wrapper.get("attributes")
        if raw_attributes is not None and not isinstance(raw_attributes, dict):
            # Go first decodes attributes into a NoopToxic, which needs an object.
            raise ApiError(
                400,
                f"bad request body: json: cannot unmarshal {gojson.kind(raw_attributes).split()[0]}"
                " into Go struct field ToxicWrapper.attributes of type toxics.NoopToxic",
            )
        stream = wrapper.get("stream", "downstream")
        direction = parse_direction(stream)
        if direction is None:
            raise ApiError(400, "stream was invalid, can be either upstream or downstream")
        toxic_type = wrapper.get("type", "")
        name = wrapper.get("name") or f"{toxic_type}_{stream}"
        if toxic_type not in TOXIC_ATTRIBUTES:
            raise ApiError(400, "invalid toxic type")
        if proxy.find_toxic(name) is not None:
            raise ApiError(409, "toxic already exists")
        attributes = {key: 0 for key in TOXIC_ATTRIBUTES[toxic_type]}
        attributes.update(self._attributes(toxic_type, raw_attributes))
        self._validate(toxic_type, attributes)
        spec = ToxicSpec(
            name=name,
            type=toxic_type,
            stream=stream,
            direction=direction,
            toxicity=wrapper.get("toxicity", 1.0),
            attributes=attributes,
        )
        proxy.add_toxic(spec)
        return _json(200, spec.to_json())

    def _attributes(self, toxic_type: str, raw: Any) -> dict[str, int]:
        attributes = self._fields(raw, TOXIC_ATTRIBUTES[toxic_type], TOXIC_GO_TYPES[toxic_type])
        return attributes

    def update_toxic(self, proxy: Proxy, spec: ToxicSpec, body: bytes) -> Response:
        fields = self._fields(
            self._decode(body), _TOXIC_UPDATE_FIELDS, "struct { Attributes interface {}; Toxicity float32 }"
        )
        attributes = dict(spec.attributes)
        attributes.update(self._attributes(spec.type, fields.get("attributes")))
        self._validate(spec.type, attributes)
        updated = ToxicSpec(
            name=spec.name,
            type=spec.type,
            stream=spec.stream,
            direction=spec.direction,
            toxicity=fields.get("toxicity", spec.toxicity),
            attributes=attributes,
        )
        proxy.update_toxic(updated)
        return _json(200, updated.to_json())

    @staticmethod
    def _validate(toxic_type: str, attributes: dict[str, int]) -> None:
        problem = validate_attributes(toxic_type, attributes)
        if problem is not None:
            raise ApiError(400, f"bad request body: {problem}")

    # -- lifecycle ---------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every proxy and wait for connection setups still in flight."""
        tasks: list[asyncio.Task[None]] = []
        for proxy in self.proxies.values():
            tasks.extend(proxy.dial_tasks())
            proxy.stop()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
