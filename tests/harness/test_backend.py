"""The game backend as a real process: replies, journal, malformed frames, handshake, signals."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from game_support import READY_TIMEOUT, Proc, start_backend
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness import game
from harness.history import read_jsonl
from harness.waiting import wait_until_async

REPLY_TIMEOUT = 5.0


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(REPLY_TIMEOUT):
        frame = await ws.recv()
    assert isinstance(frame, str)
    obj = json.loads(frame)
    assert isinstance(obj, dict)
    return obj


async def send_json(ws: ClientConnection, obj: dict[str, Any]) -> None:
    await ws.send(json.dumps(obj))


def url(port: int, client: str | None = "c001") -> str:
    q = f"?client={client}" if client is not None else ""
    return f"ws://127.0.0.1:{port}/play{q}"


@pytest.fixture
def backend(spawn: Callable[..., Proc], tmp_path: Path) -> tuple[Proc, int, Path]:
    journal = tmp_path / "journals" / "primary.jsonl"
    proc, port = start_backend(spawn, "primary", journal)
    return proc, port, journal


async def test_replies_follow_the_protocol_and_state_outlives_the_connection(backend: tuple[Proc, int, Path]) -> None:
    _, port, journal = backend
    async with connect(url(port), proxy=None, open_timeout=5) as ws:
        welcome = await recv_json(ws)
        assert welcome["type"] == "welcome" and welcome["server"] == "primary"
        assert welcome["client"] == "c001" and welcome["state"] == {"seq": 0, "x": 0, "y": 0}
        assert re.fullmatch(r"primary-[0-9a-f]{4}-1", welcome["conn"])

        await send_json(ws, game.make_move("c001", 1).to_json())
        ack1 = await recv_json(ws)
        assert ack1 == game.ack("primary", "c001", 1, False, game.expected_state(1))

        await send_json(ws, game.make_move("c001", 1).to_json())  # a re-send
        assert await recv_json(ws) == game.ack("primary", "c001", 1, True, game.expected_state(1))

        await send_json(ws, game.make_move("c001", 3).to_json())
        assert await recv_json(ws) == game.gap("primary", "c001", 3, 2)

        await send_json(ws, game.Resume("c001", game.expected_state(5)).to_json())
        assert await recv_json(ws) == game.resumed("primary", "c001", game.expected_state(5))

        await send_json(ws, game.make_move("c001", 6).to_json())
        assert await recv_json(ws) == game.ack("primary", "c001", 6, False, game.expected_state(6))

        # A resume behind the server is not adopted: state never goes back.
        await send_json(ws, game.Resume("c001", game.expected_state(2)).to_json())
        assert await recv_json(ws) == game.resumed("primary", "c001", game.expected_state(6))

    async with connect(url(port), proxy=None, open_timeout=5) as ws:
        again = await recv_json(ws)
        assert again["state"] == game.expected_state(6).to_json()
        assert again["conn"].endswith("-2") and again["conn"] != welcome["conn"]

    # The journal is written as things happen; wait for the second close to land.
    recs = await wait_journal(journal, lambda rs: sum(r["event"] == "close" for r in rs) == 2)
    assert all(r["server"] == "primary" and isinstance(r["t"], float) for r in recs)
    assert recs[0]["event"] == "start" and recs[0]["port"] == port and recs[0]["pid"] > 0
    opens = [r for r in recs if r["event"] == "open"]
    assert [o["client"] for o in opens] == ["c001", "c001"]
    assert opens[0]["path"] == "/play?client=c001" and opens[0]["peer"].startswith("127.0.0.1:")
    conn = opens[0]["conn"]
    recv = [r for r in recs if r["event"] == "recv" and r["conn"] == conn]
    assert [(r["kind"], r.get("seq"), r["applied"]) for r in recv] == [
        ("move", 1, True),
        ("move", 1, False),
        ("move", 3, False),
        ("resume", None, True),
        ("move", 6, True),
        ("resume", None, False),
    ]
    sent = [(r["kind"], r.get("seq")) for r in recs if r["event"] == "send" and r["conn"] == conn]
    assert sent == [
        ("welcome", None),
        ("ack", 1),
        ("ack", 1),
        ("gap", 3),
        ("resumed", None),
        ("ack", 6),
        ("resumed", None),
    ]
    closes = [r for r in recs if r["event"] == "close"]
    assert (closes[0]["conn"], closes[0]["client"], closes[0]["code"]) == (conn, "c001", 1000)


async def wait_journal(
    path: Path, done: Callable[[list[dict[str, Any]]], bool], within: float = REPLY_TIMEOUT
) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []

    def met() -> bool:
        nonlocal recs
        recs, problems = read_jsonl(path)
        assert not problems
        return done(recs)

    try:
        await wait_until_async(met, timeout=within, what="the journal condition")
    except TimeoutError:
        raise AssertionError(f"journal condition not met within {within}s: {recs[-5:]}") from None
    return recs


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("this is not json", "not JSON"),
        (b"\x00\x01binary", "binary frame"),
        ('["a", "list"]', "JSON object"),
        ('{"type": "teleport"}', "unknown client message type"),
        ('{"type": "move", "client": "c001", "seq": "one", "dx": 1, "dy": 0}', "move.seq"),
        ('{"type": "move", "client": "c999", "seq": 1, "dx": 1, "dy": 0}', "client 'c999'"),
    ],
)
async def test_malformed_frame_gets_an_error_and_the_connection_lives(
    backend: tuple[Proc, int, Path], frame: str | bytes, needle: str
) -> None:
    _, port, journal = backend
    async with connect(url(port), proxy=None, open_timeout=5) as ws:
        await recv_json(ws)
        await ws.send(frame)
        err = await recv_json(ws)
        assert err["type"] == "error" and err["server"] == "primary"
        assert needle in err["error"]
        # Still alive, and nothing was applied by the bad frame.
        await send_json(ws, game.make_move("c001", 1).to_json())
        assert await recv_json(ws) == game.ack("primary", "c001", 1, False, game.expected_state(1))
    recs = await wait_journal(journal, lambda rs: any(r["event"] == "close" for r in rs))
    bad = next(r for r in recs if r["event"] == "recv")
    assert bad["applied"] is False and needle in bad["error"]


@pytest.mark.parametrize("target", [url(0, None), "ws://127.0.0.1:0/play?client="])
async def test_handshake_without_client_id_is_refused_with_400(backend: tuple[Proc, int, Path], target: str) -> None:
    _, port, journal = backend
    with pytest.raises(InvalidStatus) as info:
        await connect(target.replace(":0/", f":{port}/"), proxy=None, open_timeout=5)
    assert info.value.response.status_code == 400
    # Journaled, so a balancer's close code cannot hide why the backend said no.
    recs = await wait_journal(journal, lambda rs: any(r["event"] == "rejected" for r in rs))
    rejected = next(r for r in recs if r["event"] == "rejected")
    assert rejected["status"] == 400 and rejected["reason"].startswith("missing client id")
    assert rejected["path"] == "/play" + target.split("/play", 1)[1]


async def test_sigterm_closes_clients_with_1001_and_exits_0(backend: tuple[Proc, int, Path]) -> None:
    proc, port, journal = backend
    async with connect(url(port), proxy=None, open_timeout=5) as ws:
        await recv_json(ws)
        proc.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(REPLY_TIMEOUT):
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert await proc.await_exit(REPLY_TIMEOUT) == 0
    recs, _ = read_jsonl(journal)
    assert [r["event"] for r in recs][-2:] == ["close", "stop"]
    assert recs[-2]["code"] == 1001


def test_sigint_also_exits_0(backend: tuple[Proc, int, Path]) -> None:
    proc, _, journal = backend
    proc.signal(signal.SIGINT)
    assert proc.wait(REPLY_TIMEOUT) == 0
    assert read_jsonl(journal)[0][-1]["event"] == "stop"


def test_journal_is_appended_across_restarts(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    for _ in range(2):
        proc, _ = start_backend(spawn, "secondary", journal)
        proc.signal(signal.SIGTERM)
        assert proc.wait(REPLY_TIMEOUT) == 0
    recs, problems = read_jsonl(journal)
    assert not problems
    assert [r["event"] for r in recs] == ["start", "stop", "start", "stop"]
    assert recs[0]["pid"] != recs[2]["pid"]


def test_bind_failure_is_one_line_and_exit_2(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn(
            "-m",
            "harness.backend",
            "--port",
            str(port),
            "--instance-name",
            "primary",
            "--journal",
            str(tmp_path / "j.jsonl"),
        )
        assert proc.wait(READY_TIMEOUT) == 2
    proc.cleanup()  # joins the output
    err = [line for line in proc.err if line.strip()]
    assert len(err) == 1, err
    assert f"cannot listen on 127.0.0.1:{port}" in err[0]


async def test_http_health_probe(backend: tuple[Proc, int, Path]) -> None:
    _, port, _ = backend
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(REPLY_TIMEOUT):
            status = await reader.readline()
        assert b" 200 " in status
    finally:
        writer.close()


async def http_get(port: int, path: str) -> tuple[bytes, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        async with asyncio.timeout(REPLY_TIMEOUT):
            status = await reader.readline()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            body = await reader.readexactly(length)
        return status, json.loads(body)
    finally:
        # Closed for real before returning: a socket left open would hold up the backend's exit.
        writer.close()
        await writer.wait_closed()


async def test_a_journal_on_a_full_disk_loses_lines_and_the_backend_plays_on(spawn: Callable[..., Proc]) -> None:
    # /dev/full answers every write with ENOSPC: a real full disk under the journal.
    proc, port = start_backend(spawn, "secondary", Path("/dev/full"))
    async with connect(url(port), proxy=None, open_timeout=5) as ws:
        assert (await recv_json(ws))["type"] == "welcome"
        for seq in (1, 2):
            await send_json(ws, game.make_move("c001", seq).to_json())
            assert await recv_json(ws) == game.ack("secondary", "c001", seq, False, game.expected_state(seq))
    status, health = await http_get(port, "/journal")
    assert b" 200 " in status
    assert health["server"] == "secondary"
    assert health["lost"].startswith("disk full (No space left on device) writing /dev/full"), health
    assert health["dropped"] >= 6  # start, open, welcome, 2 x (recv, send): every line since
    proc.signal(signal.SIGTERM)
    assert proc.wait(REPLY_TIMEOUT) == 0  # not a crash
    proc.cleanup()
    lost_lines = [line for line in proc.err if line.startswith("JOURNAL LOST:")]
    assert len(lost_lines) == 1 and "disk full" in lost_lines[0], proc.err  # said once, not per line


async def test_a_whole_journal_says_nothing_was_lost(backend: tuple[Proc, int, Path]) -> None:
    _, port, _ = backend
    status, health = await http_get(port, "/journal")
    assert b" 200 " in status
    assert health == {"server": "primary", "lost": None, "dropped": 0, "open": 0}


async def test_the_journal_endpoint_counts_connections_whose_close_is_not_journaled_yet(
    backend: tuple[Proc, int, Path],
) -> None:
    # What the runner's quiesce waits on: zero only once every close is in the journal.
    _, port, journal = backend
    async with connect(url(port), proxy=None, open_timeout=5) as ws:
        welcome = await recv_json(ws)
        _, health = await http_get(port, "/journal")
        assert health["open"] == 1, health
    deadline = asyncio.get_running_loop().time() + REPLY_TIMEOUT
    while (await http_get(port, "/journal"))[1]["open"] != 0:
        assert asyncio.get_running_loop().time() < deadline, "the backend never counted the close"
        await asyncio.sleep(0.02)
    recs = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [r for r in recs if r["event"] == "close" and r["conn"] == welcome["conn"]], recs


async def test_a_close_that_arrives_behind_queued_moves_is_journaled_at_once(backend: tuple[Proc, int, Path]) -> None:
    """Found by flake-check run 15: a backend journaled a balancer's close 10 s late.

    The balancer relayed a burst of moves and then closed the upstream; both reached the backend
    in one read. Answering the first move on the now-closing connection waited websockets'
    close_timeout (10 s) for the TCP close, while the moves still queued (more than max_queue)
    kept reading paused, so the peer's FIN went unnoticed for those 10 s and ``cleanup_complete``
    judged the build's closed upstream as never closed.
    """
    _, port, journal = backend
    moves = 40  # well over websockets' default max_queue (16): reading pauses
    async with connect(url(port), proxy=None, open_timeout=5, close_timeout=REPLY_TIMEOUT) as ws:
        welcome = await recv_json(ws)
        for seq in range(1, moves + 1):
            ws.protocol.send_text(json.dumps(game.make_move("c001", seq).to_json()).encode())
        ws.protocol.send_close(1001, "client closed")
        # One write, so that the backend reads the moves and the close frame together.
        ws.transport.write(b"".join(ws.protocol.data_to_send()))
        closed_at = asyncio.get_running_loop().time()
        await asyncio.wait_for(ws.wait_closed(), REPLY_TIMEOUT)

    def closed(recs: list[dict[str, Any]]) -> bool:
        return any(r["event"] == "close" and r["conn"] == welcome["conn"] for r in recs)

    recs = await wait_journal(journal, closed, within=REPLY_TIMEOUT)
    waited = asyncio.get_running_loop().time() - closed_at
    assert waited < 2.0, f"the close was journaled {waited:.1f}s after the peer closed"
    (close,) = [r for r in recs if r["event"] == "close" and r["conn"] == welcome["conn"]]
    assert close["code"] == 1001, close
    # Nothing is answered on a closing connection; what was read is still journaled as received.
    assert not [r for r in recs if r["event"] == "send" and r["conn"] == welcome["conn"] and r["kind"] == "ack"]
