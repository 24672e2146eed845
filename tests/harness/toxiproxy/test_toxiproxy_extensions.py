"""The wschaos extensions (docs/toxiproxy-extensions.md) over real sockets, raw HTTP and toxiproxy-python.

Every test also checks the other half of the bargain: a toxic created without extension fields
answers in exactly the 2.x shape.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from toxiproxy import Toxiproxy
from toxiproxy_support import (
    Api,
    ServerThread,
    Upstream,
    connect,
    evidence,
    port_of,
    read_to_eof,
    recv_exactly,
    wait_for,
)

from harness.faults.proxy_ext import (
    NO_COUNTERS,
    ExtensionMissing,
    capabilities,
    remove_toxic_with_evidence,
    require,
    toxic_evidence,
)
from harness.toxiproxy.extensions import Aim, fraction_draw
from harness.toxiproxy.wsframes import Opcode, make_frame

TWO_X_KEYS = ["attributes", "name", "type", "stream", "toxicity"]


def proxied(api: Api, upstream: Upstream, name: str = "p") -> int:
    return port_of(api.create(name, upstream.address)["listen"])


def echo_once(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload


def silent_for(sock: socket.socket, seconds: float) -> bool:
    """Nothing at all (no data, no EOF, no reset) arrives within ``seconds``."""
    readable, _, _ = select.select([sock], [], [], seconds)
    return not readable


def upgrade(client: str) -> bytes:
    return f"GET /play?client={client} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


# -- the 2.x shape is untouched ---------------------------------------------------------------


def test_plain_toxic_replies_have_exactly_the_2x_shape(api: Api, echo: Upstream, tp: ServerThread) -> None:
    proxied(api, echo)
    created = api.add_toxic("p", type="latency", attributes={"latency": 5})
    assert list(created) == TWO_X_KEYS
    assert list(api.request("GET", "/proxies/p/toxics/latency_downstream").json()) == TWO_X_KEYS
    assert [list(t) for t in api.request("GET", "/proxies/p/toxics").json()] == [TWO_X_KEYS]
    assert [list(t) for t in api.request("GET", "/proxies").json()["p"]["toxics"]] == [TWO_X_KEYS]
    updated = api.request("POST", "/proxies/p/toxics/latency_downstream", json={"attributes": {"latency": 6}})
    assert list(updated.json()) == TWO_X_KEYS
    Toxiproxy().get_proxy("p").add_toxic(type="noop", name="n")
    assert list(api.request("GET", "/proxies/p/toxics/n").json()) == TWO_X_KEYS


def test_capabilities_and_unknown_extension_paths(api: Api) -> None:
    reply = api.request("GET", "/wschaos/capabilities")
    assert reply.status_code == 200
    assert set(reply.json()["capabilities"]) >= {"evidence", "duration_ms", "aim", "idle_timeout"}
    for path in ("/wschaos", "/wschaos/", "/wschaos/proxies/p", "/wschaos/proxies/p/toxics/t", "/wschaos/x/evidence"):
        assert api.request("GET", path).status_code == 404, path
    assert api.request("POST", "/wschaos/capabilities").status_code == 405
    missing = api.request("GET", "/wschaos/proxies/nope/evidence")
    assert missing.status_code == 404 and missing.json()["error"] == "proxy not found"


# -- evidence ---------------------------------------------------------------------------------


def test_evidence_counts_delayed_bytes_per_connection(api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    api.add_toxic("p", name="slow", type="latency", stream="upstream", attributes={"latency": 5})
    assert evidence(api, "p", "slow") == {
        "name": "slow", "type": "latency", "stream": "upstream",
        "connections": 0, "bytes_delayed": 0, "bytes_dropped": 0, "bytes_cut": 0, "cuts": 0,
    }  # fmt: skip
    with connect(port) as a, connect(port) as b:
        echo_once(a, b"12345")
        echo_once(a, b"678")
        echo_once(b, b"ab")
    counted = evidence(api, "p", "slow")
    assert (counted["connections"], counted["bytes_delayed"]) == (2, 10)
    # An update replaces the spec; the counts belong to the toxic and carry on.
    api.request("POST", "/proxies/p/toxics/slow", json={"attributes": {"latency": 1}})
    with connect(port) as c:
        echo_once(c, b"xyz")
    assert evidence(api, "p", "slow")["bytes_delayed"] == 13
    everything = api.request("GET", "/wschaos/proxies/p/evidence").json()
    assert list(everything) == ["slow"] and everything["slow"]["connections"] == 3


def test_evidence_of_untouched_toxics_is_zero(api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    api.add_toxic("p", name="zero", type="latency", attributes={"latency": 0})
    api.add_toxic("p", name="missed", type="timeout", toxicity=0.0, attributes={"timeout": 0})
    with connect(port) as sock:
        echo_once(sock, b"through")
    for name in ("zero", "missed"):
        assert evidence(api, "p", name)["connections"] == 0, name


def test_evidence_of_dropping_and_cutting_toxics(api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    api.add_toxic("p", name="hole", type="timeout", stream="upstream", attributes={"timeout": 0})
    with connect(port) as sock:
        sock.sendall(b"lost bytes")
        wait_for(lambda: evidence(api, "p", "hole")["bytes_dropped"] == 10, "the blackhole to drop 10 bytes")
        assert evidence(api, "p", "hole")["connections"] == 1
        api.remove_toxic("p", "hole")
    api.add_toxic("p", name="cap", type="limit_data", attributes={"bytes": 4})
    with connect(port) as sock:
        sock.sendall(b"123456")
        assert read_to_eof(sock) == b"1234"
    counted = evidence(api, "p", "cap")
    assert (counted["connections"], counted["cuts"]) == (1, 1)
    # The echo's reply may come in more than one read; whatever arrives after the cut is not seen.
    assert 1 <= counted["bytes_cut"] <= 2
    api.remove_toxic("p", "cap")
    api.add_toxic("p", name="rst", type="reset_peer", stream="upstream", attributes={"timeout": 0})
    with connect(port) as sock:
        sock.sendall(b"boom")
        with pytest.raises(ConnectionResetError):
            read_to_eof(sock)
    counted = evidence(api, "p", "rst")
    assert (counted["connections"], counted["bytes_dropped"], counted["cuts"]) == (1, 4, 1)


# -- duration_ms ------------------------------------------------------------------------------


def test_duration_ms_toxic_removes_itself(api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    # 1.5 s: long enough that a loaded machine still gets the first echo in while it is in force.
    created = api.add_toxic("p", name="brief", type="latency", attributes={"latency": 300}, duration_ms=1500)
    assert list(created) == [*TWO_X_KEYS, "duration_ms"] and created["duration_ms"] == 1500
    assert api.request("GET", "/proxies/p/toxics/brief").json()["duration_ms"] == 1500
    assert "brief" in Toxiproxy().get_proxy("p").toxics()  # the official client reads it fine
    with connect(port) as sock:
        start = time.perf_counter()
        echo_once(sock, b"slow")
        assert time.perf_counter() - start >= 0.295
        wait_for(lambda: api.request("GET", "/proxies/p/toxics").json() == [], "the toxic to remove itself", 5.0)
        start = time.perf_counter()
        echo_once(sock, b"fast")
        assert time.perf_counter() - start < 0.15


def test_duration_ms_timer_does_not_outlive_its_toxic(api: Api, echo: Upstream) -> None:
    proxied(api, echo)
    api.add_toxic("p", name="t", type="latency", duration_ms=200)
    api.remove_toxic("p", "t")
    api.add_toxic("p", name="t", type="latency")  # same name, a new toxic without a duration
    time.sleep(0.4)  # the test is that nothing happens within the old duration
    assert [t["name"] for t in api.request("GET", "/proxies/p/toxics").json()] == ["t"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"duration_ms": 0}, "duration_ms: must be >= 1, got 0"),
        ({"duration_ms": "5"}, "duration_ms: expected an integer, got '5'"),
        ({"aim": []}, "aim: expected an object, got list"),
        ({"aim": {}}, "aim: give exactly one of clients, fraction, first (got 0)"),
        ({"aim": {"first": 1, "clients": ["a"]}}, "aim: give exactly one of clients, fraction, first (got 2)"),
        ({"aim": {"clients": []}}, "aim.clients: expected a non-empty list of client ids"),
        ({"aim": {"clients": ["a", 3]}}, "aim.clients[1]: expected a non-empty string, got 3"),
        ({"aim": {"fraction": 1.5}}, "aim.fraction: expected a number from 0 to 1, got 1.5"),
        ({"aim": {"first": 0}}, "aim.first: must be >= 1, got 0"),
        ({"aim": {"first": 2, "seed": 1}}, "aim.seed: only a fraction is drawn from a seed"),
        ({"aim": {"fraction": 0.5, "who": 1}}, "aim.who: unknown field (known: clients, fraction, seed, first)"),
    ],
)
def test_bad_extension_fields_are_400s_naming_the_field(
    api: Api, echo: Upstream, extra: dict[str, Any], message: str
) -> None:
    proxied(api, echo)
    reply = api.request("POST", "/proxies/p/toxics", json={"type": "latency", **extra})
    assert reply.status_code == 400
    assert reply.json() == {"error": f"bad request body: {message}", "status": 400}
    assert api.request("GET", "/proxies/p/toxics").json() == []


def test_2x_errors_come_before_extension_errors(api: Api, echo: Upstream) -> None:
    proxied(api, echo)
    reply = api.request("POST", "/proxies/p/toxics", json={"type": "wobble", "duration_ms": -1})
    assert reply.json() == {"error": "invalid toxic type", "status": 400}


# -- aim --------------------------------------------------------------------------------------


def test_aim_at_clients_delays_only_their_connections(api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    created = api.add_toxic("p", name="aimed", type="latency", attributes={"latency": 150}, aim={"clients": ["c2"]})
    assert created["aim"] == {"clients": ["c2"]}
    with connect(port) as hit, connect(port) as missed, connect(port) as anonymous:
        start = time.perf_counter()
        echo_once(hit, upgrade("c2"))
        assert time.perf_counter() - start >= 0.14
        for sock, line in ((missed, upgrade("c1")), (anonymous, b"GET / HTTP/1.1\r\n\r\n")):
            start = time.perf_counter()
            echo_once(sock, line)
            assert time.perf_counter() - start < 0.14
    counted = evidence(api, "p", "aimed")
    assert (counted["connections"], counted["bytes_delayed"]) == (1, len(upgrade("c2")))


def test_aim_learns_the_client_from_a_request_line_split_over_reads(api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    hole = {"type": "timeout", "stream": "upstream", "attributes": {"timeout": 0}}
    api.add_toxic("p", name="hole", **hole, aim={"clients": ["c9"]})
    with connect(port) as sock:
        echo_once(sock, b"GET /play?cli")  # passes: not identified yet, and never held back
        sock.sendall(b"ent=c9 HTTP/1.1\r\n")
        assert silent_for(sock, 0.2)
    assert evidence(api, "p", "hole")["bytes_dropped"] == len(b"ent=c9 HTTP/1.1\r\n")


def test_removing_an_aimed_timeout_closes_only_the_connections_it_was_on(api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    hole = {"type": "timeout", "stream": "upstream", "attributes": {"timeout": 0}}
    api.add_toxic("p", name="hole", **hole, aim={"clients": ["c1"]})
    with connect(port) as hit, connect(port) as spared:
        hit.sendall(upgrade("c1"))
        echo_once(spared, upgrade("c2"))
        wait_for(lambda: evidence(api, "p", "hole")["connections"] == 1, "the blackhole to take c1's request")
        api.remove_toxic("p", "hole")  # Toxiproxy closes a timeout toxic's connections on removal...
        assert read_to_eof(hit) == b""
        echo_once(spared, b"still open")  # ...but only those it was on


def test_aim_at_a_seeded_fraction_picks_what_aim_matches_says(api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    aim = Aim(fraction=0.5, seed=7)
    clients = [f"c{i}" for i in range(8)]
    picked = {c for c in clients if aim.matches(c)}
    assert 0 < len(picked) < len(clients)  # the seed splits this set, so the test means something
    assert all(fraction_draw(7, c) < 0.5 for c in picked)
    api.add_toxic("p", name="half", type="timeout", stream="upstream", attributes={"timeout": 0}, aim=aim.to_json())
    for client in clients:
        with connect(port) as sock:
            sock.sendall(upgrade(client))
            if client in picked:
                assert silent_for(sock, 0.1), client
            else:
                assert recv_exactly(sock, len(upgrade(client))) == upgrade(client), client
    assert evidence(api, "p", "half")["connections"] == len(picked)


def test_aim_at_the_first_connections_takes_live_ones_oldest_first(api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    with connect(port) as first, connect(port) as second, connect(port) as third:
        for sock in (first, second, third):
            echo_once(sock, b"up")
        api.add_toxic("p", name="two", type="latency", attributes={"latency": 150}, aim={"first": 2})
        with connect(port) as fourth:
            for sock, delayed in ((first, True), (second, True), (third, False), (fourth, False)):
                start = time.perf_counter()
                echo_once(sock, b"x")
                assert (time.perf_counter() - start >= 0.14) is delayed
    assert evidence(api, "p", "two")["connections"] == 2


def test_aimed_toxic_with_toxiproxy_python_alongside(api: Api, echo: Upstream) -> None:
    proxied(api, echo)
    api.add_toxic("p", name="aimed", type="latency", aim={"clients": ["c1"]}, duration_ms=60_000)
    proxy = Toxiproxy().get_proxy("p")
    assert proxy is not None
    listed = proxy.toxics()
    assert listed["aimed"].type == "latency"
    assert proxy.destroy_toxic("aimed") is True
    assert api.request("GET", "/proxies/p/toxics").json() == []


# -- trigger ----------------------------------------------------------------------------------

SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def test_a_toxic_triggered_after_the_upgrade_waits_for_the_101(
    api: Api, make_upstream: Callable[..., Upstream]
) -> None:
    upgrading, plain = make_upstream(greeting=SWITCH), make_upstream(greeting=b"HTTP/1.1 200 OK\r\n\r\n")
    upgraded_port, plain_port = proxied(api, upgrading, "ws"), proxied(api, plain, "http")
    body = {"type": "latency", "attributes": {"latency": 150}, "trigger": {"after": "upgrade"}}
    for name in ("ws", "http"):
        created = api.add_toxic(name, name="later", **body)
        assert created["trigger"] == {"after": "upgrade"}
    with connect(upgraded_port) as ws, connect(plain_port) as http:
        assert recv_exactly(ws, len(SWITCH)) == SWITCH  # the head itself is not delayed
        assert recv_exactly(http, 19) == b"HTTP/1.1 200 OK\r\n\r\n"
        start = time.perf_counter()
        echo_once(ws, b"frame")
        assert time.perf_counter() - start >= 0.14
        start = time.perf_counter()
        echo_once(http, b"request")
        assert time.perf_counter() - start < 0.14
    assert evidence(api, "ws", "later")["connections"] == 1
    assert evidence(api, "http", "later")["connections"] == 0


def test_a_triggered_toxic_added_after_the_upgrade_acts_at_once(
    api: Api, make_upstream: Callable[..., Upstream]
) -> None:
    port = proxied(api, make_upstream(greeting=SWITCH))
    with connect(port) as sock:
        assert recv_exactly(sock, len(SWITCH)) == SWITCH
        echo_once(sock, b"before")
        api.add_toxic("p", name="hole", type="timeout", attributes={"timeout": 0}, trigger={"after": "upgrade"})
        sock.sendall(b"after")
        assert silent_for(sock, 0.2)


def test_a_trigger_and_an_aim_together(api: Api, make_upstream: Callable[..., Upstream]) -> None:
    port = proxied(api, make_upstream(greeting=SWITCH))
    body = {"type": "latency", "attributes": {"latency": 150}, "trigger": {"after": "upgrade"}}
    api.add_toxic("p", name="both", **body, aim={"clients": ["c1"]})
    with connect(port) as hit, connect(port) as missed:
        for sock, client, delayed in ((hit, "c1", True), (missed, "c2", False)):
            assert recv_exactly(sock, len(SWITCH)) == SWITCH
            echo_once(sock, upgrade(client))  # identified; the upgrade already happened
            start = time.perf_counter()
            echo_once(sock, b"frame")
            assert (time.perf_counter() - start >= 0.14) is delayed, client


def masked_text(text: bytes) -> bytes:
    """A client's text frame (masked, as toward a server)."""
    return make_frame(Opcode.TEXT, text, to_server=True).raw


