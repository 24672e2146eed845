"""The ``ws_upgrade`` toxic: a backend that refuses, stalls or slows the opening handshake.

Stage tests on the fake host (virtual clock), then real sockets: websockets on both ends, the
toxic created by the official client, and a stock server (--no-extensions) that refuses it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from test_toxiproxy_stages import Collect, FakeHost
from toxiproxy.proxy import Proxy
from toxiproxy_support import DEADLINE, ServerThread, port_of, proxy_to, ws_server_thread
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import Server, ServerConnection

from harness.faults.proxy_ext import ExtensionMissing, _request, add_toxic, capabilities, require, toxic_evidence
from harness.toxiproxy.errors import ApiError
from harness.toxiproxy.toxic_spec import new_toxic
from harness.toxiproxy.toxics import STAGES, StageHost
from harness.toxiproxy.ws_toxics import UPGRADE_MODES, UpgradeStage, refusal

REQUEST = b"GET /play?client=c1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"


def build(mode: str, started: bool = False, **attributes: int) -> tuple[FakeHost, UpgradeStage, Collect]:
    host = FakeHost()
    host.started = started
    _: StageHost = host
    out = Collect()
    body = {"type": "ws_upgrade", "stream": "upstream", "attributes": {"mode": UPGRADE_MODES[mode], **attributes}}
    stage = STAGES["ws_upgrade"](host, new_toxic(body, lambda name: False), out)
    assert isinstance(stage, UpgradeStage)
    return host, stage, out


@pytest.mark.parametrize("status", [500, 503])
def test_refuse_answers_the_request_itself_and_closes(status: int) -> None:
    host, stage, out = build("refuse", status=status)
    stage.push(REQUEST[:10], 0.0)
    assert host.replies == []  # it waits for the whole head, as a server would
    stage.push(REQUEST[10:], 0.0)
    assert host.replies == [refusal(status, "ws_upgrade_upstream")]
    assert host.replies[0].startswith(f"HTTP/1.1 {status} ".encode())
    assert out.data == b"" and out.ended  # the backend never sees the request; the link closes
    assert stage.spec.state.evidence() == {
        "connections": 1, "bytes_delayed": 0, "bytes_dropped": len(REQUEST), "bytes_cut": 0, "cuts": 1,
    }  # fmt: skip


def test_stall_swallows_the_request_for_ever() -> None:
    host, stage, out = build("stall")
    stage.push(REQUEST, 0.0)
    host.advance(3600.0)
    assert out.data == b"" and not out.ended and host.replies == [] and host.held == 0
    # Removing the toxic gives nothing back: the backend never got the request.
    assert stage.drain() == ([], False)
    stage.eof()  # the client gives up
    assert out.data == b"" and out.ended
    assert stage.spec.state.evidence() == {
        "connections": 1, "bytes_delayed": 0, "bytes_dropped": len(REQUEST), "bytes_cut": 0, "cuts": 0,
    }  # fmt: skip


def test_removing_a_slow_toxic_releases_the_held_request() -> None:
    host, stage, _ = build("slow", delay=5000)
    stage.push(REQUEST, 0.0)
    held, eof_pending = stage.drain()
    assert b"".join(data for data, _ in held) == REQUEST and not eof_pending and host.held == 0
    assert host.pending() == 0


def test_slow_holds_the_request_delay_ms_then_passes_everything() -> None:
    host, stage, out = build("slow", delay=1500)
    stage.push(REQUEST, 0.0)
    host.advance(1.49)
    assert out.data == b""
    host.advance(0.02)
    assert out.data == REQUEST and host.held == 0
    stage.push(b"frame", host.now)  # after the handshake: a pass-through
    assert out.data == REQUEST + b"frame"
    assert stage.spec.state.evidence()["bytes_delayed"] == len(REQUEST)


def test_slow_request_abandoned_before_its_delay_is_dropped() -> None:
    host, stage, out = build("slow", delay=1500)
    stage.push(REQUEST, 0.0)
    stage.eof()
    host.advance(2.0)
    assert out.data == b"" and out.ended and host.pending() == 0


@pytest.mark.parametrize("mode", list(UPGRADE_MODES))
def test_a_live_connection_is_left_alone(mode: str) -> None:
    host, stage, out = build(mode, started=True)
    stage.push(b"\x81\x05hello", 0.0)
    assert out.data == b"\x81\x05hello" and host.replies == []
    assert stage.spec.state.evidence()["connections"] == 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"stream": "downstream"}, "ws_upgrade acts on the upgrade request: its stream must be upstream"),
        ({"attributes": {"mode": 3}}, "ws_upgrade mode must be between 0 and 2, got 3"),
        ({"attributes": {"status": 101}}, "ws_upgrade status must be between 200 and 599, got 101"),
        ({"attributes": {"delay": -1}}, "ws_upgrade delay must be between 0 and 3600000, got -1"),
    ],
)
def test_bad_attributes_are_refused_by_name(body: dict, error: str) -> None:
    with pytest.raises(ApiError, match=error):
        new_toxic({"type": "ws_upgrade", "stream": "upstream", **body}, lambda name: False)


def test_defaults() -> None:
    spec = new_toxic({"type": "ws_upgrade", "stream": "upstream"}, lambda name: False)
    assert spec.attributes == {"mode": 0, "status": 503, "delay": 1000}


# -- real sockets -------------------------------------------------------------------------------


def _hello(ws: ServerConnection) -> None:
    ws.send("hello")
    with contextlib.suppress(ConnectionClosed):
        for message in ws:
            ws.send(message)


@pytest.fixture
def ws_server() -> Iterator[Server]:
    with ws_server_thread(_hello) as server:
        yield server


@pytest.fixture
def proxy(tp: ServerThread, ws_server: Server) -> Proxy:
    return proxy_to(ws_server, "backend")


def url_of(proxy: Proxy, client: str = "c1") -> str:
    return f"ws://127.0.0.1:{port_of(proxy.listen)}/play?client={client}"


@pytest.mark.parametrize("status", [500, 503])
def test_wire_refused_upgrade_is_an_http_error_and_a_live_session_is_spared(
    tp: ServerThread, proxy: Proxy, status: int
) -> None:
    with connect(url_of(proxy), proxy=None, open_timeout=DEADLINE, compression=None) as live:
        assert live.recv(timeout=DEADLINE) == "hello"
        proxy.add_toxic(name="refuse", type="ws_upgrade", stream="upstream", attributes={"status": status})
        with pytest.raises(InvalidStatus) as refused:
            connect(url_of(proxy, "c2"), proxy=None, open_timeout=DEADLINE, compression=None)
        assert refused.value.response.status_code == status
        live.send("still here")  # the session upgraded before the toxic is untouched
        assert live.recv(timeout=DEADLINE) == "still here"
    counts = toxic_evidence(tp.url, "backend", "refuse")
    assert counts is not None and (counts["connections"], counts["cuts"]) == (1, 1)


def test_wire_stalled_upgrade_times_out_and_the_heal_lets_the_next_one_through(proxy: Proxy) -> None:
    proxy.add_toxic(name="stall", type="ws_upgrade", stream="upstream", attributes={"mode": UPGRADE_MODES["stall"]})
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        connect(url_of(proxy), proxy=None, open_timeout=0.5, compression=None)
    assert time.monotonic() - start >= 0.5
    proxy.destroy_toxic("stall")
    with connect(url_of(proxy), proxy=None, open_timeout=DEADLINE, compression=None) as ws:
        assert ws.recv(timeout=DEADLINE) == "hello"


def test_wire_slow_upgrade_completes_late(proxy: Proxy) -> None:
    attributes = {"mode": UPGRADE_MODES["slow"], "delay": 400}
    proxy.add_toxic(name="slow", type="ws_upgrade", stream="upstream", attributes=attributes)
    start = time.monotonic()
    with connect(url_of(proxy), proxy=None, open_timeout=DEADLINE, compression=None) as ws:
        assert time.monotonic() - start >= 0.4
        assert ws.recv(timeout=DEADLINE) == "hello"


def test_wire_aimed_refusal_hits_only_the_named_client(tp: ServerThread, proxy: Proxy) -> None:
    body = {"name": "aimed", "type": "ws_upgrade", "stream": "upstream", "aim": {"clients": ["c9"]}}
    add_toxic(tp.url, "backend", body)
    with connect(url_of(proxy, "c1"), proxy=None, open_timeout=DEADLINE, compression=None) as ws:
        assert ws.recv(timeout=DEADLINE) == "hello"
    with pytest.raises(InvalidStatus):
        connect(url_of(proxy, "c9"), proxy=None, open_timeout=DEADLINE, compression=None)


def test_a_stock_server_refuses_the_toxic_and_the_harness_says_why() -> None:
    stock = ServerThread(extensions=False)
    stock.start()
    try:
        assert "ws_upgrade" not in capabilities(stock.url)
        with pytest.raises(ExtensionMissing, match=r"'ws_upgrade' extension"):
            require(stock.url, "ws_upgrade", "a backend_upgrade_refused step")
        proxy = {"name": "p", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}
        status, _ = _request("POST", f"{stock.url}/proxies", proxy)
        assert status == 201
        with pytest.raises(RuntimeError, match="400 invalid toxic type"):
            add_toxic(stock.url, "p", {"name": "t", "type": "ws_upgrade", "stream": "upstream"})
    finally:
        stock.stop()
