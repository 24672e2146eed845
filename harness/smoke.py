"""The smoke gate: before any fault, a few clients must play through the build (docs/verdicts.md).

A build that relays no game (accepts TCP and never answers, answers HTTP 503, echoes frames without
an upstream) is refused in seconds with what the clients saw, instead of failing every scenario
slowly. The evidence is read from the clients' histories (:func:`harness.analysis.smoke_facts`),
the backends' journals (rejected handshakes) and the build's own output.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from harness.analysis import SmokeFacts, smoke_facts
from harness.cluster import BACKEND_NAMES, Cluster
from harness.history import BALANCER_STDERR, BALANCER_STDOUT
from harness.procs import tail
from harness.records import clip
from harness.swarm import swarm_argv
from harness.waiting import wait_until

#: The smoke gate: this many clients must get at least one move acknowledged within this long,
#: before any fault, or the build is refused (exit 2) without running a scenario.
SMOKE_CLIENTS = 3
SMOKE_TIMEOUT_S = 15.0


class SmokeFailed(Exception):
    """The build relayed no game: the message says what the smoke clients saw."""


def _read_history(history_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(history_dir.glob("*.jsonl")):
        with contextlib.suppress(OSError):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if isinstance(rec, dict):
                        out.append(rec)
    return out


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _journal_rejections(path: Path, offset: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        fh.seek(offset)
        for line in fh.read().decode("utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and rec.get("event") == "rejected":
                    out.append(rec)
    return out


def smoke_gate(cluster: Cluster, out_dir: Path, timeout_s: float = SMOKE_TIMEOUT_S) -> SmokeFacts:
    """A few clients play through the build before any fault. Raises :class:`SmokeFailed`, naming
    what they saw, if none completes a game exchange within ``timeout_s``."""
    history_dir = out_dir / "history"
    journals = {name: cluster.journal_path(name) for name in BACKEND_NAMES}
    offsets = {name: _file_size(path) for name, path in journals.items()}
    argv = swarm_argv(
        f"{cluster.lb_url}/play",
        SMOKE_CLIENTS,
        history_dir=history_dir,
        prefix="smoke",
        id_offset=cluster.client_id_offset(),
        ready_timeout_s=timeout_s,
    )
    proc = cluster.supervisor.spawn("smoke", argv, wait=False)
    facts = SmokeFacts()

    def someone_played() -> bool:
        facts.__dict__.update(smoke_facts(_read_history(history_dir)).__dict__)
        return facts.passed

    try:
        with contextlib.suppress(TimeoutError):
            wait_until(someone_played, timeout=timeout_s, interval=0.2, what="a smoke client to play")
    finally:
        # Clients stuck in a handshake with a silent build would only make a polite stop slow.
        if facts.passed:
            proc.terminate(timeout=5.0)
        else:
            proc.kill()
    someone_played()
    if facts.passed:
        return facts
    rejections = [r for name, path in journals.items() for r in _journal_rejections(path, offsets[name])]
    raise SmokeFailed(smoke_message(facts, rejections, cluster, timeout_s))


def smoke_message(facts: SmokeFacts, rejections: list[dict[str, Any]], cluster: Cluster, timeout_s: float) -> str:
    lines = [
        f"the build relayed no game: none of {SMOKE_CLIENTS} clients completed a game exchange within {timeout_s:g} s "
        f"({facts.welcomed} got a welcome)"
    ]
    for error, n in facts.connect_errors[:3]:
        lines.append(f"  handshake: {n}x {clip(error, 300)}")
    for close, n in facts.closes[:3]:
        lines.append(f"  closed by the build: {n}x {close}")
    if facts.opened and not facts.welcomed:
        lines.append(f"  {facts.opened} WebSocket handshake(s) completed, but no game message (welcome) ever came back")
    elif not facts.connect_errors and not facts.closes and not facts.welcomed:
        lines.append("  the build accepted the connections and never answered")
    for rec in rejections[:3]:
        lines.append(
            f"  backend {rec.get('server')} rejected the handshake: HTTP {rec.get('status')} "
            f"{str(rec.get('reason') or '').strip()!r} for path {rec.get('path')!r}"
        )
    if not rejections:
        lines.append("  no backend saw a rejected handshake")
    for name in (BALANCER_STDOUT, BALANCER_STDERR):
        last = tail(cluster.logs / name, 8).strip()
        lines.append(f"  build's last {name.split('.')[-1]} lines:" + ("" if last else " (none)"))
        lines.extend(f"    {line}" for line in last.splitlines())
    return "\n".join(lines)
