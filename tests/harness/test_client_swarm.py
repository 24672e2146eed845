"""GameClient, the client CLI and the swarm against real backend processes.

Server transitions are tested both ways a client can meet them: a new connection to another
backend after its backend died, and a second welcome inside one connection (through a tiny
in-test relay that fails over the way a balancer does).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from game_support import Proc, start_backend
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from harness import game
from harness.client import GameClient, play_url
from harness.history import HistoryWriter, Record, read_jsonl
from harness.reconnect import ReconnectPolicy
from harness.swarm import CLIENTS_PER_PROCESS
from harness.waiting import wait_until_async

DEADLINE = 10.0


# -- processes -------------------------------------------------------------------------------


def start_backend_url(spawn: Callable[..., Proc], name: str, journal: Path) -> tuple[Proc, str]:
    proc, port = start_backend(spawn, name, journal)
    return proc, f"ws://127.0.0.1:{port}"


# -- waiting and judging ---------------------------------------------------------------------


async def until(cond: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    await wait_until_async(cond, timeout=within, interval=0.01, what=what)


def records(path: Path, process: str | None = None) -> list[Record]:
    recs, problems = read_jsonl(path)
    assert not problems
    return [r for r in recs if process is None or r["process"] == process]


def check_client_history(recs: list[Record], client: str) -> list[Record]:
    """The client-side invariants every test here relies on. Returns the ok records."""
    oks = [r for r in recs if r["type"] == "ok"]
    seqs = [r["seq"] for r in oks]
    assert len(seqs) == len(set(seqs)), "a seq was acknowledged twice"
    state_seqs = [r["state"]["seq"] for r in oks]
    assert state_seqs == sorted(state_seqs), "acknowledged state went backwards"
    invoked: set[int] = set()
    for r in recs:
        if r["type"] == "invoke":
            invoked.add(r["seq"])
        if r["type"] == "ok":
            assert r["seq"] in invoked, f"ok before invoke: {r}"
            assert r["client"] == client
            assert r["state"]["seq"] >= r["seq"]
            # Whatever the server says, its state is a real game: each move applied once, in order.
            assert r["state"] == game.expected_state(r["state"]["seq"]).to_json()
            if not r["dup"]:
                assert r["state"]["seq"] == r["seq"]
    assert recs[-1]["f"] == "stopped"
    return oks


@contextlib.asynccontextmanager
async def playing(client: GameClient) -> AsyncIterator[None]:
    """Runs the client for the body; stops it (gracefully) however the body ends."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(client.run())
        try:
            yield
        finally:
            client.request_stop()
            async with asyncio.timeout(DEADLINE):
                await asyncio.shield(task)


# -- GameClient ------------------------------------------------------------------------------


