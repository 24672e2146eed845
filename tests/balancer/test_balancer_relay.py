"""Relay behaviour of a real `python -m balancer` process with in-process backends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from balancer_support import client, free_port, recv_json, wait_closed_code, wait_for, ws_url
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


async def test_relays_text_and_binary_in_order_with_path_and_query(balancer_factory: Any, echo_backends: Any) -> None:
    seen: list[str] = []
    primary = await echo_backends("primary", log=seen)
    secondary = await echo_backends("secondary")
    bal = await balancer_factory([("primary", ws_url(primary)), ("secondary", ws_url(secondary))])
    path = "/play?client=c01&x=%20y"
    async with client(bal.url + path) as ws:
        for i in range(50):
            await ws.send(f"t{i}")
            await ws.send(bytes([i, 255 - i]))
        for i in range(50):
            assert await recv_json(ws) == {"server": "primary", "path": path, "msg": f"t{i}"}
            assert await ws.recv() == b"primary|" + bytes([i, 255 - i])
        st = await bal.status()
        assert st["sessions"] == 1
        assert st["tables"]["active_connections"] == 1
        assert {b["name"]: b["connection_count"] for b in st["backends"]} == {"primary": 1, "secondary": 0}
    assert seen == [path]
    await bal.wait_empty()
    events = bal.events()
    names = [e["event"] for e in events]
    assert "session_open" in names and "upstream_open" in names and "session_close" in names
    for e in events:
        assert isinstance(e["ts"], float)
    opened = next(e for e in events if e["event"] == "session_open")
    assert opened["path"] == path
    up = next(e for e in events if e["event"] == "upstream_open")
    assert up["session"] == opened["session"] and up["backend"] == "primary"


@pytest.mark.parametrize(("code", "reason"), [(1000, "bye"), (4001, "game over"), (4999, "x")])
async def test_backend_normal_or_app_close_passes_through_without_failover(
    balancer_factory: Any, echo_backends: Any, code: int, reason: str
) -> None:
    primary = await echo_backends("primary")
    secondary = await echo_backends("secondary")
    bal = await balancer_factory([("primary", ws_url(primary)), ("secondary", ws_url(secondary))])
    async with client(bal.url + "/p") as ws:
        await ws.send(f"close:{code}:{reason}")
        assert await wait_closed_code(ws) == code
        assert ws.close_reason == reason
    await bal.wait_empty()
    events = bal.events()
    assert not [e for e in events if e["event"] == "failover_attempt"]
    assert [e["code"] for e in events if e["event"] == "upstream_lost"] == [code]
    assert [e["code"] for e in events if e["event"] == "session_close"] == [code]
    st = await bal.status()
    assert all(b["healthy"] for b in st["backends"]), "a clean close is not a failure"


async def test_failover_in_place_on_abort_and_on_1001(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    secondary = await echo_backends("secondary")
    tertiary = await echo_backends("tertiary")
    bal = await balancer_factory(
        [("primary", ws_url(primary)), ("secondary", ws_url(secondary)), ("tertiary", ws_url(tertiary))],
        health_interval_s=30.0,  # keep the passive "down" marks for this test
        failover={"min_interval_s": 0.0},
    )
    async with client(bal.url + "/g?client=7") as ws:
        await ws.send("one")
        assert (await recv_json(ws))["server"] == "primary"
        await ws.send("abort")  # primary drops TCP: 1006
        # A message sent before the balancer notices the loss may be written
        # into the dying socket and lost (the documented semantics), so wait.
        await wait_for(lambda: on(bal, "secondary"), what="failover to secondary")
        await ws.send("two")
        reply = await recv_json(ws)
        assert reply == {"server": "secondary", "path": "/g?client=7", "msg": "two"}
        await ws.send("close:1001:going away")  # 1001 is a failure too: fail over again
        await wait_for(lambda: on(bal, "tertiary"), what="failover to tertiary")
        await ws.send("three")
        assert (await recv_json(ws))["server"] == "tertiary"
        assert (await bal.backend_count("tertiary")) == 1
    await bal.wait_empty()
    fo = [e for e in bal.events() if e["event"] == "failover_attempt"]
    assert [e["allowed"] for e in fo] == [True, True]
    lost = [e for e in bal.events() if e["event"] == "upstream_lost"]
    assert [(e["backend"], e["code"]) for e in lost] == [("primary", 1006), ("secondary", 1001)]


async def on(bal: Any, backend: str) -> bool:
    return bool(await bal.backend_count(backend) == 1)


@pytest.mark.parametrize("limit", ["max_attempts", "min_interval"])
async def test_1013_when_the_limiter_refuses(balancer_factory: Any, echo_backends: Any, limit: str) -> None:
    primary = await echo_backends("primary")
    secondary = await echo_backends("secondary")
    failover = (
        {"max_attempts": 1, "min_interval_s": 0.0}
        if limit == "max_attempts"
        else {"max_attempts": 5, "min_interval_s": 30.0}
    )
    bal = await balancer_factory([("primary", ws_url(primary)), ("secondary", ws_url(secondary))], failover=failover)
    async with client(bal.url) as ws:
        await ws.send("abort")
        await wait_for(lambda: on(bal, "secondary"), what="failover to secondary")
        await ws.send("x")
        assert (await recv_json(ws))["server"] == "secondary"
        await ws.send("abort")
        assert await wait_closed_code(ws) == 1013
    await bal.wait_empty()
    fo = [e for e in bal.events() if e["event"] == "failover_attempt"]
    assert [(e["allowed"], e["reason"]) for e in fo] == [(True, "allowed"), (False, limit)]
    assert [e["code"] for e in bal.events() if e["event"] == "session_close"] == [1013]


async def test_1013_when_no_backend_is_reachable(balancer_factory: Any, echo_backends: Any) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"
    bal = await balancer_factory([("a", dead), ("b", f"ws://127.0.0.1:{free_port()}")])
    async with client(bal.url) as ws:
        assert await wait_closed_code(ws) == 1013
    await bal.wait_empty()
    st = await bal.status()
    assert [b["healthy"] for b in st["backends"]] == [False, False]

    # And on failover: the only other backend is dead.
    primary = await echo_backends("primary")
    bal2 = await balancer_factory([("primary", ws_url(primary)), ("secondary", dead)])
    async with client(bal2.url) as ws:
        await ws.send("abort")
        assert await wait_closed_code(ws) == 1013
    await bal2.wait_empty()
    fo = [e for e in bal2.events() if e["event"] == "failover_attempt"]
    assert [e["allowed"] for e in fo] == [True]


async def test_client_close_closes_upstream_and_status_empties(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    bal = await balancer_factory([("primary", ws_url(primary))])
    clients = []
    for i in range(5):
        ws = await connect(bal.url + f"/c{i}", proxy=None)
        clients.append(ws)
        await ws.send("hi")
        await recv_json(ws)
    await wait_for(lambda: len(primary.connections) == 5, what="5 upstreams")
    assert (await bal.status())["sessions"] == 5
    await clients[0].close()
    clients[1].transport.abort()  # a client that vanishes without a close frame
    await wait_for(lambda: len(primary.connections) == 3, what="2 upstreams closed")
    for ws in clients[2:]:
        await ws.close(4321, "done")
    await bal.wait_empty()
    await wait_for(lambda: len(primary.connections) == 0, what="all upstreams closed")


async def test_failback_to_primary_after_it_recovers(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    port = primary.sockets[0].getsockname()[1]
    secondary = await echo_backends("secondary")
    bal = await balancer_factory([("primary", ws_url(primary)), ("secondary", ws_url(secondary))])
    async with client(bal.url) as ws1:
        await ws1.send("a")
        assert (await recv_json(ws1))["server"] == "primary"
        primary.close()  # closes its connections with 1001 -> failover
        await primary.wait_closed()
        await ws1.send("b")
        assert (await recv_json(ws1))["server"] == "secondary"

        async def primary_down() -> bool:
            st = await bal.status()
            return not st["backends"][0]["healthy"]

        await wait_for(primary_down, what="primary marked down")
        async with client(bal.url) as ws2:
            await ws2.send("c")
            assert (await recv_json(ws2))["server"] == "secondary"

        await echo_backends("primary", port=port)

        async def primary_up() -> bool:
            st = await bal.status()
            return bool(st["backends"][0]["healthy"])

        await wait_for(primary_up, what="probe marks primary up again")
        async with client(bal.url) as ws3:
            await ws3.send("d")
            assert (await recv_json(ws3))["server"] == "primary", "new sessions fail back"
        # The existing session stays where it is.
        await ws1.send("e")
        assert (await recv_json(ws1))["server"] == "secondary"
    await bal.wait_empty()


async def test_max_size_closes_with_1009(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    bal = await balancer_factory([("primary", ws_url(primary))], max_size=1024)
    async with client(bal.url) as ws:
        await ws.send(b"x" * 1024)
        assert await ws.recv() == b"primary|" + b"x" * 1024
        await ws.send(b"x" * 1025)
        assert await wait_closed_code(ws) == 1009
    await bal.wait_empty()
    # The event reports the code the client got, not the 1006 of a close frame never received.
    assert [e["code"] for e in bal.events() if e["event"] == "session_close"] == [1009]


async def test_max_connections_answers_503(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    bal = await balancer_factory([("primary", ws_url(primary))], max_connections=2)
    async with client(bal.url) as a, client(bal.url) as b:
        for ws in (a, b):
            await ws.send("hi")
            await recv_json(ws)
        with pytest.raises(InvalidStatus) as info:
            async with client(bal.url):
                pass
        assert info.value.response.status_code == 503
    await bal.wait_empty()
    async with client(bal.url) as c:
        await c.send("again")
        assert (await recv_json(c))["msg"] == "again"
    await bal.wait_empty()


async def test_admin_endpoints(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    bal = await balancer_factory([("primary", ws_url(primary))])
    async with client(bal.url) as ws:
        await ws.send("hi")
        await recv_json(ws)
        code, body = await bal.get("/metrics")
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert families["wschaos_balancer_sessions"].samples[0].value == 1
        assert families["wschaos_balancer_concurrent_recv_errors"].samples[0].value == 0
        conns = families["wschaos_balancer_backend_connections"].samples
        assert [(s.labels["backend"], s.value) for s in conns] == [("primary", 1.0)]
    code, body = await bal.get("/healthz")
    assert code == 200
    code, _ = await bal.get("/nope")
    assert code == 404
    st = await bal.wait_empty()
    assert set(st) >= {"sessions", "tables", "backends", "errors"}
    assert st["backends"] == [{"name": "primary", "connection_count": 0, "healthy": True}]
    assert json.loads(json.dumps(st)) == st


async def test_cleanup_when_the_client_leaves_during_failover(balancer_factory: Any, echo_backends: Any) -> None:
    primary = await echo_backends("primary")
    # A backend that accepts TCP but never answers the handshake makes the
    # failover connect hang until open_timeout.
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    hang = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    hang_url = f"ws://127.0.0.1:{hang.sockets[0].getsockname()[1]}"
    try:
        bal = await balancer_factory([("primary", ws_url(primary)), ("hang", hang_url)], open_timeout_s=1.5)
        async with client(bal.url) as ws:
            await ws.send("abort")

            async def failing_over() -> bool:
                st = await bal.status()
                return bool(st["states"]["failing_over"] == 1)

            await wait_for(failing_over, what="session in failing_over")
        await bal.wait_empty(timeout=5)
    finally:
        for w in held:
            w.close()
        hang.close()
        await hang.wait_closed()