def test_a_toxic_triggered_after_n_frames_acts_from_the_byte_behind_the_nth(
    api: Api, make_upstream: Callable[..., Upstream]
) -> None:
    port = proxied(api, make_upstream(greeting=SWITCH))
    body = {"type": "timeout", "stream": "upstream", "attributes": {"timeout": 0}}
    created = api.add_toxic("p", name="third", **body, trigger={"after": "frames", "frames": 2})
    assert created["trigger"] == {"after": "frames", "frames": 2}
    ping = make_frame(Opcode.PING, b"", to_server=True).raw
    with connect(port) as early, connect(port) as other:
        for sock in (early, other):
            assert recv_exactly(sock, len(SWITCH)) == SWITCH
        # Control frames are not counted; the 2nd data frame ends mid-chunk, and the cut is exact.
        first, second, third = masked_text(b"one"), masked_text(b"two"), masked_text(b"three")
        echo_once(early, ping + first)
        early.sendall(second + third)
        assert recv_exactly(early, len(second)) == second
        assert silent_for(early, 0.2)  # the third frame met the timeout toxic: swallowed
        echo_once(other, first)  # each connection counts its own frames
    counts = evidence(api, "p", "third")
    assert counts["connections"] == 1 and counts["bytes_dropped"] == len(third)


