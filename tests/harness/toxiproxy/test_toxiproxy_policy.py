"""The address policy: proxies listen on and dial loopback hosts only, unless the server allows more."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import requests
import toxiproxy.api
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic
from toxiproxy_support import DEADLINE, Api, ServerThread, Upstream, connect, port_of

from harness.toxiproxy.addresses import AddressNotAllowed, HostPolicy

# TEST-NET-1 (RFC 5737): never a local address, never routed.
OUTSIDE = "192.0.2.1"

# -- the rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1:80", "127.9.9.9:80", "[::1]:80", "localhost:80", "LOCALHOST.:80", "[::ffff:127.0.0.1]:80"],
)
def test_loopback_is_allowed_by_default(address: str) -> None:
    HostPolicy().check("listen", address)
    HostPolicy().check("upstream", address)


@pytest.mark.parametrize("address", [f"{OUTSIDE}:80", "example.com:80", "0.0.0.0:80", "[::]:80", "10.0.0.1:80"])
def test_other_hosts_are_refused_by_default(address: str) -> None:
    for field in ("listen", "upstream"):
        with pytest.raises(AddressNotAllowed, match=f"{field} address .* is not allowed: .* is not a loopback host"):
            HostPolicy().check(field, address)


def test_an_empty_host_is_every_interface_for_listen_and_the_loopback_for_upstream() -> None:
    with pytest.raises(AddressNotAllowed, match="all interfaces is not a loopback host"):
        HostPolicy().check("listen", ":8080")
    HostPolicy().check("upstream", ":8080")


def test_allowed_hosts_and_allow_any() -> None:
    policy = HostPolicy.of(["Example.COM", OUTSIDE, "[2001:db8::1]"])
    for address in ("example.com:1", f"{OUTSIDE}:1", "[2001:db8:0::1]:1"):
        policy.check("upstream", address)
    with pytest.raises(AddressNotAllowed):
        policy.check("upstream", "192.0.2.2:1")
    HostPolicy(allow_any=True).check("listen", "0.0.0.0:80")


def test_unparseable_addresses_are_left_to_the_address_errors() -> None:
    # Go's own "missing port in address" (a 500) stays the answer for these.
    for address in ("local373", "x:y:z", "[::1", ""):
        HostPolicy().check("listen", address)


# -- over raw HTTP ----------------------------------------------------------------------------------


def _refusal(reply: requests.Response) -> str:
    assert reply.status_code == 400, reply.text
    # Go's error shape: a JSON body sent as text/plain, like every other API error.
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8", reply.headers
    body = reply.json()
    assert body["status"] == 400
    return str(body["error"])


def test_the_api_refuses_outside_addresses(api: Api, echo: Upstream) -> None:
    error = _refusal(api.request("POST", "/proxies", json={"name": "out", "upstream": f"{OUTSIDE}:80"}))
    assert error.startswith(f"upstream address {OUTSIDE}:80 is not allowed")
    assert f"--allow-host {OUTSIDE}" in error and "--allow-any-host" in error
    error = _refusal(
        api.request("POST", "/proxies", json={"name": "wide", "listen": "0.0.0.0:0", "upstream": echo.address})
    )
    assert error.startswith("listen address 0.0.0.0:0 is not allowed")
    assert api.request("GET", "/proxies").json() == {}

    # A loopback proxy cannot be moved outside either, and stays as it was.
    body = api.create("in", echo.address, listen="[::1]:0")
    error = _refusal(api.request("PATCH", "/proxies/in", json={"upstream": f"{OUTSIDE}:80"}))
    assert "is not allowed" in error
    assert api.request("GET", "/proxies/in").json()["upstream"] == echo.address
    with connect(port_of(body["listen"]), host="::1") as sock:
        sock.sendall(b"still")
        assert sock.recv(5) == b"still"


def test_populate_stops_at_the_first_refused_proxy(api: Api, echo: Upstream) -> None:
    reply = api.request(
        "POST",
        "/populate",
        json=[
            {"name": "one", "upstream": echo.address, "listen": "localhost:0"},
            {"name": "two", "upstream": f"{OUTSIDE}:80", "listen": "127.0.0.1:0"},
        ],
    )
    assert reply.status_code == 400
    body = reply.json()
    assert body["error"].startswith(f"upstream address {OUTSIDE}:80 is not allowed")
    assert [p["name"] for p in body["proxies"]] == ["one"]


# -- toxiproxy-python -------------------------------------------------------------------------------


def test_toxiproxy_python_sees_the_refusal(tp: ServerThread, echo: Upstream) -> None:
    client = Toxiproxy()
    with pytest.raises(InvalidToxic, match="is not allowed"):
        client.create(upstream=f"{OUTSIDE}:80", name="out")
    assert client.proxies() == {}
    assert client.create(upstream=echo.address, name="in").enabled


# -- servers that allow more ------------------------------------------------------------------------


@pytest.fixture
def allowing() -> Iterator[ServerThread]:
    st = ServerThread(asyncio.new_event_loop, policy=HostPolicy.of([OUTSIDE]))
    st.start()
    toxiproxy.api.APIConsumer.host = "127.0.0.1"
    toxiproxy.api.APIConsumer.port = st.server.port
    yield st
    for name in requests.get(st.url + "/proxies", timeout=DEADLINE).json():
        requests.delete(f"{st.url}/proxies/{name}", timeout=DEADLINE)
    st.stop()


def test_an_allowed_host_passes_the_policy(allowing: ServerThread) -> None:
    client = Toxiproxy()
    # Dialed only when a client connects: creating it is enough to show the policy let it by.
    proxy = client.create(upstream=f"{OUTSIDE}:80", name="out")
    assert proxy.upstream == f"{OUTSIDE}:80"
    # Allowed, so what answers is the bind itself (Go's 500), not the policy.
    reply = requests.post(
        allowing.url + "/proxies",
        json={"name": "bind", "listen": f"{OUTSIDE}:0", "upstream": "127.0.0.1:1"},
        timeout=DEADLINE,
    )
    assert reply.status_code == 500 and "bind" in reply.json()["error"], reply.text
    refused = requests.post(
        allowing.url + "/proxies", json={"name": "no", "upstream": "192.0.2.2:80"}, timeout=DEADLINE
    )
    assert refused.status_code == 400
