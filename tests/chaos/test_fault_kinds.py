"""Each fault kind does what it says, on real processes and real sockets (issue 4 acceptance).

A single game client talks through the cluster (client -> lb proxy -> balancer -> backend proxy ->
backend); the nemesis applies one fault, and the test observes its effect from the client's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from harness.analysis import fault_evidence_of
from harness.cluster import Cluster, ClusterSpec
from harness.faults import Fault, fault
from harness.faults.proxy_ext import NO_COUNTERS, ExtensionMissing, toxic_evidence
from harness.game import move_for
from harness.history import HistoryWriter, read_jsonl
from harness.nemesis import Nemesis
from harness.ports import allocate_port
from harness.procs import ReadyCheck, Supervisor
from harness.scenario import Keepalive, Limits
from harness.waiting import wait_until_async

pytestmark = pytest.mark.chaos

#: How long one read waits before the bounded wait around it looks at its condition again.
READ_SLICE_S = 0.1


class Player:
    """A minimal game client with one reader: sends a move, waits for its ack with a deadline."""

    def __init__(self, ws: ClientConnection, client_id: str) -> None:
        self.ws = ws
        self.client_id = client_id
        self.seq = 0
        self.welcomes: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {"seq": 0, "x": 0, "y": 0}

    async def next_message(self, timeout: float) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        msg = json.loads(raw)
        if msg.get("type") == "welcome":
            self.welcomes.append(msg)
            if len(self.welcomes) > 1:
                # A new server knows nothing of this game: hand it our last acknowledged state.
                await self.ws.send(json.dumps({"type": "resume", "client": self.client_id, "state": self.state}))
        elif msg.get("type") == "ack":
            self.state = msg["state"]
        return dict(msg)

    async def send_move(self) -> None:
        self.seq = self.state["seq"] + 1
        dx, dy = move_for(self.seq)
        move = {"type": "move", "client": self.client_id, "seq": self.seq, "dx": dx, "dy": dy}
        await self.ws.send(json.dumps(move))

    async def move(self, timeout: float = 5.0) -> dict[str, Any]:
        """Sends a move and returns its ack; TimeoutError when none comes within ``timeout``."""
        await self.send_move()
        return await self.ack_of(self.seq, timeout)

    async def ack_of(self, seq: int, timeout: float) -> dict[str, Any]:
        acks: list[dict[str, Any]] = []

        async def acked() -> bool:
            with contextlib.suppress(TimeoutError):
                msg = await self.next_message(READ_SLICE_S)
                if msg.get("type") == "ack" and msg.get("seq") == seq:
                    acks.append(msg)
            return bool(acks)

        await wait_until_async(acked, timeout=timeout, interval=0, what=f"the ack of move {seq}")
        return acks[0]

    def welcomed_by(self, server: str) -> bool:
        return bool(self.welcomes and self.welcomes[-1]["server"] == server)


@contextlib.asynccontextmanager
async def joined(cluster: Cluster, client_id: str = "p1", close_timeout: float = 10.0) -> AsyncIterator[Player]:
    """A player welcomed by the primary, with one move acknowledged."""
    # No compression: the bandwidth test reasons about bytes on the wire.
    url = f"{cluster.lb_url}/play?client={client_id}"
    async with connect(url, proxy=None, open_timeout=5, compression=None, close_timeout=close_timeout) as ws:
        p = Player(ws, client_id)
        welcome = await p.next_message(5.0)
        assert welcome["type"] == "welcome" and welcome["server"] == "primary"
        await p.move()
        yield p


@pytest.fixture
async def player(cluster: Cluster) -> AsyncIterator[Player]:
    async with joined(cluster) as p:
        yield p


@pytest.fixture
def nemesis(cluster: Cluster) -> Nemesis:
    return Nemesis(cluster)


async def wait_for_welcome_from(p: Player, server: str, timeout: float) -> float:
    """Keeps playing until a welcome from ``server`` arrives; returns how long that took."""
    t0 = time.monotonic()

    async def welcomed() -> bool:
        if not p.welcomed_by(server):
            with contextlib.suppress(TimeoutError):
                await p.next_message(READ_SLICE_S)
        return p.welcomed_by(server)

    try:
        await wait_until_async(welcomed, timeout=timeout, interval=0, what=f"a welcome from {server}")
    except TimeoutError:
        raise AssertionError(f"no welcome from {server} within {timeout}s (welcomes: {p.welcomes})") from None
    return time.monotonic() - t0


async def test_kill_closes_the_upstream_and_the_client_moves(
    cluster: Cluster, player: Player, nemesis: Nemesis
) -> None:
    nemesis.apply(fault("kill", "primary"))
    assert not cluster.process("primary").running
    await wait_for_welcome_from(player, "secondary", timeout=5.0)
    ack = await player.move()
    assert ack["server"] == "secondary"


async def test_terminate_primary_closes_with_1001_and_client_moves(player: Player, nemesis: Nemesis) -> None:
    nemesis.apply(fault("terminate", "primary"))
    await wait_for_welcome_from(player, "secondary", timeout=5.0)


async def test_partition_stalls_traffic_until_keepalive_notices(
    cluster: Cluster, player: Player, nemesis: Nemesis
) -> None:
    nemesis.apply(fault("partition", "primary"))
    # The move is swallowed by the blackhole: no ack comes back while the partition holds...
    await player.send_move()
    with pytest.raises(TimeoutError):
        while True:
            msg = await player.next_message(0.3)
            assert msg.get("type") != "ack", f"an ack crossed a blackhole: {msg}"
    # ...until keepalive notices the dead upstream and the balancer fails over.
    await wait_for_welcome_from(player, "secondary", timeout=10.0)
    await player.move()


async def test_pause_is_noticed_by_keepalive(player: Player, nemesis: Nemesis) -> None:
    nemesis.apply(fault("pause", "primary"))
    await wait_for_welcome_from(player, "secondary", timeout=10.0)


async def test_latency_adds_delay(player: Player, nemesis: Nemesis) -> None:
    t0 = time.monotonic()
    await player.move()
    baseline = time.monotonic() - t0
    nemesis.apply(fault("latency", "lb", latency_ms=150, jitter_ms=0, stream="both"))
    t0 = time.monotonic()
    await player.move()
    delayed = time.monotonic() - t0
    # 150 ms each way on the client link: at least 300 ms more than without it.
    assert delayed >= baseline + 0.28, (baseline, delayed)


async def test_down_refuses_new_connections(cluster: Cluster, nemesis: Nemesis) -> None:
    active = nemesis.apply(fault("down", "lb"))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", cluster.ports["lb"]), timeout=2).close()
    nemesis.heal(active.fault_id)
    socket.create_connection(("127.0.0.1", cluster.ports["lb"]), timeout=2).close()


async def test_down_on_the_client_link_drops_live_connections(player: Player, nemesis: Nemesis) -> None:
    nemesis.apply(fault("down", "lb"))
    with pytest.raises(ConnectionClosed):
        await player.move(timeout=5.0)


async def test_bandwidth_slows_a_large_reply_stream(player: Player, nemesis: Nemesis) -> None:
    nemesis.apply(fault("bandwidth", "lb", rate_kbps=2, stream="downstream"))
    t0 = time.monotonic()
    for _ in range(20):  # ~20 acks of ~150 bytes: ~3 KB at 2 KB/s
        await player.move(timeout=10.0)
    assert time.monotonic() - t0 >= 0.8


async def test_reset_peer_tears_down_the_upstream(player: Player, nemesis: Nemesis) -> None:
    nemesis.apply(fault("reset_peer", "primary", timeout_ms=0, stream="upstream"))
    # The next move hits the toxic: the upstream is torn down and the balancer fails over.
    await player.send_move()
    await wait_for_welcome_from(player, "secondary", timeout=5.0)


async def test_slicer_fragments_but_frames_arrive_whole(player: Player, nemesis: Nemesis) -> None:
    nemesis.apply(fault("slicer", "lb", average_size=4, size_variation=2, delay_us=50, stream="both"))
    for _ in range(5):
        ack = await player.move()
        assert ack["client"] == "p1"


async def test_limit_data_cuts_the_upstream_after_n_bytes(player: Player, nemesis: Nemesis) -> None:
    nemesis.apply(fault("limit_data", "primary", bytes=600, stream="downstream"))

    async def moved_to_secondary() -> bool:
        if not player.welcomed_by("secondary"):
            with contextlib.suppress(TimeoutError):
                await player.move(timeout=1.0)
        return player.welcomed_by("secondary")

    try:
        await wait_until_async(moved_to_secondary, timeout=10, interval=0, what="a failover to secondary")
    except TimeoutError:
        raise AssertionError("limit_data never cut the primary's connection") from None


async def test_restart_brings_a_killed_backend_back_on_the_same_port(cluster: Cluster, nemesis: Nemesis) -> None:
    port = cluster.ports["primary"]
    active = nemesis.apply(fault("kill", "primary"))
    nemesis.heal(active.fault_id)
    assert cluster.process("primary").running
    socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- one_way_partition: a blackhole on one stream, the other flowing ---------------------------

#: Keepalive long enough that nothing notices a half-open link while a test watches it.
UNNOTICED = Keepalive(ping_interval_s=30.0, ping_timeout_s=30.0)
#: How long the primary's replies are held so that one is in flight when the upstream is cut.
HELD_S = 1.5
#: How long "no ack" is watched for; a healthy round trip here takes milliseconds.
SILENCE_S = 1.0


def primary_journaled(cluster: Cluster, event: str, kind: str, seq: int) -> bool:
    recs, _problems = read_jsonl(cluster.journal_path("primary"))
    return any(
        r["event"] == event and r.get("kind") == kind and r.get("seq") == seq and r.get("client") == "p1" for r in recs
    )


async def assert_no_ack(p: Player, seq: int) -> None:
    with pytest.raises(TimeoutError):
        await p.ack_of(seq, SILENCE_S)


async def resumes_on_secondary(p: Player) -> None:
    # Toxiproxy closes the connections of a timeout toxic when it is removed: the half-open link
    # lasts until the heal and ends there, and the balancer fails the player over to the secondary.
    await wait_for_welcome_from(p, "secondary", timeout=5.0)
    ack = await p.move()
    assert ack["server"] == "secondary"


async def only_keepalive_could_notice(cluster: Cluster) -> None:
    cluster.reconfigure(Limits(), UNNOTICED)
    assert cluster.wait_balancer_sees_backends_healthy(timeout=10.0)


async def test_one_way_partition_downstream_lets_moves_in_and_no_acks_out(cluster: Cluster, nemesis: Nemesis) -> None:
    await only_keepalive_could_notice(cluster)
    async with joined(cluster) as player:
        cut = nemesis.apply(fault("one_way_partition", "primary", stream="downstream"))
        await player.send_move()
        seq = player.seq
        # Upstream flows: the primary receives the move and answers it...
        await wait_until_async(
            lambda: primary_journaled(cluster, "send", "ack", seq), timeout=5.0, what=f"the primary to ack {seq}"
        )
        assert primary_journaled(cluster, "recv", "move", seq)
        # ...but downstream the answer is swallowed, and nothing closes: the link is half-open.
        await assert_no_ack(player, seq)
        assert len(player.welcomes) == 1, "something noticed a link that only a keepalive can"
        nemesis.heal(cut.fault_id)
        await resumes_on_secondary(player)


async def test_one_way_partition_upstream_lets_replies_out_and_no_moves_in(cluster: Cluster, nemesis: Nemesis) -> None:
    await only_keepalive_could_notice(cluster)
    async with joined(cluster) as player:
        held = nemesis.apply(fault("latency", "primary", latency_ms=int(HELD_S * 1000), stream="downstream"))
        sent = time.monotonic()
        await player.send_move()
        first = player.seq
        await wait_until_async(
            lambda: primary_journaled(cluster, "send", "ack", first), timeout=5.0, what=f"the primary to ack {first}"
        )
        cut = nemesis.apply(fault("one_way_partition", "primary", stream="upstream"))
        # The reply leaves the proxy HELD_S after the move was sent at the earliest, so it crosses
        # the link after the cut: downstream still flows.
        assert time.monotonic() - sent < HELD_S, "the cut came too late to show anything"
        ack = await player.ack_of(first, timeout=5.0)
        assert ack["server"] == "primary"
        # Upstream nothing passes: the next move never reaches the primary.
        await player.send_move()
        second = player.seq
        await assert_no_ack(player, second)
        assert not primary_journaled(cluster, "recv", "move", second)
        assert len(player.welcomes) == 1, "something noticed a link that only a keepalive can"
        nemesis.heal(held.fault_id)
        nemesis.heal(cut.fault_id)
        await resumes_on_secondary(player)


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
async def test_one_way_partition_is_noticed_by_keepalive(player: Player, nemesis: Nemesis, stream: str) -> None:
    nemesis.apply(fault("one_way_partition", "primary", stream=stream))
    await player.send_move()
    await wait_for_welcome_from(player, "secondary", timeout=10.0)
    await player.move()


# -- evidence that each fault landed ------------------------------------------------------------


class Recorded:
    """A nemesis that writes its history, and the records it wrote."""

    def __init__(self, cluster: Cluster, path: Path) -> None:
        self.path = path
        self.writer = HistoryWriter(path, "nemesis")
        self.nemesis = Nemesis(cluster, self.writer)

    def records(self, f: str | None = None, type_: str | None = None) -> list[dict[str, Any]]:
        recs, problems = read_jsonl(self.path)
        assert not problems, problems
        return [r for r in recs if (f is None or r["f"] == f) and (type_ is None or r["type"] == type_)]


@pytest.fixture
def recorded(cluster: Cluster, tmp_path: Path) -> Iterator[Recorded]:
    rec = Recorded(cluster, tmp_path / "nemesis.jsonl")
    yield rec
    rec.writer.close()


def aimed(kind: str, target: str, aim: dict[str, Any], **params: Any) -> Fault:
    return Fault.from_dict({"kind": kind, "target": target, "params": params, "aim": aim})


async def test_a_toxic_heal_records_what_each_toxic_did(player: Player, recorded: Recorded) -> None:
    active = recorded.nemesis.apply(fault("latency", "lb", latency_ms=20, stream="both"))
    await player.move()
    await player.move()
    recorded.nemesis.heal(active.fault_id)
    [heal] = recorded.records("heal", "ok")
    assert set(heal["evidence"]) == {f"{active.fault_id}_latency_upstream", f"{active.fault_id}_latency_downstream"}
    for counts in heal["evidence"].values():
        assert counts["connections"] == 1 and counts["bytes_delayed"] > 0, counts
    assert heal["evidence_reason"] is None
    [evidence] = fault_evidence_of(recorded.records())
    assert evidence.touched is True and evidence.reason.startswith("touched 2 connection(s): bytes_delayed ")


async def test_process_steps_record_pid_and_exit_status(cluster: Cluster, recorded: Recorded) -> None:
    for kind, params in (("kill", {}), ("terminate", {}), ("restart", {"graceful": False})):
        pid = cluster.process("primary").pid
        active = recorded.nemesis.apply(fault(kind, "primary", **params))
        if kind != "restart":
            recorded.nemesis.heal(active.fault_id)
        invoke = [r for r in recorded.records("apply", "invoke") if r["fault_id"] == active.fault_id]
        done = [r for r in recorded.records("apply", "ok") if r["fault_id"] == active.fault_id]
        assert [r["pid"] for r in invoke + done] == [pid, pid], kind
        assert isinstance(done[0]["exit_code"], int), (kind, done[0])
        started = done[0] if kind == "restart" else recorded.records("heal", "ok")[-1]
        assert started["started_pid"] == cluster.process("primary").pid != pid, kind
    assert [r["exit_code"] for r in recorded.records("apply", "ok")][0::2] == [-9, -9]  # kill; restart kills
    for evidence in fault_evidence_of(recorded.records()):
        assert evidence.touched is True and "exited with status" in evidence.reason, evidence


async def test_an_aimed_partition_holds_only_its_client(cluster: Cluster, recorded: Recorded) -> None:
    await only_keepalive_could_notice(cluster)  # the balancer's keepalive would end p2's held link
    async with joined(cluster, "p1") as spared, joined(cluster, "p2", close_timeout=1.0) as hit:
        cut = recorded.nemesis.apply(aimed("partition", "lb", {"clients": ["p2"]}))
        await hit.send_move()
        for _ in range(3):
            ack = await spared.move()
            assert ack["server"] == "primary"
        await assert_no_ack(hit, hit.seq)
        recorded.nemesis.heal(cut.fault_id)
        [heal] = recorded.records("heal", "ok")
        upstream = heal["evidence"][f"{cut.fault_id}_partition_upstream"]
        # p2's move was swallowed on its way in; nothing was sent back to p2 that could be.
        assert upstream["connections"] == 1 and upstream["bytes_dropped"] > 0, upstream
        assert heal["evidence"][f"{cut.fault_id}_partition_downstream"]["connections"] <= 1
        await spared.move()
    [evidence] = fault_evidence_of(recorded.records())
    assert evidence.touched is True and evidence.fault["aim"] == {"clients": ["p2"]}


async def test_a_step_aimed_at_nobody_is_recorded_as_touching_nothing(player: Player, recorded: Recorded) -> None:
    active = recorded.nemesis.apply(aimed("latency", "lb", {"clients": ["nobody"]}, latency_ms=50))
    await player.move()
    recorded.nemesis.heal(active.fault_id)
    [evidence] = fault_evidence_of(recorded.records())
    assert evidence.touched is False and "touched no connection" in evidence.reason


async def test_a_step_triggered_after_the_upgrade_hits_connections_once_upgraded(
    cluster: Cluster, recorded: Recorded
) -> None:
    later = Fault.from_dict({"kind": "latency", "target": "lb", "params": {"latency_ms": 150, "jitter_ms": 0},
                             "trigger": {"after": "upgrade"}})  # fmt: skip
    active = recorded.nemesis.apply(later)
    async with joined(cluster) as player:  # the upgrade itself crosses undelayed
        t0 = time.monotonic()
        await player.move()
        assert time.monotonic() - t0 >= 0.28  # 150 ms each way once upgraded
    recorded.nemesis.heal(active.fault_id)
    [evidence] = fault_evidence_of(recorded.records())
    assert evidence.touched is True and evidence.fault["trigger"] == {"after": "upgrade"}


# -- idle_timeout: a middlebox that forgets idle flows --------------------------------------------

IDLE_TIMEOUT_MS = 1500


async def test_idle_timeout_is_beaten_by_the_keepalive(player: Player, recorded: Recorded) -> None:
    active = recorded.nemesis.apply(fault("idle_timeout", "lb", timeout_ms=IDLE_TIMEOUT_MS))
    await asyncio.sleep(IDLE_TIMEOUT_MS / 1000 * 2)  # the idleness under test: only keepalives cross
    ack = await player.move()
    assert ack["server"] == "primary" and len(player.welcomes) == 1
    recorded.nemesis.heal(active.fault_id)
    [heal] = recorded.records("heal", "ok")
    assert all(counts["cuts"] == 0 for counts in heal["evidence"].values())


async def test_idle_timeout_silences_a_link_nothing_keeps_alive(cluster: Cluster, recorded: Recorded) -> None:
    await only_keepalive_could_notice(cluster)
    async with joined(cluster, close_timeout=1.0) as player:
        active = recorded.nemesis.apply(fault("idle_timeout", "lb", timeout_ms=300))
        await asyncio.sleep(0.6)  # the idleness under test: with a 30 s keepalive nothing crosses
        await player.send_move()
        await assert_no_ack(player, player.seq)  # no ack, no close: the flow is forgotten
        recorded.nemesis.heal(active.fault_id)
    [heal] = recorded.records("heal", "ok")
    assert sum(c["cuts"] for c in heal["evidence"].values()) == 1


# -- a Toxiproxy without the extensions (a stand-in for the Go server) ----------------------------


@pytest.fixture
def stock_toxiproxy(tmp_path: Path) -> Iterator[str]:
    port = allocate_port()
    with Supervisor(tmp_path / "stock") as sup:
        argv = [sys.executable, "-m", "harness.toxiproxy", "--port", str(port), "--no-extensions"]
        sup.spawn("stock-toxiproxy", argv, ready=ReadyCheck("127.0.0.1", port))
        yield f"http://127.0.0.1:{port}"


async def test_a_stock_toxiproxy_refuses_aimed_steps_and_reports_evidence_missing(
    stock_toxiproxy: str, tmp_path: Path
) -> None:
    cluster = Cluster(tmp_path / "cluster", ClusterSpec(toxiproxy_url=stock_toxiproxy))
    with cluster:
        rec = Recorded(cluster, tmp_path / "nemesis.jsonl")
        with pytest.raises(ExtensionMissing, match=r"a step aimed at clients p2 needs the embedded Toxiproxy's 'aim'"):
            rec.nemesis.apply(aimed("partition", "lb", {"clients": ["p2"]}))
        assert cluster.toxiproxy is not None and cluster.toxiproxy.toxics(cluster.proxy_name("lb")) == []
        triggered = {"kind": "latency", "target": "lb", "trigger": {"after": "upgrade"}}
        with pytest.raises(ExtensionMissing, match="a step triggered after the upgrade needs"):
            rec.nemesis.apply(Fault.from_dict(triggered))
        with pytest.raises(ExtensionMissing, match="an idle_timeout step needs"):
            rec.nemesis.apply(fault("idle_timeout", "lb"))
        active = rec.nemesis.apply(fault("latency", "lb", latency_ms=10))
        rec.nemesis.heal(active.fault_id)
        [heal] = rec.records("heal", "ok")
        assert (heal["evidence"], heal["evidence_reason"]) == (None, NO_COUNTERS)
        rec.writer.close()
    refused, refused_trigger, refused_idle, latency = fault_evidence_of(rec.records())
    for step in (refused, refused_trigger, refused_idle):
        assert step.touched is False and "not applied: ExtensionMissing" in step.reason
    assert (latency.touched, latency.reason) == (None, NO_COUNTERS)


async def test_drain_keeps_live_sessions_refuses_new_ones_and_records_its_evidence(
    cluster: Cluster, recorded: Recorded
) -> None:
    pid = cluster.balancer.pid
    drain_s = float(cluster.config["drain_timeout_s"])
    async with joined(cluster) as p:
        applying = asyncio.create_task(asyncio.to_thread(recorded.nemesis.apply, fault("drain", "balancer")))
        t0 = time.monotonic()

        async def draining() -> bool:
            status = await asyncio.to_thread(cluster.status)
            return bool(status and status.get("draining") is True)

        await wait_until_async(draining, timeout=5.0, what="/status draining")
        # A live session still plays during the drain: this move goes after it began, and its ack
        # comes before the close, which comes no sooner than the drain timeout (asserted below).
        await p.move()
        async with asyncio.timeout(drain_s + 10):
            await p.ws.wait_closed()
        closed_after = time.monotonic() - t0
        assert p.ws.close_code == 1001, (p.ws.close_code, p.ws.close_reason)
        assert closed_after >= drain_s - 0.05, f"closed {closed_after:.2f}s into a {drain_s}s drain"
        await applying
    [done] = recorded.records("apply", "ok")
    assert done["pid"] == pid and done["drain_declared"] is True and done["signal"] == "SIGHUP", done
    assert done["draining_seen"] is True and done["new_connection"] == "refused", done
    assert done["exit_code"] == 0 and done["killed"] is False, done
    assert done["exited_at"] - done["signalled_at"] < drain_s + 4.5, done
    assert done["started_pid"] == cluster.balancer.pid != pid, done
    [evidence] = fault_evidence_of(recorded.records())
    assert evidence.touched is True and evidence.reason == f"pid {pid} exited with status 0"
    async with joined(cluster, "p2"):
        pass  # the new process relays


async def test_drain_of_a_build_that_declares_none_is_a_graceful_restart(tmp_path: Path) -> None:
    from tests.selftest.mutants import NO_DRAIN_CMD

    with Cluster(tmp_path / "cluster", ClusterSpec(balancer_cmd=NO_DRAIN_CMD)) as cluster:
        rec = Recorded(cluster, tmp_path / "nemesis.jsonl")
        pid = cluster.balancer.pid
        async with joined(cluster) as p:
            await asyncio.to_thread(rec.nemesis.apply, fault("drain", "balancer"))
            async with asyncio.timeout(10):
                await p.ws.wait_closed()
            assert p.ws.close_code == 1001
        rec.writer.close()
        [done] = rec.records("apply", "ok")
        assert done["drain_declared"] is False and done["signal"] == "SIGTERM" and done["exit_code"] == 0, done
        assert done["started_pid"] == cluster.balancer.pid != pid
        async with joined(cluster, "p2"):
            pass


# -- upgrade faults: a backend that refuses, stalls or slows the opening handshake ---------------


async def first_welcome(cluster: Cluster, client_id: str, timeout: float) -> tuple[dict[str, Any], float]:
    """A new client's first welcome, how long it took from the connect, and one move played."""
    t0 = time.monotonic()
    url = f"{cluster.lb_url}/play?client={client_id}"
    async with connect(url, proxy=None, open_timeout=5, compression=None, close_timeout=1.0) as ws:
        p = Player(ws, client_id)
        welcome = await p.next_message(timeout)
        took = time.monotonic() - t0
        assert welcome["type"] == "welcome", welcome
        ack = await p.move()
        assert ack["server"] == welcome["server"]
    return welcome, took


