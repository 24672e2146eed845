"""The seed's demonstration, summarised for a person: ``python -m harness demo`` / ``make demo``."""

from __future__ import annotations

import re
from typing import Any

from harness.analysis import failover_gaps_ms
from harness.history import Run, load_run
from harness.runner import JudgedRun

_RECV_RACE = re.compile(r"cannot call recv while another coroutine|ConcurrencyError")


def client_transitions(run: Run, client: str) -> dict[str, Any]:
    """What one client saw: the servers that welcomed it, its connections, remote closes, gaps."""
    records = run.client_histories().get(client, [])
    return {
        "servers": [str(r.get("server")) for r in records if r.get("f") == "welcome"],
        "connections": len({r.get("conn") for r in records if r.get("f") == "conn_open"}),
        "remote_closes": [
            r.get("code") for r in records if r.get("f") == "conn_close" and r.get("initiator") == "remote"
        ],
        "gaps_ms": failover_gaps_ms(records),
    }


def demo_summary(judged: JudgedRun) -> tuple[bool, str]:
    run = load_run(judged.run_dir)
    clients = [c for c in run.client_ids() if c.startswith("c")]
    lines = ["wschaos demo: kill the primary while 4 clients play", ""]
    all_moved = bool(clients)
    longest = 0.0
    for client in clients:
        t = client_transitions(run, client)
        moved = "primary" in t["servers"] and t["servers"][-1] == "secondary" and t["connections"] == 1
        moved = moved and not t["remote_closes"]
        all_moved &= moved
        gap = max(t["gaps_ms"], default=0.0)
        longest = max(longest, gap)
        path = " -> ".join(dict.fromkeys(t["servers"]))
        lines.append(
            f"  {client}: {path:<22} connections: {t['connections']}  dropped: {len(t['remote_closes'])}"
            f"  failover gap: {gap:.0f} ms  {'OK' if moved else 'NOT MOVED IN PLACE'}"
        )
    state = judged.result("state_continuity")
    races = len(_RECV_RACE.findall(run.balancer_stdout + run.balancer_stderr))
    status_races = max(
        (int(((s.get("status") or {}).get("errors") or {}).get("concurrent_recv") or 0) for s in run.statuses()),
        default=0,
    )
    lines += [
        "",
        f"every client moved to the secondary with no connection dropped: {'yes' if all_moved else 'NO'}",
        f"longest failover gap: {longest:.0f} ms",
        f"game state kept across the transition: {'yes' if state.status == 'pass' else 'NO'}",
        f"concurrent-recv errors in the balancer log: {races} (status counter: {status_races})",
        f"every invariant: {'pass' if judged.passed else 'FAIL'}",
        f"run directory: {judged.run_dir}",
    ]
    ok = all_moved and state.status == "pass" and races == 0 and status_races == 0 and judged.passed
    if not judged.passed:
        lines += ["", judged.summary()]
    return ok, "\n".join(lines)
