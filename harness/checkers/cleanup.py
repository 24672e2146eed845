"""`cleanup_complete`: after every client left and a quiet period, nothing is left behind.

Four independent parts, each judged only when its data is present (the note names the parts that
were not): the balancer's final /status, the backends' count of open connections as the runner
measured it, the backends' journals, and the balancer process's socket count against its baseline.
The result passes only if at least one part was judged and none failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Any

from harness.history import Run

from .base import (
    CheckResult,
    Violation,
    evidence,
    finish,
    guarded,
    integer,
    mapping,
    num,
)
from .journal import index_upstreams

NAME = "cleanup_complete"
# psutil counts the listening and admin sockets too; they are in the baseline, so any extra socket
# after quiesce is a leak unless the scenario says otherwise (meta.expect.socket_tolerance).
DEFAULT_SOCKET_TOLERANCE = 0


def _count(value: Any) -> int | None:
    """A /status table may be reported as a number or as the table itself."""
    n = integer(value)
    if n is not None:
        return n
    if isinstance(value, Sized) and not isinstance(value, str):
        return len(value)
    return None


def _judge_status(status: Mapping[str, Any], violations: list[Violation], notes: list[str]) -> bool:
    nonzero: list[dict[str, Any]] = []
    unreadable: list[str] = []
    judged = False

    if "sessions" in status:
        n = _count(status["sessions"])
        if n is None:
            unreadable.append("sessions")
        else:
            judged = True
            if n != 0:
                nonzero.append({"field": "sessions", "value": status["sessions"]})
    else:
        unreadable.append("sessions (absent)")

    tables = status.get("tables")
    if isinstance(tables, Mapping):
        for table, value in tables.items():
            n = _count(value)
            if n is None:
                unreadable.append(f"tables.{table}")
                continue
            judged = True
            if n != 0:
                nonzero.append({"field": f"tables.{table}", "value": value})
    else:
        unreadable.append("tables (absent)")

    backends = status.get("backends")
    if isinstance(backends, list):
        for i, backend in enumerate(backends):
            b = mapping(backend)
            label = f"backends[{b.get('name', i)}].connection_count"
            n = _count(b.get("connection_count"))
            if n is None:
                unreadable.append(label)
                continue
            judged = True
            if n != 0:
                nonzero.append({"field": label, "value": b.get("connection_count")})
    else:
        unreadable.append("backends (absent)")

    if nonzero:
        fields = ", ".join(f"{e['field']}={_count(e['value'])}" for e in nonzero)
        violations.append(Violation(NAME, f"final /status is not empty after quiesce: {fields}", evidence(nonzero)))
    if unreadable:
        notes.append("final /status fields not judged: " + ", ".join(unreadable))
    return judged


@guarded(NAME)
def check_cleanup_complete(run: Run) -> CheckResult:
    violations: list[Violation] = []
    notes: list[str] = []
    parts_judged: list[str] = []
    final = run.run_meta.final
    alive_map = mapping(final.get("backend_alive"))
    dead_backends = {str(name) for name, alive in alive_map.items() if alive is False}

    # 1. The balancer's own tables.
    status = final.get("status")
    if isinstance(status, Mapping):
        if _judge_status(status, violations, notes):
            parts_judged.append("status")
    else:
        notes.append("no final /status: tables not checked")

    # 2. What the backends say they still hold.
    open_counts = final.get("backend_open_connections")
    if isinstance(open_counts, Mapping):
        leaking: list[dict[str, Any]] = []
        for backend, value in open_counts.items():
            if str(backend) in dead_backends:
                continue  # a killed backend holds nothing, whatever the runner last read
            n = _count(value)
            if n is None:
                notes.append(f"backend_open_connections.{backend} unreadable")
                continue
            parts_judged.append("backend_open_connections")
            if n != 0:
                leaking.append({"backend": backend, "open_connections": value})
        if leaking:
            violations.append(
                Violation(
                    NAME,
                    "backends still hold connections from the balancer after quiesce: "
                    + ", ".join(f"{e['backend']}={e['open_connections']}" for e in leaking),
                    evidence(leaking),
                )
            )
    else:
        notes.append("no final.backend_open_connections")

    # 3. The journals: every open closed, unless its backend process ended after it.
    if run.journals:
        parts_judged.append("journals")
        index = index_upstreams(run)
        never_closed = [c for c in index.conns if c.end() is None and c.journal not in dead_backends]
        if never_closed:
            by_backend: dict[str, int] = {}
            for c in never_closed:
                by_backend[c.journal] = by_backend.get(c.journal, 0) + 1
            violations.append(
                Violation(
                    NAME,
                    "journaled backend connections never closed: "
                    + ", ".join(f"{b}: {n}" for b, n in sorted(by_backend.items())),
                    evidence(c.open_record for c in never_closed),
                )
            )
        if index.skipped:
            notes.append(f"{index.skipped} journal record(s) without time or conn skipped")
    else:
        notes.append("no journals")

    # 4. The balancer process's sockets.
    sockets = num(final.get("balancer_sockets"))
    baseline = num(run.run_meta.baseline.get("balancer_sockets"))
    if sockets is not None and baseline is not None:
        parts_judged.append("balancer_sockets")
        tolerance = num(run.run_meta.expect.get("socket_tolerance"))
        allowed = baseline + (tolerance if tolerance is not None else DEFAULT_SOCKET_TOLERANCE)
        if sockets > allowed:
            violations.append(
                Violation(
                    NAME,
                    f"balancer holds {sockets:g} sockets after quiesce; baseline {baseline:g}, allowed {allowed:g}",
                    evidence([{"balancer_sockets": sockets, "baseline": baseline, "allowed": allowed}]),
                )
            )
    else:
        notes.append("no balancer socket count or baseline")

    if dead_backends:
        notes.append("killed backends not judged for open connections: " + ", ".join(sorted(dead_backends)))
    return finish(NAME, violations, checked=bool(parts_judged), notes=notes)
