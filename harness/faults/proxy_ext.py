"""The harness's side of the embedded Toxiproxy's extensions (docs/toxiproxy-extensions.md).

toxiproxy-python sends and reads only the 2.x fields, so what needs an extension (an aimed toxic,
the per-toxic evidence) goes over plain HTTP here. A server without the extensions (a real
Toxiproxy, ``--toxiproxy-url``) answers 404 under ``/wschaos/``: evidence is then reported missing,
and an aimed step is refused rather than silently applied to every connection.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from harness.toxiproxy.extensions import PREFIX

#: What the heal record says when the server keeps no counters.
NO_COUNTERS = "missing: server has no counters"
TIMEOUT_S = 5.0


class ExtensionMissing(RuntimeError):
    """The Toxiproxy server does not offer an extension a step needs."""


def _request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """Status and decoded JSON body (None when not JSON); 4xx/5xx are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=TIMEOUT_S) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return status, None


def capabilities(url: str) -> frozenset[str]:
    """The extensions the server at ``url`` offers; empty for a server with none (a real Toxiproxy)."""
    status, body = _request("GET", f"{url}/{PREFIX}/capabilities")
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("capabilities"), list):
        return frozenset()
    return frozenset(c for c in body["capabilities"] if isinstance(c, str))


def require(url: str, capability: str, why: str) -> None:
    """Raise :class:`ExtensionMissing`, saying ``why`` it matters, unless the server offers ``capability``."""
    if capability not in capabilities(url):
        raise ExtensionMissing(
            f"{why} needs the embedded Toxiproxy's {capability!r} extension, and the Toxiproxy at {url}"
            " does not offer it (a real Toxiproxy would ignore it and hit every connection)"
        )


def add_toxic(url: str, proxy: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a toxic from a body that may carry extension fields; raises on any refusal."""
    status, reply = _request("POST", f"{url}/proxies/{quote(proxy, safe='')}/toxics", body)
    if status != 200 or not isinstance(reply, dict):
        error = reply.get("error") if isinstance(reply, dict) else reply
        raise RuntimeError(f"toxiproxy refused toxic {body.get('name')!r} on {proxy!r}: {status} {error}")
    return reply


def toxic_evidence(url: str, proxy: str, toxic: str) -> dict[str, Any] | None:
    """What the toxic did (connections, bytes delayed/dropped/cut, cuts); None if the server keeps no counters.

    A 404 from a server that has the extension means the toxic is gone, which is an error worth raising.
    """
    return _evidence("GET", url, proxy, toxic, f"evidence of toxic {toxic!r} on {proxy!r}")


def remove_toxic_with_evidence(url: str, proxy: str, toxic: str) -> dict[str, Any] | None:
    """Remove the toxic and return what it did up to its removal, in one request.

    Counters read in one request and a removal in the next miss whatever the toxic did in between;
    the server removes it first and then reads them, so these are final. None, with the toxic
    left in place, if the server keeps no counters (the caller removes it the 2.x way). A 404
    from a server that has the extension means the toxic is gone, which is an error worth raising.
    """
    return _evidence("DELETE", url, proxy, toxic, f"removing toxic {toxic!r} on {proxy!r} with its evidence")


def _evidence(method: str, url: str, proxy: str, toxic: str, what: str) -> dict[str, Any] | None:
    path = f"/{PREFIX}/proxies/{quote(proxy, safe='')}/toxics/{quote(toxic, safe='')}/evidence"
    status, body = _request(method, url + path)
    if status == 200 and isinstance(body, dict):
        return body
    if status == 404 and "evidence" not in capabilities(url):
        return None
    error = body.get("error") if isinstance(body, dict) else body
    raise RuntimeError(f"{what}: {status} {error}")
