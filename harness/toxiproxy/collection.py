"""The proxy collection: every proxy by name, and the operations the API offers on them.

Mirrors Toxiproxy's ``ProxyCollection``: one lock makes each operation atomic (they await
name resolution and binding), errors carry Go's status (``errors.ApiError``), and
address failures become Go's 500s. No HTTP here: ``api`` decodes requests and renders
what these methods return.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .addresses import AddressError, AddressNotAllowed, HostPolicy
from .errors import ApiError
from .proxy import Proxy, ProxyAlreadyStarted
from .toxic_spec import ToxicSpec, new_toxic, updated_toxic


@dataclass(frozen=True)
class ProxyConfig:
    """A proxy as ``POST /proxies`` and ``/populate`` describe it."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True


def _address_failure(exc: AddressError) -> ApiError:
    return ApiError(500, str(exc))


# A 400 like Go's other refusals of a proxy body (a 403 would be apter, but toxiproxy-python
# raises only for 400/404/409; on a 403 it fails building a Proxy from the error body).
NOT_ALLOWED_STATUS = 400


class ProxyCollection:
    def __init__(self, *, extensions: bool = True, policy: HostPolicy | None = None) -> None:
        self.policy = policy or HostPolicy()
        self.proxies: dict[str, Proxy] = {}
        # Whether toxic bodies may carry the extension fields (docs/toxiproxy-extensions.md).
        self.extensions = extensions
        # Operations await (resolution, binding); one at a time keeps each atomic, as
        # the Go collection's lock does. Callers hold it around a whole request.
        self.lock = asyncio.Lock()

    def index(self) -> dict[str, Any]:
        return {name: self.proxies[name].to_json() for name in sorted(self.proxies)}

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ApiError(404, "proxy not found")
        return proxy

    # -- proxies ---------------------------------------------------------------

    def _check_allowed(self, listen: str, upstream: str) -> None:
        try:
            self.policy.check("listen", listen)
            self.policy.check("upstream", upstream)
        except AddressNotAllowed as exc:
            raise ApiError(NOT_ALLOWED_STATUS, str(exc)) from None

    async def create(self, config: ProxyConfig) -> Proxy:
        if config.name in self.proxies:
            raise ApiError(409, "proxy already exists")
        self._check_allowed(config.listen, config.upstream)
        proxy = Proxy(config.name, config.listen, config.upstream)
        if config.enabled:
            try:
                await proxy.start()
            except AddressError as exc:
                raise _address_failure(exc) from None
        self.proxies[config.name] = proxy
        return proxy

    async def update(self, proxy: Proxy, listen: str, upstream: str, enabled: bool) -> Proxy:
        self._check_allowed(listen, upstream)
        try:
            await proxy.update(listen, upstream, enabled)
        except AddressError as exc:
            raise _address_failure(exc) from None
        return proxy

    def delete(self, proxy: Proxy) -> None:
        proxy.cancel_expiries()
        proxy.stop()
        del self.proxies[proxy.name]

    async def populate(self, configs: list[ProxyConfig]) -> tuple[list[Proxy], ApiError | None]:
        """Add or replace each proxy in order; stops at the first failure, keeping the rest."""
        done: list[Proxy] = []
        for config in configs:
            try:
                self._check_allowed(config.listen, config.upstream)
                done.append(await self._add_or_replace(config))
            except AddressError as exc:
                return done, _address_failure(exc)
            except ApiError as exc:
                return done, exc
        return done, None

    async def _add_or_replace(self, config: ProxyConfig) -> Proxy:
        existing = self.proxies.get(config.name)
        if existing is not None:
            if not await existing.differs(config.listen, config.upstream):
                return existing
            existing.cancel_expiries()
            existing.stop()
        proxy = Proxy(config.name, config.listen, config.upstream)
        if config.enabled:
            await proxy.start()
        self.proxies[config.name] = proxy
        return proxy

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (live connections stay)."""
        for proxy in list(self.proxies.values()):
            try:
                await proxy.start()
            except ProxyAlreadyStarted:
                pass
            except AddressError as exc:
                raise _address_failure(exc) from None
            proxy.reset_toxics()

    # -- toxics ----------------------------------------------------------------

    @staticmethod
    def toxic(proxy: Proxy, name: str) -> ToxicSpec:
        found = proxy.find_toxic(name)
        if found is None:
            raise ApiError(404, "toxic not found")
        return found[2]

    def add_toxic(self, proxy: Proxy, body: Any) -> ToxicSpec:
        spec = new_toxic(body, taken=lambda name: proxy.find_toxic(name) is not None, extensions=self.extensions)
        proxy.add_toxic(spec)
        return spec

    @staticmethod
    def update_toxic(proxy: Proxy, spec: ToxicSpec, body: Any) -> ToxicSpec:
        updated = updated_toxic(spec, body)
        proxy.update_toxic(updated)
        return updated

    @staticmethod
    def remove_toxic(proxy: Proxy, spec: ToxicSpec) -> None:
        proxy.remove_toxic(spec.name)

    # -- lifecycle -------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every proxy and wait for connection setups still in flight."""
        tasks: list[asyncio.Task[None]] = []
        for proxy in self.proxies.values():
            tasks.extend(proxy.dial_tasks())
            proxy.cancel_expiries()
            proxy.stop()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