def upgrade_counts(recorded: Recorded) -> dict[str, int]:
    [heal] = recorded.records("heal", "ok")
    [counts] = heal["evidence"].values()  # one toxic, on the request stream
    [evidence] = fault_evidence_of(recorded.records())
    assert evidence.touched is True, evidence
    return dict(counts)


@pytest.mark.parametrize("status", [500, 503])
async def test_a_refused_upgrade_moves_a_new_client_at_once_and_spares_a_live_one(
    cluster: Cluster, player: Player, recorded: Recorded, status: int
) -> None:
    active = recorded.nemesis.apply(fault("backend_upgrade_refused", "primary", status=status))
    welcome, took = await first_welcome(cluster, "p2", timeout=5.0)
    assert welcome["server"] == "secondary" and took < 2.0, (welcome, took)
    ack = await player.move()  # the session upgraded before the fault never notices it
    assert ack["server"] == "primary" and len(player.welcomes) == 1
    recorded.nemesis.heal(active.fault_id)
    counts = upgrade_counts(recorded)
    # Each handshake met (the new session's, and any health probe's) was answered and closed.
    assert counts["connections"] >= 1 and counts["cuts"] == counts["connections"], counts
    assert counts["bytes_dropped"] > 0 and counts["bytes_delayed"] == 0, counts
    records, _ = read_jsonl(cluster.journal_path("primary"))
    assert not [r for r in records if r["event"] == "open" and r.get("client") == "p2"]  # it never got the request


