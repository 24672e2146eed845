"""`single_upstream`: a client connection is attached to one backend at a time, and no move is
delivered to the backends more often than the client sent it.

Attachment is judged from the backends' journals: each `welcome` a client connection received
names a backend connection; those connections' open..close intervals must not overlap by more than
``meta.expect.upstream_overlap_tolerance_s`` (default 0.25 s: one close handshake on loopback).

A journal only tells the truth about a connection while its backend and the link to it are
healthy, so an interval also ends:
- at the backend's next `start` or `stop` record (the process ended; it could not journal a close);
- at the moment a nemesis fault aimed at that backend (process or link, any kind) was applied or
  was already active: a killed, paused or partitioned backend keeps a dead connection "open" in its
  journal long after the balancer legitimately moved on, and a slowed link delays the close.
So overlaps are only judged while nothing was being done to the old backend; that can miss a double
attachment during a fault, never invent one.

Delivery is judged by counting: for each (client, seq), `recv` records of kind move across all
journals must not exceed the client's `invoke` records for that seq (every send and re-send is an
invoke, so one delivery per send is the most an exactly-once relay may produce).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.history import Record, Run

from .base import (
    CheckResult,
    Violation,
    client_histories,
    evidence,
    expect_number,
    finish,
    fmt_t,
    guarded,
    integer,
    mapping,
    records,
    run_end_time,
    time_of,
)
from .journal import UpstreamConn, index_upstreams

NAME = "single_upstream"
DEFAULT_OVERLAP_TOLERANCE_S = 0.25


def _fault_targets(fault: Mapping[str, Any]) -> set[str]:
    target = fault.get("target")
    if isinstance(target, str):
        return {target}
    if isinstance(target, list):
        return {t for t in target if isinstance(t, str)}
    return set()


def fault_windows(run: Run) -> dict[str, list[tuple[float, float]]]:
    """Per target, the (applied, healed) intervals of nemesis faults; unhealed ones never end."""
    applied: dict[str, tuple[float, set[str]]] = {}
    healed: dict[str, float] = {}
    anonymous = 0
    for rec in records(run.nemesis()):
        t = time_of(rec)
        if t is None:
            continue
        fault_id = rec.get("fault_id")
        if fault_id is None:
            # Without an id an apply cannot be paired with its heal: treat it as never healed.
            anonymous += 1
            fault_id = f"anonymous-{anonymous}"
        key = str(fault_id)
        if rec.get("f") == "apply":
            targets = _fault_targets(mapping(rec.get("fault")))
            if key not in applied or t < applied[key][0]:
                applied[key] = (t, targets | (applied[key][1] if key in applied else set()))
        elif rec.get("f") == "heal" and rec.get("type") in ("ok", "info", "fail"):
            # The fault is gone once the heal completed, not when it was requested.
            healed[key] = max(t, healed.get(key, t))
    windows: dict[str, list[tuple[float, float]]] = {}
    for key, (start, targets) in applied.items():
        end = healed.get(key, float("inf"))
        for target in targets:
            windows.setdefault(target, []).append((start, end))
    return windows


def _effective_end(uc: UpstreamConn, faults: dict[str, list[tuple[float, float]]], run_end: float) -> float:
    end = uc.end()
    end_t = end if end is not None else run_end
    target_names = {uc.journal}
    server = uc.open_record.get("server")
    if isinstance(server, str):
        target_names.add(server)
    for name in target_names:
        for applied, healed in faults.get(name, []):
            if applied < end_t and healed > uc.opened:
                end_t = min(end_t, max(uc.opened, applied))
    return end_t


def _overlaps(run: Run, violations: list[Violation], notes: list[str], tolerance: float) -> int:
    index = index_upstreams(run)
    faults = fault_windows(run)
    run_end = run_end_time(run)
    end_of_run = run_end if run_end is not None else float("inf")
    judged_conns = 0
    unmatched = 0
    for client, recs in client_histories(run).items():
        by_conn: dict[str, list[tuple[Record, UpstreamConn]]] = {}
        for rec in recs:
            if rec.get("type") != "event" or rec.get("f") != "welcome":
                continue
            uc = index.find(rec.get("server"), rec.get("server_conn"), time_of(rec))
            if uc is None:
                unmatched += 1
                continue
            attached = by_conn.setdefault(str(rec.get("conn")), [])
            if all(existing is not uc for _, existing in attached):
                attached.append((rec, uc))
        for conn, attached in by_conn.items():
            judged_conns += 1
            for i, (welcome_a, a) in enumerate(attached):
                end_a = _effective_end(a, faults, end_of_run)
                for welcome_b, b in attached[i + 1 :]:
                    end_b = _effective_end(b, faults, end_of_run)
                    overlap = min(end_a, end_b) - max(a.opened, b.opened)
                    if overlap <= tolerance:
                        continue
                    violations.append(
                        Violation(
                            NAME,
                            f"client {client} conn {conn} was attached to {a.journal} "
                            f"({a.conn}) and {b.journal} ({b.conn}) at once for {overlap:.3f} s, "
                            f"from {fmt_t(max(a.opened, b.opened))}",
                            evidence(
                                [
                                    welcome_a,
                                    a.open_record,
                                    {
                                        "journal": a.journal,
                                        "conn": a.conn,
                                        "closed": a.closed,
                                        "process_ended": a.process_ended,
                                        "judged_end": end_a,
                                    },
                                    welcome_b,
                                    b.open_record,
                                ]
                            ),
                        )
                    )
    if unmatched:
        notes.append(f"{unmatched} welcome(s) name no backend connection found in the journals")
    return judged_conns


def _duplicate_deliveries(run: Run, violations: list[Violation], notes: list[str]) -> int:
    sent: dict[tuple[str, int], int] = {}
    for client, recs in client_histories(run).items():
        for rec in recs:
            if rec.get("type") == "invoke" and rec.get("f") == "move":
                seq = integer(rec.get("seq"))
                if seq is not None:
                    sent[(client, seq)] = sent.get((client, seq), 0) + 1

    delivered: dict[tuple[str, int], list[Record]] = {}
    unattributed = 0
    for name, journal in run.journals.items():
        for rec in records(journal):
            if rec.get("event") != "recv" or rec.get("kind") != "move":
                continue
            addressee, seq = rec.get("client"), integer(rec.get("seq"))
            if not isinstance(addressee, str) or seq is None:
                unattributed += 1
                continue
            delivered.setdefault((addressee, seq), []).append({"journal": name, **rec})

    for (client, seq), recvs in sorted(delivered.items()):
        invoked = sent.get((client, seq), 0)
        if len(recvs) > invoked:
            violations.append(
                Violation(
                    NAME,
                    f"client {client} move {seq} was delivered to backends {len(recvs)} times "
                    f"but sent {invoked} time(s)",
                    evidence(recvs),
                )
            )
    if unattributed:
        notes.append(f"{unattributed} journal move recv(s) without client or seq not counted")
    return len(delivered)


@guarded(NAME)
def check_single_upstream(run: Run) -> CheckResult:
    if not run.journals:
        return finish(NAME, [], checked=False, notes=["no backend journals"])
    tolerance = expect_number(run, "upstream_overlap_tolerance_s", DEFAULT_OVERLAP_TOLERANCE_S)
    violations: list[Violation] = []
    notes: list[str] = []
    judged_conns = _overlaps(run, violations, notes, tolerance)
    judged_moves = _duplicate_deliveries(run, violations, notes)
    return finish(NAME, violations, checked=bool(judged_conns or judged_moves), notes=notes)
