"""Hypothesis fuzz of the API: every answer is well-formed and the server stays up.

Well-formed means: a JSON body for 2xx and 4xx (errors as {"error", "status"}), the
documented plain-text 404 for unknown paths, an empty 405 for a wrong method, an empty
204; and a 500 only for the listen-address failures the reference defines as 500.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toxiproxy_support import Api, ServerThread

NAMES = st.sampled_from(["fz", "fz2", "a b", "ü", "latency_downstream", "x" * 40, "%2F", ".."])
TOXIC_NAMES = st.sampled_from(["latency_downstream", "t1", "noop_upstream", "nope"])
# Listen values stay on 127.0.0.1 (or fail to parse): the fuzz must not open ports on
# other interfaces.
LISTENS = st.sampled_from(
    [
        "127.0.0.1:0",
        "localhost:0",
        "local373",
        "127.0.0.1:99999",
        "[::1",
        "x:y:z",
        "127.0.0.1:http-nope",
        "127.0.0.1:-1",
    ]
)
UPSTREAMS = st.sampled_from(["127.0.0.1:9", "localhost:1", "nohost", ""])
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, -1, 2**63, 2**63 - 1, 1e39, 0.5]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
ATTRIBUTES = st.one_of(
    JSON,
    st.dictionaries(
        st.sampled_from(
            ["latency", "jitter", "rate", "delay", "timeout", "average_size", "size_variation", "bytes", "LATENCY"]
        ),
        st.one_of(NUMBERS, SCALARS),
        max_size=4,
    ),
)
PROXY_BODY = st.fixed_dictionaries(
    {"listen": LISTENS},
    optional={
        "name": st.one_of(NAMES, SCALARS),
        "upstream": st.one_of(UPSTREAMS, SCALARS),
        "enabled": st.one_of(st.booleans(), SCALARS),
    },
)
TOXIC_BODY = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(TOXIC_NAMES, SCALARS),
        "type": st.one_of(
            st.sampled_from(
                [
                    "latency",
                    "bandwidth",
                    "slow_close",
                    "timeout",
                    "reset_peer",
                    "slicer",
                    "limit_data",
                    "noop",
                    "Latency",
                ]
            ),
            SCALARS,
        ),
        "stream": st.one_of(st.sampled_from(["upstream", "downstream", "UpStream", "", "sideways"]), SCALARS),
        "toxicity": st.one_of(NUMBERS, SCALARS),
        "attributes": ATTRIBUTES,
    },
)
BODIES = st.one_of(
    st.none(),
    st.binary(max_size=64),
    JSON.map(lambda v: json.dumps(v).encode()),
    PROXY_BODY.map(lambda v: json.dumps(v).encode()),
    st.lists(PROXY_BODY, max_size=3).map(lambda v: json.dumps(v).encode()),
    TOXIC_BODY.map(lambda v: json.dumps(v).encode()),
)
PATHS = st.one_of(
    st.sampled_from(
        [
            "/version",
            "/proxies",
            "/populate",
            "/reset",
            "/metrics",
            "/",
            "/proxies/",
            "/version?x=1",
            "//proxies",
            "/proxies/fz/toxics/",
        ]
    ),
    NAMES.map(lambda n: f"/proxies/{n}"),
    NAMES.map(lambda n: f"/proxies/{n}/toxics"),
    st.tuples(NAMES, TOXIC_NAMES).map(lambda t: f"/proxies/{t[0]}/toxics/{t[1]}"),
    st.text(alphabet="/abcxyz%.?=&-", max_size=20).map(lambda s: "/" + s),
)
METHODS = st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "FOO"])
LISTEN_500_PREFIXES = ("listen tcp", "address ", "lookup ")


def check(method: str, reply: Any) -> None:
    status, body = reply.status_code, reply.content
    if status == 404 and body in (b"404 page not found\n", b""):
        return
    if status == 405:
        assert body == b""
        return
    if status == 204 or method == "HEAD":
        assert body == b""
        return
    assert 200 <= status < 300 or 400 <= status < 500 or status == 500, status
    value = json.loads(body)
    if status >= 400:
        assert value["status"] == status and isinstance(value["error"], str)
        if status == 500:
            assert value["error"].startswith(LISTEN_500_PREFIXES), value


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(method=METHODS, path=PATHS, body=BODIES)
def test_api_fuzz(api: Api, method: str, path: str, body: bytes | None) -> None:
    reply = api.request(method, path, data=body)
    check(method, reply)
    assert api.request("GET", "/version").status_code == 200


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(min_size=1, max_size=200))
def test_raw_bytes_never_hurt_the_server(tp: ServerThread, junk: bytes) -> None:
    with socket.create_connection(("127.0.0.1", tp.server.port), timeout=5) as sock:
        sock.sendall(junk + b"\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
    assert requests.get(tp.url + "/version", timeout=5).status_code == 200