async def test_client_plays_and_stops_cleanly(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    _, url = start_backend_url(spawn, "primary", tmp_path / "primary.jsonl")
    hist = tmp_path / "h.jsonl"
    with HistoryWriter(hist, "test") as writer:
        client = GameClient(url, "c001", recorder=writer, rate=200, max_moves=30)
        async with playing(client):
            async with asyncio.timeout(DEADLINE):
                await client.finished.wait()
    recs = records(hist, "c001")
    oks = check_client_history(recs, "c001")
    assert [r["seq"] for r in oks] == list(range(1, 31))
    assert all(r["server"] == "primary" and not r["dup"] and r["latency_ms"] >= 0 for r in oks)
    assert [r["f"] for r in recs[:2]] == ["conn_open", "welcome"]
    assert recs[1]["server_conn"].startswith("primary-")
    invokes = [r for r in recs if r["type"] == "invoke"]
    assert [(r["seq"], r["attempt"], r["conn"]) for r in invokes] == [(s, 1, 1) for s in range(1, 31)]
    close = next(r for r in recs if r["f"] == "conn_close")
    assert (close["code"], close["initiator"]) == (1000, "client")
    assert close["sent_code"] == 1000 and close["cause"] is None  # our own close, answered
    assert recs[-1]["hung"] is False
    assert not [r for r in recs if r["type"] == "info" or r["f"] == "resume"]


async def test_dup_ack_counts_as_the_ack(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    # The server already applied seqs 1..5 for this id (a first life of the client); a fresh
    # client's moves 1..5 come back as dup, and each is that seq's acknowledgement.
    _, url = start_backend_url(spawn, "primary", tmp_path / "primary.jsonl")
    for _ in range(2):
        hist = tmp_path / "h.jsonl"
        hist.unlink(missing_ok=True)
        with HistoryWriter(hist, "test") as writer:
            client = GameClient(url, "c001", recorder=writer, rate=200, max_moves=5)
            async with playing(client):
                async with asyncio.timeout(DEADLINE):
                    await client.finished.wait()
    oks = check_client_history(records(hist, "c001"), "c001")
    assert [(r["seq"], r["dup"], r["state"]["seq"]) for r in oks] == [(s, True, 5) for s in range(1, 6)]


async def test_client_reconnects_to_another_backend_and_resumes(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    primary, url_a = start_backend_url(spawn, "primary", tmp_path / "primary.jsonl")
    _, url_b = start_backend_url(spawn, "secondary", tmp_path / "secondary.jsonl")
    target = {"url": url_a}
    hist = tmp_path / "h.jsonl"
    with HistoryWriter(hist, "test") as writer:
        client = GameClient(
            lambda: target["url"], "c001", recorder=writer, rate=100, reconnect_policy=ReconnectPolicy(base_s=0.05)
        )
        async with playing(client):
            await until(lambda: len(client.book.acked) >= 10, "10 acks from primary")
            target["url"] = url_b
            primary.signal(signal.SIGKILL)
            await until(lambda: client.server == "secondary", "a welcome from secondary")
            on_b = len(client.book.acked)
            await until(lambda: len(client.book.acked) >= on_b + 10, "10 acks from secondary")

    recs = records(hist, "c001")
    oks = check_client_history(recs, "c001")
    first_close = next(r for r in recs if r["f"] == "conn_close")
    assert (first_close["conn"], first_close["initiator"], first_close["code"]) == (1, "remote", 1006)
    assert first_close["sent_code"] is None  # the client sent no close frame: the peer vanished
    welcomes = [r for r in recs if r["f"] == "welcome"]
    assert [w["server"] for w in welcomes] == ["primary", "secondary"]
    assert welcomes[1]["state"] == {"seq": 0, "x": 0, "y": 0}  # secondary had never seen c001
    resume = next(r for r in recs if r["f"] == "resume")
    last_on_a = max(r["state"]["seq"] for r in oks if r["server"] == "primary")
    assert resume["conn"] == welcomes[1]["conn"] and resume["state"]["seq"] == last_on_a
    # Whatever was unacknowledged at the kill is indeterminate, then re-sent and acknowledged.
    # (A move in flight when the test stops the client is indeterminate too: not counted here.)
    infos = [r["seq"] for r in recs[: recs.index(resume)] if r["type"] == "info"]
    assert resume["resent"] == sorted(infos)
    acked = {r["seq"] for r in oks}
    assert set(infos) <= acked
    # After the transition the secondary continues the same game: no seq is missing.
    assert sorted(acked) == list(range(1, max(acked) + 1))
    assert all(r["server"] == "secondary" for r in oks if r["seq"] > last_on_a)

    journal = records_journal(tmp_path / "secondary.jsonl")
    resumes = [r for r in journal if r["event"] == "recv" and r["kind"] == "resume"]
    assert [(r["applied"], r["state_seq"]) for r in resumes] == [(True, last_on_a)]
    applied = [r["seq"] for r in journal if r["event"] == "recv" and r.get("applied") and r["kind"] == "move"]
    assert applied[0] == last_on_a + 1 and applied == sorted(set(applied))


def records_journal(path: Path) -> list[Record]:
    recs, problems = read_jsonl(path)
    assert not problems
    return recs


def relay(bases: list[str]) -> Callable[[ServerConnection], Any]:
    """A minimal in-place failover relay: one reader per socket, next backend when one dies."""

    async def handler(client_ws: ServerConnection) -> None:
        assert client_ws.request is not None
        path = client_ws.request.path
        current: list[ClientConnection] = []

        async def client_to_upstream() -> None:
            async for msg in client_ws:
                if current:
                    # A frame for a dead upstream is lost, as in a real crash; the client resends.
                    with contextlib.suppress(ConnectionClosed):
                        await current[-1].send(msg)

        async def upstream_to_client() -> None:
            for base in bases:
                try:
                    up = await connect(base + path, proxy=None, open_timeout=2)
                except OSError:
                    continue
                current.append(up)
                with contextlib.suppress(ConnectionClosed):
                    async for msg in up:
                        await client_ws.send(msg)
            await client_ws.close(1013, "no backend left")

        tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for up in current:
                await up.close()

    return handler


async def test_server_transition_inside_one_connection(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    primary, url_a = start_backend_url(spawn, "primary", tmp_path / "primary.jsonl")
    _, url_b = start_backend_url(spawn, "secondary", tmp_path / "secondary.jsonl")
    hist = tmp_path / "h.jsonl"
    async with serve(relay([url_a, url_b]), "127.0.0.1", 0, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        with HistoryWriter(hist, "test") as writer:
            client = GameClient(f"ws://127.0.0.1:{port}", "c007", recorder=writer, rate=100)
            async with playing(client):
                await until(lambda: len(client.book.acked) >= 10, "10 acks from primary")
                primary.signal(signal.SIGKILL)
                await until(lambda: client.server == "secondary", "a welcome from secondary")
                on_b = len(client.book.acked)
                await until(lambda: len(client.book.acked) >= on_b + 10, "10 acks from secondary")

    recs = records(hist, "c007")
    oks = check_client_history(recs, "c007")
    # One connection throughout: the transition happened inside it.
    assert [r["conn"] for r in recs if r["f"] == "conn_open"] == [1]
    assert [(r["initiator"], r["code"]) for r in recs if r["f"] == "conn_close"] == [("client", 1000)]
    assert [w["server"] for w in recs if w["f"] == "welcome"] == ["primary", "secondary"]
    resume = next(r for r in recs if r["f"] == "resume")
    last_on_a = max(r["state"]["seq"] for r in oks if r["server"] == "primary")
    assert resume["conn"] == 1 and resume["state"]["seq"] == last_on_a
    resent = [r for r in recs if r["type"] == "invoke" and r["attempt"] > 1]
    assert [r["seq"] for r in resent] == resume["resent"]
    acked = sorted(r["seq"] for r in oks)
    assert acked == list(range(1, acked[-1] + 1))
    journal = records_journal(tmp_path / "secondary.jsonl")
    assert [(r["applied"], r["state_seq"]) for r in journal if r["event"] == "recv" and r["kind"] == "resume"] == [
        (True, last_on_a)
    ]


async def test_client_comes_back_after_a_refusal(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    # Nothing listens at first: connects fail and are recorded, then the backend appears.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hist = tmp_path / "h.jsonl"
    with HistoryWriter(hist, "test") as writer:
        client = GameClient(
            f"ws://127.0.0.1:{port}",
            "c002",
            recorder=writer,
            rate=100,
            reconnect_policy=ReconnectPolicy(base_s=0.02, cap_s=0.1),
        )
        async with playing(client):
            await until(lambda: client.conns >= 3, "three failed connects")
            proc = spawn("-m", "harness.backend", "--port", str(port), "--instance-name", "primary")
            proc.wait_line("listening on")
            await until(lambda: len(client.book.acked) >= 3, "acks once the backend is up")
    recs = records(hist, "c002")
    check_client_history(recs, "c002")
    fails = [r for r in recs if r["f"] == "conn_fail"]
    assert len(fails) >= 2 and all("ConnectionRefused" in r["error"] for r in fails)
    opened = next(r for r in recs if r["f"] == "conn_open")
    assert opened["conn"] == len(fails) + 1  # every attempt has its own number


def test_play_url() -> None:
    assert play_url("ws://h:1", "c1") == "ws://h:1/play?client=c1"
    assert play_url("ws://h:1/", "c1") == "ws://h:1/play?client=c1"
    assert play_url("ws://h:1/play", "c1") == "ws://h:1/play?client=c1"
    assert play_url("ws://h:1/game?room=2&client=x", "c1") == "ws://h:1/game?room=2&client=c1"


# -- CLIs ------------------------------------------------------------------------------------


async def test_client_cli_plays_n_moves(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    _, url = start_backend_url(spawn, "primary", tmp_path / "primary.jsonl")
    hist = tmp_path / "cli.jsonl"
    proc = spawn(
        "-m",
        "harness.client",
        "--url",
        url,
        "--client-id",
        "c042",
        "--rate",
        "100",
        "--moves",
        "8",
        "--history",
        str(hist),
    )
    assert await proc.await_exit(DEADLINE) == 0
    proc.cleanup()
    text = "\n".join(proc.out)
    assert "welcome from primary" in text and "ack 8 from primary" in text
    assert "stopped after 8 acked of 8 sent" in text
    oks = check_client_history(records(hist, "c042"), "c042")
    assert len(oks) == 8


async def test_swarm_of_200_ready_then_sigterm_stops_every_client(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    journal = tmp_path / "primary.jsonl"
    _, url = start_backend_url(spawn, "primary", journal)
    hist_dir = tmp_path / "history"
    n = 200
    swarm = spawn(
        "-m",
        "harness.swarm",
        "--url",
        f"{url}/play",
        "--clients",
        str(n),
        "--prefix",
        "c",
        "--id-offset",
        "5",
        "--rate",
        "4",
        "--history-dir",
        str(hist_dir),
        "--ready-timeout",
        "20",
        "--connect-spread",
        "0.5",
    )
    await asyncio.to_thread(swarm.wait_line, rf"^READY {n}$", 25.0)
    # 200 clients are two worker processes of 100 (CLIENTS_PER_PROCESS), one history file each;
    # the coordinating process itself plays no client and writes none.
    files = sorted(hist_dir.glob("clients-c-*.jsonl"))
    assert len(files) == n // CLIENTS_PER_PROCESS
    assert f"clients-c-{swarm.popen.pid}.jsonl" not in [f.name for f in files]
    ids = {f"c{i:03d}" for i in range(5, 5 + n)}
    starts = [r for f in files for r in records(f) if r["f"] == "swarm_start"]
    assert [len(r["clients"]) for r in starts] == [CLIENTS_PER_PROCESS] * len(files)
    assert set().union(*(r["clients"] for r in starts)) == ids
    assert all(r["slowness"] >= 1.0 for r in starts)

    def all_records() -> list[Record]:
        return [r for f in files for r in records(f)]

    def every_client_acked() -> bool:
        return {r["process"] for r in all_records() if r["type"] == "ok"} == ids

    await until(every_client_acked, "an ack for every client", within=15.0)
    swarm.signal(signal.SIGTERM)
    assert await swarm.await_exit(15.0) == 0
    swarm.cleanup()
    assert re.fullmatch(rf"STOPPED {n} acked=\d+ sent=\d+ hung=0", swarm.out[-1])

    recs = all_records()
    by_client: dict[str, list[Record]] = {}
    for r in recs:
        if not r["process"].startswith("swarm-"):  # the workers' own swarm_start / loop_lag
            by_client.setdefault(r["process"], []).append(r)
    assert set(by_client) == ids
    for cid, crecs in by_client.items():
        check_client_history(crecs, cid)
        assert crecs[-1]["hung"] is False
        closes = [(r["code"], r["initiator"]) for r in crecs if r["f"] == "conn_close"]
        assert closes == [(1000, "client")], (cid, closes)
    jrecs = records_journal(journal)
    assert sum(r["event"] == "open" for r in jrecs) == n
    assert [r["code"] for r in jrecs if r["event"] == "close"] == [1000] * n


async def test_swarm_not_ready_exits_3(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    swarm = spawn(
        "-m",
        "harness.swarm",
        "--url",
        f"ws://127.0.0.1:{port}",
        "--clients",
        "3",
        "--history-dir",
        str(tmp_path),
        "--ready-timeout",
        "0.5",
    )
    assert await swarm.await_exit(DEADLINE) == 3
    swarm.cleanup()
    assert "NOT READY 0/3" in swarm.out
    recs = records(tmp_path / f"clients-c-{swarm.popen.pid}.jsonl")
    stopped = {r["process"]: r["hung"] for r in recs if r["f"] == "stopped"}
    assert stopped == {"c000": False, "c001": False, "c002": False}


async def test_swarm_duration_ends_the_run(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    _, url = start_backend_url(spawn, "primary", tmp_path / "primary.jsonl")
    swarm = spawn("-m", "harness.swarm", "--url", url, "--clients", "2", "--prefix", "d", "--duration", "0.3")
    assert await swarm.await_exit(DEADLINE) == 0
    swarm.cleanup()
    assert swarm.out[0] == "READY 2" and swarm.out[-1].startswith("STOPPED 2 ")


def test_a_swarm_of_workers_may_take_their_start_margin_to_say_ready() -> None:
    from harness.swarm import CLIENTS_PER_PROCESS, WORKER_START_MARGIN_S, says_ready_within_s

    assert says_ready_within_s(CLIENTS_PER_PROCESS, 15.0) == 15.0
    assert says_ready_within_s(CLIENTS_PER_PROCESS + 1, 15.0) == 15.0 + WORKER_START_MARGIN_S


def test_a_big_swarm_gives_its_clients_time_for_a_burst_of_closing_handshakes() -> None:
    from harness.swarm import CLOSE_BASE_CLIENTS, CLOSE_TIMEOUT_S, close_timeout_s, stops_within_s, swarm_argv

    assert close_timeout_s(4) == close_timeout_s(CLOSE_BASE_CLIENTS) == CLOSE_TIMEOUT_S
    # mass_failover: 2,000 sessions closed at once took the reference 5.2 s; each client waits 11 s.
    assert abs(close_timeout_s(2000) - 11.0) < 1e-9
    assert stops_within_s(2000) > close_timeout_s(2000)
    argv = swarm_argv("ws://127.0.0.1:1/play", 2000, history_dir=Path("h"))
    assert argv[argv.index("--close-timeout") + 1] == "11.0"
