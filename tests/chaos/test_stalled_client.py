"""A client process stalled past the balancer's keepalive: it is closed with 1011, or records the
1006 its own write caused after the stall (docs/verdicts.md "A 1006 after the client's own stall").

The swarm is SIGSTOPped until the balancer has closed every one of its sessions with 1011, then
resumed. Each client must record either the 1011 "keepalive ping timeout" or a 1006 with no close
frame of its own and an EPIPE/ECONNRESET cause, which the checkers excuse as the same keepalive
close; never anything else. Which of the two a client records depends on whether its reader or its
sender runs first after the stall (measured 1 to 19 of 20 as 1006); a loopback capture showed the
1011 close frame delivered to every client socket (docs/verdicts.md).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.analysis import is_close_lost_to_own_write, is_keepalive_close
from harness.cluster import Cluster
from harness.history import read_jsonl
from harness.plugin import Swarm
from harness.waiting import wait_until

pytestmark = pytest.mark.chaos

CLIENTS = 20


def _session_closes(cluster: Cluster) -> Counter[int]:
    codes: Counter[int] = Counter()
    for line in (cluster.logs / "balancer.stdout").read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "session_close":
            codes[event.get("code")] += 1
    return codes


def _closes(history_dir: Path) -> list[dict[str, object]]:
    found = []
    for path in history_dir.glob("*.jsonl"):
        records, _ = read_jsonl(path)
        # The first connection's close: the one the stall ended (a client reconnects afterwards,
        # and the test's stop closes that one with 1000).
        found += [r for r in records if r.get("f") == "conn_close" and r.get("conn") == 1]
    return found


def test_a_stalled_client_gets_the_keepalive_close(cluster: Cluster, clients: Callable[..., Swarm]) -> None:
    swarm = clients(CLIENTS, rate_hz=10.0)
    swarm.proc.pause()
    try:
        # The balancer's keepalive (0.5 s + 0.5 s) gives up on every stalled client.
        wait_until(lambda: _session_closes(cluster)[1011] >= CLIENTS, timeout=30, what="every session closed 1011")
    finally:
        swarm.proc.resume()
    wait_until(lambda: len(_closes(swarm.history_dir)) >= CLIENTS, timeout=30, what="every client's close")
    swarm.stop()
    closes = _closes(swarm.history_dir)
    kinds = Counter(
        "1011" if is_keepalive_close(c) else "1006 after own write" if is_close_lost_to_own_write(c) else repr(c)
        for c in closes
    )
    print(kinds, "balancer port", cluster.ports["balancer"], "lb port", cluster.ports["lb"])
    assert set(kinds) <= {"1011", "1006 after own write"}, kinds
    assert sum(kinds.values()) == CLIENTS