async def test_a_stalled_upgrade_moves_a_new_client_at_the_open_timeout(cluster: Cluster, recorded: Recorded) -> None:
    cluster.reconfigure(Limits(open_timeout_s=1.0), cluster.spec.keepalive)
    assert cluster.wait_balancer_sees_backends_healthy(timeout=10.0)
    active = recorded.nemesis.apply(fault("backend_upgrade_stalled", "primary"))
    welcome, took = await first_welcome(cluster, "p2", timeout=6.0)
    # The balancer waited its 1 s open timeout on the primary, then moved on.
    assert welcome["server"] == "secondary" and 1.0 <= took < 4.0, (welcome, took)
    recorded.nemesis.heal(active.fault_id)
    counts = upgrade_counts(recorded)
    assert counts["connections"] >= 1 and counts["bytes_dropped"] > 0 and counts["cuts"] == 0, counts


async def test_a_slow_upgrade_is_waited_out(cluster: Cluster, recorded: Recorded) -> None:
    active = recorded.nemesis.apply(fault("backend_upgrade_slow", "primary", delay_ms=700))
    welcome, took = await first_welcome(cluster, "p2", timeout=5.0)
    assert welcome["server"] == "primary" and took >= 0.7, (welcome, took)  # inside the 10 s open timeout
    recorded.nemesis.heal(active.fault_id)
    counts = upgrade_counts(recorded)
    assert counts["connections"] >= 1 and counts["bytes_delayed"] > 0 and counts["cuts"] == 0, counts


