"""Each fault kind does what it says, on real processes and real sockets (issue 4 acceptance).

A single game client talks through the cluster (client -> lb proxy -> balancer -> backend proxy ->
backend); the nemesis applies one fault, and the test observes its effect from the client's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from harness.cluster import Cluster
from harness.faults import fault
from harness.game import move_for
from harness.nemesis import Nemesis
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
        acks: list[dict[str, Any]] = []

        async def acked() -> bool:
            with contextlib.suppress(TimeoutError):
                msg = await self.next_message(READ_SLICE_S)
                if msg.get("type") == "ack" and msg.get("seq") == self.seq:
                    acks.append(msg)
            return bool(acks)

        await wait_until_async(acked, timeout=timeout, interval=0, what=f"the ack of move {self.seq}")
        return acks[0]

    def welcomed_by(self, server: str) -> bool:
        return bool(self.welcomes and self.welcomes[-1]["server"] == server)


@pytest.fixture
async def player(cluster: Cluster) -> AsyncIterator[Player]:
    # No compression: the bandwidth test reasons about bytes on the wire.
    async with connect(f"{cluster.lb_url}/play?client=p1", proxy=None, open_timeout=5, compression=None) as ws:
        p = Player(ws, "p1")
        welcome = await p.next_message(5.0)
        assert welcome["type"] == "welcome" and welcome["server"] == "primary"
        await p.move()
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
