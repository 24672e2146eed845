"""`others_unaffected`: one client's protocol error costs that client its connection, and no one else.

A ``client_protocol_error`` fault makes at most ``clients`` client connections send a malformed
frame. A correct balancer closes each of those with the code RFC 6455 gives the error
(``clean_failover`` judges the code) and leaves every other client alone. This checker judges the
second half, which no other checker can: while such a fault is in place (and a short grace after
its heal, for a close already under way), it counts the connections the balancer closed with a
protocol-error code and every other remote close.

* More protocol-error closes than the fault's ``clients``: the balancer closed clients that sent
  nothing wrong (or closed one client more than once for one frame).
* Any other remote close of a client: collateral damage from another client's error.

It says "not checked" when the run has no such fault, or the fault never landed (no client was
closed with a protocol-error code), or every client was hit, so there was no one to compare with.
A fault that overlaps any other fault is not judged: that fault may close clients legitimately
(a ``down`` on ``lb``, a refused failover), and blaming the protocol error would be a false alarm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.analysis import fault_windows, run_end_time
from harness.history import Record, Run

from .base import CheckResult, Violation, evidence, finish, fmt_t, guarded, integer, mapping, time_of

OTHERS_UNAFFECTED = "others_unaffected"
FAULT_KIND = "client_protocol_error"
#: The close codes RFC 6455 gives the errors the fault injects (protocol, payload, too big).
PROTOCOL_ERROR_CODES = frozenset({1002, 1007, 1009})
#: A close the balancer started just before the heal may be recorded just after it.
GRACE_S = 1.0


@dataclass(frozen=True)
class _Fault:
    fault_id: str
    clients: int
    start: float
    end: float
    #: Other faults in force meanwhile (their closes would be blamed on this one).
    overlapping: tuple[str, ...]


def _faults(run: Run, run_end: float | None) -> list[_Fault]:
    windows = fault_windows(run.nemesis(), run_end)
    declared: dict[str, int] = {}
    for rec in run.nemesis():
        fault = mapping(rec.get("fault"))
        if rec.get("f") == "apply" and fault.get("kind") == FAULT_KIND:
            params: Mapping[str, Any] = mapping(fault.get("params"))
            clients = integer(params.get("clients"))
            declared[str(rec.get("fault_id"))] = clients if clients is not None and clients >= 1 else 1
    return [
        _Fault(
            w.fault_id,
            declared[w.fault_id],
            w.start,
            w.end + GRACE_S,
            tuple(o.label for o in windows if o is not w and o.start <= w.end + GRACE_S and o.end >= w.start),
        )
        for w in windows
        if w.fault_id in declared
    ]


def _remote_closes(recs: list[Record]) -> list[Record]:
    return [
        r for r in recs if r.get("type") == "event" and r.get("f") == "conn_close" and r.get("initiator") == "remote"
    ]


def _during(rec: Record, fault: _Fault) -> bool:
    t = time_of(rec)
    return t is not None and fault.start <= t <= fault.end


@guarded(OTHERS_UNAFFECTED)
def check_others_unaffected(run: Run) -> CheckResult:
    faults = _faults(run, run_end_time(run))
    if not faults:
        return finish(OTHERS_UNAFFECTED, [], checked=False, notes=[f"no {FAULT_KIND} fault in the run"])
    clients = run.client_histories()
    closes = {client: _remote_closes(recs) for client, recs in clients.items()}
    violations: list[Violation] = []
    notes: list[str] = []
    judged = 0
    for fault in faults:
        if fault.overlapping:
            notes.append(
                f"{fault.fault_id}: not judged, other faults in force meanwhile ({', '.join(fault.overlapping)})"
            )
            continue
        hit = {
            client: [r for r in recs if _during(r, fault) and integer(r.get("code")) in PROTOCOL_ERROR_CODES]
            for client, recs in closes.items()
        }
        hit = {client: recs for client, recs in hit.items() if recs}
        present = [c for c, recs in clients.items() if any(_during(r, fault) for r in recs)]
        spared = [c for c in present if c not in hit]
        hit_closes = [r for recs in hit.values() for r in recs]
        if not hit_closes:
            notes.append(f"{fault.fault_id}: the fault never landed (no client closed with 1002/1007/1009)")
            continue
        if len(hit_closes) > fault.clients:
            judged += 1
            violations.append(
                Violation(
                    OTHERS_UNAFFECTED,
                    f"{len(hit_closes)} connections closed with a protocol-error code while "
                    f"{fault.fault_id} made {fault.clients} client(s) send a malformed frame "
                    f"(clients {', '.join(sorted(hit))})",
                    evidence(hit_closes),
                )
            )
        elif not spared:
            notes.append(f"{fault.fault_id}: every client was hit; no other client to judge")
            continue
        else:
            judged += 1
        for client in spared:
            for rec in closes.get(client, []):
                if _during(rec, fault):
                    violations.append(
                        Violation(
                            OTHERS_UNAFFECTED,
                            f"client {client} conn {rec.get('conn')} closed remotely with code "
                            f"{rec.get('code')!r} at {fmt_t(time_of(rec))} while another client's "
                            f"protocol error ({fault.fault_id}) was handled",
                            evidence([rec]),
                        )
                    )
        notes.append(f"{fault.fault_id}: {len(hit)} client(s) hit, {len(spared)} judged unaffected")
    return finish(OTHERS_UNAFFECTED, violations, checked=judged > 0, notes=notes)