def test_a_frame_trigger_counts_from_when_the_toxic_meets_a_live_connection(
    api: Api, make_upstream: Callable[..., Upstream]
) -> None:
    port = proxied(api, make_upstream(greeting=SWITCH))
    with connect(port) as sock:
        assert recv_exactly(sock, len(SWITCH)) == SWITCH
        echo_once(sock, masked_text(b"before"))
        api.add_toxic("p", name="later", type="latency", stream="upstream", attributes={"latency": 150},
                      trigger={"after": "frames", "frames": 1})  # fmt: skip
        start = time.perf_counter()
        echo_once(sock, masked_text(b"counted"))
        assert time.perf_counter() - start < 0.14
        start = time.perf_counter()
        echo_once(sock, masked_text(b"delayed"))
        assert time.perf_counter() - start >= 0.14


def test_a_frame_trigger_on_a_connection_aimed_elsewhere_never_acts(
    api: Api, make_upstream: Callable[..., Upstream]
) -> None:
    port = proxied(api, make_upstream(greeting=SWITCH))
    api.add_toxic("p", name="aimed", type="timeout", stream="upstream", attributes={"timeout": 0},
                  trigger={"after": "frames", "frames": 1}, aim={"clients": ["c1"]})  # fmt: skip
    with connect(port) as sock:
        sock.sendall(upgrade("c2"))
        assert recv_exactly(sock, len(SWITCH)) == SWITCH
        assert recv_exactly(sock, len(upgrade("c2"))) == upgrade("c2")
        for n in range(3):
            echo_once(sock, masked_text(b"move %d" % n))
    assert evidence(api, "p", "aimed")["connections"] == 0


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ("upgrade", "trigger: expected an object, got str"),
        ({"after": "failovers"}, "trigger.after: must be one of upgrade, frames, got 'failovers'"),
        ({"after": "frames"}, "trigger.frames: required when after is 'frames' (how many data frames)"),
        ({"after": "frames", "frames": 0}, "trigger.frames: must be >= 1, got 0"),
        ({"after": "frames", "frames": "3"}, "trigger.frames: expected an integer, got '3'"),
        ({"after": "upgrade", "frames": 3}, "trigger.frames: only a trigger after 'frames' counts frames"),
        ({"after": "upgrade", "n": 3}, "trigger.n: unknown field (known: after, frames)"),
    ],
)
def test_bad_triggers_are_400s(api: Api, echo: Upstream, trigger: Any, message: str) -> None:
    proxied(api, echo)
    reply = api.request("POST", "/proxies/p/toxics", json={"type": "latency", "trigger": trigger})
    assert reply.json() == {"error": f"bad request body: {message}", "status": 400}