async def test_a_stock_toxiproxy_refuses_upgrade_steps(stock_toxiproxy: str, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", ClusterSpec(toxiproxy_url=stock_toxiproxy))
    with cluster:
        rec = Recorded(cluster, tmp_path / "nemesis.jsonl")
        for kind in ("backend_upgrade_refused", "backend_upgrade_stalled", "backend_upgrade_slow"):
            with pytest.raises(ExtensionMissing, match=f"a {kind} step needs the embedded Toxiproxy's 'ws_upgrade'"):
                rec.nemesis.apply(fault(kind, "primary"))
        assert cluster.toxiproxy is not None and cluster.toxiproxy.toxics(cluster.proxy_name("primary")) == []
        rec.writer.close()
    for step in fault_evidence_of(rec.records()):
        assert step.touched is False and "not applied: ExtensionMissing" in step.reason


# -- triggered after N frames ----------------------------------------------------------------------


async def test_a_step_triggered_after_n_frames_acts_from_the_next_frame_on(
    cluster: Cluster, recorded: Recorded
) -> None:
    later = Fault.from_dict({"kind": "latency", "target": "lb", "params": {"latency_ms": 150, "jitter_ms": 0},
                             "trigger": {"after": "frames", "frames": 3}})  # fmt: skip
    active = recorded.nemesis.apply(later)
    assert cluster.toxiproxy is not None
    proxy = cluster.proxy_name("lb")
    async with joined(cluster) as player:  # upstream: move 1; downstream: the welcome and ack 1
        await player.move()  # upstream: move 2; downstream: ack 2, the third data frame
        for name in active.applied.toxics:  # not one data frame was delayed yet, either way
            counts = toxic_evidence(cluster.toxiproxy.url, proxy, name)
            assert counts is not None and {k: counts[k] for k in NOTHING_YET} == NOTHING_YET, counts
        await player.move()  # move 3 is the upstream's third: only its ack is delayed
        t0 = time.monotonic()
        await player.move()
        assert time.monotonic() - t0 >= 0.28  # 150 ms each way from the fourth frame on
    recorded.nemesis.heal(active.fault_id)
    [evidence] = fault_evidence_of(recorded.records())
    assert evidence.touched is True and evidence.fault["trigger"] == {"after": "frames", "frames": 3}
    assert evidence.counts is not None and all(c["connections"] == 1 for c in evidence.counts.values())


NOTHING_YET = {"connections": 0, "bytes_delayed": 0, "bytes_dropped": 0, "bytes_cut": 0, "cuts": 0}


async def test_a_stock_toxiproxy_refuses_a_step_triggered_after_frames(stock_toxiproxy: str, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", ClusterSpec(toxiproxy_url=stock_toxiproxy))
    with cluster:
        rec = Recorded(cluster, tmp_path / "nemesis.jsonl")
        triggered = {"kind": "reset_peer", "target": "lb", "trigger": {"after": "frames", "frames": 2}}
        with pytest.raises(ExtensionMissing, match=r"a step triggered after 2 data frame\(s\) needs the embedded"):
            rec.nemesis.apply(Fault.from_dict(triggered))
        assert cluster.toxiproxy is not None and cluster.toxiproxy.toxics(cluster.proxy_name("lb")) == []
        rec.writer.close()


# -- frame_close and frame_delay --------------------------------------------------------------------


async def test_frame_close_from_the_primary_going_away_is_a_failover(player: Player, recorded: Recorded) -> None:
    active = recorded.nemesis.apply(fault("frame_close", "primary", code=1001))
    await player.send_move()  # its ack is replaced by the close frame
    await wait_for_welcome_from(player, "secondary", timeout=5.0)
    ack = await player.move()
    assert ack["server"] == "secondary"
    recorded.nemesis.heal(active.fault_id)
    [evidence] = fault_evidence_of(recorded.records())
    assert evidence.touched is True, evidence


async def test_frame_close_on_the_client_link_reaches_the_client_with_its_code(
    player: Player, recorded: Recorded
) -> None:
    active = recorded.nemesis.apply(fault("frame_close", "lb", code=4000))
    await player.send_move()
    with pytest.raises(ConnectionClosed) as closed:
        await player.ack_of(player.seq, timeout=5.0)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    assert closed.value.rcvd.reason == f"wschaos {active.fault_id}_frame_close_downstream"
    recorded.nemesis.heal(active.fault_id)


async def test_frame_delay_holds_exactly_one_frame(player: Player, recorded: Recorded) -> None:
    active = recorded.nemesis.apply(fault("frame_delay", "lb", delay_ms=300, nth=1, stream="upstream"))
    t0 = time.monotonic()
    await player.move()
    assert time.monotonic() - t0 >= 0.29
    held_seq = player.seq
    await player.move()  # the next frames pass: only the first one was held
    recorded.nemesis.heal(active.fault_id)
    [heal] = recorded.records("heal", "ok")
    counts = heal["evidence"][f"{active.fault_id}_frame_delay_upstream"]
    dx, dy = move_for(held_seq)
    sent = json.dumps({"type": "move", "client": player.client_id, "seq": held_seq, "dx": dx, "dy": dy})
    # One masked text frame of that move (2 header bytes, 4 of mask: it is under 126 bytes).
    assert counts["connections"] == 1 and counts["bytes_delayed"] == 2 + 4 + len(sent), counts


# -- frame_drop and frame_duplicate (uncompressed links: the player offers no deflate) ----------


async def message_where(p: Player, wanted: Any, timeout: float, what: str) -> dict[str, Any]:
    """The first message ``wanted(msg)`` accepts, read with a deadline."""
    found: list[dict[str, Any]] = []

    async def seen() -> bool:
        with contextlib.suppress(TimeoutError):
            msg = await p.next_message(READ_SLICE_S)
            if wanted(msg):
                found.append(msg)
        return bool(found)

    await wait_until_async(seen, timeout=timeout, interval=0, what=what)
    return found[0]


def move_json(p: Player, seq: int) -> str:
    dx, dy = move_for(seq)
    return json.dumps({"type": "move", "client": p.client_id, "seq": seq, "dx": dx, "dy": dy})


def primary_recvs(cluster: Cluster, seq: int) -> int:
    recs, _problems = read_jsonl(cluster.journal_path("primary"))
    return sum(
        1
        for r in recs
        if r["event"] == "recv" and r.get("kind") == "move" and r.get("seq") == seq and r.get("client") == "p1"
    )


@pytest.mark.parametrize("target", ["lb", "primary"])
async def test_frame_drop_loses_one_move_and_the_backend_answers_the_next_with_a_gap(
    cluster: Cluster, player: Player, recorded: Recorded, target: str
) -> None:
    active = recorded.nemesis.apply(fault("frame_drop", target, nth=1, stream="upstream"))
    lost = player.state["seq"] + 1
    await player.ws.send(move_json(player, lost))  # dropped on the way
    await player.ws.send(move_json(player, lost + 1))
    gap = await message_where(player, lambda m: m.get("type") == "gap", 5.0, "the gap after the lost move")
    assert (gap["seq"], gap["expected"], gap["server"]) == (lost + 1, lost, "primary"), gap
    assert primary_recvs(cluster, lost) == 0
    # Re-sent from the gap, the game goes on from where it was: nothing else was lost.
    for seq in (lost, lost + 1):
        await player.ws.send(move_json(player, seq))
    for seq in (lost, lost + 1):
        ack = await player.ack_of(seq, timeout=5.0)
        assert ack["dup"] is False and ack["state"]["seq"] == seq, ack
    assert player.welcomes[-1]["server"] == "primary" and len(player.welcomes) == 1  # no failover
    recorded.nemesis.heal(active.fault_id)
    [heal] = recorded.records("heal", "ok")
    counts = heal["evidence"][f"{active.fault_id}_frame_drop_upstream"]
    # One masked text frame of that move (2 header bytes, 4 of mask: it is under 126 bytes).
    assert counts["connections"] == 1 and counts["bytes_dropped"] == 2 + 4 + len(move_json(player, lost)), counts


@pytest.mark.parametrize("target", ["lb", "primary"])
async def test_frame_duplicate_repeats_one_move_which_the_backend_acknowledges_as_a_dup(
    cluster: Cluster, player: Player, recorded: Recorded, target: str
) -> None:
    active = recorded.nemesis.apply(fault("frame_duplicate", target, nth=1, stream="upstream"))
    first = await player.move()
    assert first["dup"] is False
    repeat = await message_where(player, lambda m: m.get("type") == "ack", 5.0, "the ack of the copy")
    assert (repeat["seq"], repeat["dup"], repeat["state"]) == (first["seq"], True, first["state"]), repeat
    ack = await player.move()  # the next frames pass once: only the first one was repeated
    assert ack["dup"] is False and ack["state"]["seq"] == first["seq"] + 1
    with pytest.raises(TimeoutError):
        await message_where(player, lambda m: True, SILENCE_S, "anything more")
    assert primary_recvs(cluster, first["seq"]) == 2 and primary_recvs(cluster, ack["seq"]) == 1
    recorded.nemesis.heal(active.fault_id)
    [evidence] = fault_evidence_of(recorded.records())
    assert evidence.touched is True and evidence.counts is not None, evidence
    assert evidence.counts[f"{active.fault_id}_frame_duplicate_upstream"]["connections"] == 1


def extra_move_deliveries(cluster: Cluster) -> int:
    """Move frames the primary received more often than once, summed over (client, seq)."""
    recs, _problems = read_jsonl(cluster.journal_path("primary"))
    seen: dict[tuple[Any, Any], int] = {}
    for r in recs:
        if r["event"] == "recv" and r.get("kind") == "move":
            key = (r.get("client"), r.get("seq"))
            seen[key] = seen.get(key, 0) + 1
    return sum(n - 1 for n in seen.values())


#: Apply/heal rounds while clients keep opening connections.
CHURN_ROUNDS = 8


async def test_a_heal_counts_every_frame_its_toxic_repeated_up_to_its_removal(
    cluster: Cluster, recorded: Recorded
) -> None:
    # Clients keep opening connections, each playing two moves, while a frame_duplicate step (the
    # first frame of each connection, toward the balancer) is applied and healed over and over,
    # the heal in a thread so that frames keep coming while it runs. Every frame the toxic repeated
    # reaches the primary twice; the evidence must count each of them, also one repeated while the
    # heal was under way (counters read in one request and the toxic removed in the next missed it).
    moves = [0]
    stop = asyncio.Event()

    async def churn(client: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            async with joined(cluster, f"{client}-{n}", close_timeout=2.0) as p:
                moves[0] += 1
                await p.move()
                moves[0] += 1

    async with asyncio.TaskGroup() as tg:
        for k in range(4):
            tg.create_task(churn(f"churn{k}"))
        try:
            for _ in range(CHURN_ROUNDS):
                active = recorded.nemesis.apply(fault("frame_duplicate", "lb", nth=1, stream="upstream"))
                since = moves[0]
                await wait_until_async(
                    lambda since=since: moves[0] >= since + 4, timeout=10.0, what="moves under the fault"
                )
                await asyncio.to_thread(recorded.nemesis.heal, active.fault_id)
        finally:
            stop.set()
    counted = sum(
        counts["connections"]
        for heal in recorded.records("heal", "ok")
        for name, counts in heal["evidence"].items()
        if name.endswith("_upstream")
    )
    assert counted >= CHURN_ROUNDS, counted  # every step landed
    try:
        await wait_until_async(
            lambda: extra_move_deliveries(cluster) == counted, timeout=5.0, what="every repeated frame journaled"
        )
    except TimeoutError:
        raise AssertionError(
            f"the primary received {extra_move_deliveries(cluster)} repeated move(s); the heals counted {counted}"
        ) from None