# -- idle_timeout -----------------------------------------------------------------------------


def test_idle_timeout_silences_an_idle_connection_and_spares_a_busy_one(api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    proxy = Toxiproxy().get_proxy("p")
    assert proxy is not None
    for stream in ("upstream", "downstream"):  # the official client can create the extension type
        proxy.add_toxic(name=f"idle_{stream}", type="idle_timeout", stream=stream, attributes={"timeout": 500})
    assert list(api.request("GET", "/proxies/p/toxics/idle_upstream").json()) == TWO_X_KEYS
    with connect(port) as busy, connect(port) as idle:
        echo_once(idle, b"hello")
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:  # a keepalive every 100 ms beats a 500 ms idle timeout
            echo_once(busy, b"ping")
            time.sleep(0.1)  # the traffic pattern under test, not a synchronisation
        idle.sendall(b"anyone?")
        echo_once(busy, b"still here")
        assert silent_for(idle, 0.2)  # no data, no FIN, no RST: the flow is forgotten
        echo_once(busy, b"and here")
    cuts = sum(evidence(api, "p", f"idle_{s}")["cuts"] for s in ("upstream", "downstream"))
    assert cuts == 1


def test_idle_timeout_must_be_positive(api: Api, echo: Upstream) -> None:
    proxied(api, echo)
    reply = api.request("POST", "/proxies/p/toxics", json={"type": "idle_timeout", "attributes": {"timeout": 0}})
    assert reply.json() == {"error": "bad request body: idle_timeout timeout must be positive, got 0", "status": 400}


# -- a stock 2.x server (--no-extensions), as the harness's client code meets a real Toxiproxy ----


@pytest.fixture
def stock(echo: Upstream) -> Iterator[Api]:
    server = ServerThread(extensions=False)
    server.start()
    client = Api(server.url)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def test_a_stock_server_has_no_extension_routes_and_ignores_extension_fields(stock: Api, echo: Upstream) -> None:
    port = proxied(stock, echo)
    for path in ("/wschaos/capabilities", "/wschaos/proxies/p/evidence"):
        reply = stock.request("GET", path)
        assert (reply.status_code, reply.text) == (404, "404 page not found\n"), path
    # Go ignores fields it does not know: the aim is dropped and the toxic hits every connection.
    created = stock.add_toxic("p", name="t", type="latency", attributes={"latency": 150}, aim={"clients": ["x"]})
    assert list(created) == TWO_X_KEYS
    with connect(port) as sock:
        start = time.perf_counter()
        echo_once(sock, upgrade("c1"))
        assert time.perf_counter() - start >= 0.14
    reply = stock.request("POST", "/proxies/p/toxics", json={"type": "idle_timeout", "attributes": {"timeout": 5}})
    assert reply.json() == {"error": "invalid toxic type", "status": 400}
    stock.request("DELETE", "/proxies/p")


def test_the_harness_client_tells_a_stock_server_from_ours(stock: Api, api: Api, echo: Upstream) -> None:
    assert capabilities(stock.url) == frozenset()
    assert "aim" in capabilities(api.url)
    with pytest.raises(ExtensionMissing, match=r"a step aimed at clients c1 needs the embedded Toxiproxy's 'aim'"):
        require(stock.url, "aim", "a step aimed at clients c1")
    require(api.url, "aim", "a step aimed at clients c1")
    proxied(stock, echo)
    stock.add_toxic("p", name="t", type="latency")
    assert toxic_evidence(stock.url, "p", "t") is None  # no counters: the caller records NO_COUNTERS
    assert NO_COUNTERS == "missing: server has no counters"
    stock.request("DELETE", "/proxies/p")
    proxied(api, echo)
    api.add_toxic("p", name="t", type="latency")
    assert toxic_evidence(api.url, "p", "t") == evidence(api, "p", "t")
    with pytest.raises(RuntimeError, match="evidence of toxic 'gone' on 'p': 404 toxic not found"):
        toxic_evidence(api.url, "p", "gone")


def test_a_toxic_removed_with_its_evidence_is_counted_up_to_its_removal(stock: Api, api: Api, echo: Upstream) -> None:
    port = proxied(api, echo)
    api.add_toxic("p", name="t", type="latency", attributes={"latency": 1})
    with connect(port) as sock:
        echo_once(sock, upgrade("c1"))
        counted = evidence(api, "p", "t")
        assert counted["connections"] == 1 and counted["bytes_delayed"] > 0, counted
        # One request: removed first, then counted, so nothing it does in between is missed.
        assert remove_toxic_with_evidence(api.url, "p", "t") == counted
        assert api.request("GET", "/proxies/p/toxics/t").status_code == 404
        assert api.request("GET", "/wschaos/proxies/p/toxics/t/evidence").status_code == 404
        echo_once(sock, b"after the removal")  # the link goes on, without the toxic
    with pytest.raises(RuntimeError, match="removing toxic 't' on 'p' with its evidence: 404 toxic not found"):
        remove_toxic_with_evidence(api.url, "p", "t")
    # A stock server keeps no counters: None, and the toxic is left for the 2.x removal.
    proxied(stock, echo)
    stock.add_toxic("p", name="t", type="latency")
    assert remove_toxic_with_evidence(stock.url, "p", "t") is None
    assert stock.request("GET", "/proxies/p/toxics/t").status_code == 200
    stock.request("DELETE", "/proxies/p")
