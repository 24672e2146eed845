"""`upgrade_failover`: a backend that refuses or stalls the upgrade costs a client at most one open timeout.

While a ``backend_upgrade_*`` fault is in place, every opening handshake to that backend is answered
with 500/503, never answered, or answered late. A correct build that opens an upstream to it gives
up on that backend (at once for a refusal, at its open timeout for a stall) and fails over to
another backend, or refuses the client with 1013 when none can be reached (contract section 4). It
never retries the faulted backend without end, and never waits on a handshake past its
``open_timeout_s``.

Judged from the clients' side, so it holds for black-box builds too: each client connection the
build accepted while such a fault was in place must get its first ``welcome`` (it was given an
upstream) or be closed within::

    (sum over the upgrade faults in force of what one handshake may cost) + MARGIN_S

a refusal costing 0, a stall the build's ``open_timeout_s``, a slow handshake its delay (at most
the open timeout); the margin, not the build's own timer, is stretched by the measured slowness.

And it must not keep asking: the proxy counts the handshakes each fault met (its evidence, at the
heal). At most ``1 + max_attempts`` per client connection open during the fault (its first
upstream and each failover it is allowed) plus ``PROBES_PER_S`` health probes per second of the
fault are called for; more is a build retrying a backend that refuses, in a loop. Which close
code the client got is ``clean_failover``'s to judge. A connection that ended on the client's side
before the bound, or a run that ended first, is not judged.

"Not checked" when the run has no upgrade fault, the build was not given ``open_timeout_s``
(``limits.open_timeout_s``), or no client connected while a fault was in place; on a machine too
slow (``harness.analysis.Slowness.too_slow``) a late answer is inconclusive rather than a failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.analysis import fault_evidence, fault_windows, run_end_time, slowness
from harness.faults import Fault, FaultError
from harness.faults.kinds import UpgradeKind
from harness.history import Record, Run

from .base import CheckResult, Violation, evidence, finish, fmt_t, guarded, integer, mapping, num, time_of

UPGRADE_FAILOVER = "upgrade_failover"
#: Slack for scheduling, the failover's own connect and the welcome's way back.
MARGIN_S = 2.0
#: Health probes a build may send a backend that does not upgrade, per second of the fault.
PROBES_PER_S = 2.0


@dataclass(frozen=True)
class _Window:
    fault_id: str
    label: str
    cost_s: float
    start: float
    end: float


def _windows(run: Run, open_timeout_s: float, run_end: float | None) -> tuple[list[_Window], list[str]]:
    faults: dict[str, Fault] = {}
    notes: list[str] = []
    for rec in run.nemesis():
        raw = mapping(rec.get("fault"))
        if rec.get("f") != "apply" or not str(raw.get("kind", "")).startswith("backend_upgrade_"):
            continue
        try:
            fault = Fault.from_dict(dict(raw))
        except FaultError as exc:
            notes.append(f"{rec.get('fault_id')}: not judged, its fault does not read back: {exc}")
            continue
        if isinstance(fault.spec, UpgradeKind):
            faults[str(rec.get("fault_id"))] = fault
    out = []
    for w in fault_windows(run.nemesis(), run_end):
        upgrade = faults.get(w.fault_id)
        if upgrade is not None and isinstance(upgrade.spec, UpgradeKind):
            cost = upgrade.spec.handshake_cost_s(upgrade, open_timeout_s)
            out.append(_Window(w.fault_id, upgrade.describe(), cost, w.start, w.end))
    return out, notes


def _answer(recs: list[Record], conn: object, opened: float) -> Record | None:
    """The first welcome or close of connection ``conn`` after it opened."""
    for rec in recs:
        t = time_of(rec)
        if t is None or t < opened or rec.get("conn") != conn or rec.get("type") != "event":
            continue
        if rec.get("f") in ("welcome", "conn_close"):
            return rec
    return None


def _in_force(recs: list[Record], w: _Window) -> int:
    """How many of one client's connections were open at some time during ``w``."""
    opened: dict[object, float] = {}
    closed: dict[object, float] = {}
    for rec in recs:
        t = time_of(rec)
        if t is None or rec.get("type") != "event":
            continue
        if rec.get("f") == "conn_open":
            opened.setdefault(rec.get("conn"), t)
        elif rec.get("f") in ("conn_close", "stopped"):
            for conn in opened if rec.get("f") == "stopped" else [rec.get("conn")]:
                closed.setdefault(conn, t)
    return sum(1 for conn, t in opened.items() if t <= w.end and closed.get(conn, math.inf) >= w.start)


def _last_time(recs: list[Record]) -> float | None:
    times = [t for t in (time_of(r) for r in recs) if t is not None]
    return max(times) if times else None


@guarded(UPGRADE_FAILOVER)
def check_upgrade_failover(run: Run) -> CheckResult:
    has_fault = any(str(mapping(r.get("fault")).get("kind", "")).startswith("backend_upgrade_") for r in run.nemesis())
    if not has_fault:
        return finish(UPGRADE_FAILOVER, [], checked=False, notes=["no backend_upgrade_* fault in the run"])
    open_timeout = num(run.run_meta.balancer_config.get("open_timeout_s"))
    if open_timeout is None or open_timeout <= 0:
        return finish(
            UPGRADE_FAILOVER, [], checked=False,
            notes=["run.json balancer_config has no open_timeout_s (the scenario sets none: limits.open_timeout_s)"],
        )  # fmt: skip
    slow = slowness(run.history)
    run_end = run_end_time(run)
    windows, notes = _windows(run, open_timeout, run_end)
    counts = {e.fault_id: e.counts for e in fault_evidence(run)}
    violations: list[Violation] = []
    late: list[Violation] = []  # timing findings
    judged = 0
    histories = run.client_histories()
    for client, recs in histories.items():
        end = _last_time(recs)
        for rec in recs:
            opened = time_of(rec)
            if rec.get("f") != "conn_open" or opened is None:
                continue
            active = [w for w in windows if w.start <= opened <= w.end]
            if not active:
                continue
            # The open timeout is the build's own timer; only the work around it slows with the machine.
            bound = sum(w.cost_s for w in active) + MARGIN_S * slow.scale
            answer = _answer(recs, rec.get("conn"), opened)
            answered = time_of(answer) if answer is not None else None
            if answered is None and (end is None or end - opened < bound):
                continue  # the client stopped (or the run ended) before the bound: nothing to judge
            judged += 1
            waited = (answered if answered is not None else (end or opened)) - opened
            if waited <= bound:
                continue
            what = "no welcome and no close" if answer is None else f"its {answer.get('f')} only"
            late.append(
                Violation(
                    UPGRADE_FAILOVER,
                    f"client {client} conn {rec.get('conn')} opened at {fmt_t(opened)} while "
                    f"{', '.join(w.label for w in active)} was in place: {what} after {waited:.1f} s "
                    f"(bound {bound:.1f} s: open_timeout_s {open_timeout:g} per stalled backend + "
                    f"{MARGIN_S:g} s{'' if slow.scale == 1.0 else f' x{slow.scale:.2f} slowness'}); "
                    "the build kept retrying or waiting on a backend that does not upgrade",
                    evidence([rec] + ([answer] if answer is not None else [])),
                )
            )
    attempts_per_conn = 1 + max(0, integer(run.run_meta.failover.get("max_attempts")) or 0)
    for w in windows:
        toxics = counts.get(w.fault_id) or {}
        met = sum(integer(mapping(c).get("connections")) or 0 for c in toxics.values()) if toxics else None
        notes.append(f"{w.fault_id}: {w.label} met {'?' if met is None else met} handshake(s)")
        if met is None:
            continue
        conns = sum(_in_force(recs, w) for recs in histories.values())
        allowed = attempts_per_conn * conns + math.ceil(PROBES_PER_S * (w.end - w.start))
        if met > allowed:
            violations.append(
                Violation(
                    UPGRADE_FAILOVER,
                    f"{w.fault_id}: {w.label} met {met} upgrade attempts while {conns} client connection(s) "
                    f"were open or opened; at most {allowed} are called for ({attempts_per_conn} per connection: "
                    f"its first upstream and max_attempts failovers, plus {PROBES_PER_S:g} health probes a "
                    "second): the build keeps retrying a backend that does not upgrade",
                    [{"fault_id": w.fault_id, "evidence": toxics}],
                )
            )
    if not judged:
        notes.append("no client connection opened while an upgrade fault was in place")
    else:
        notes.append(f"{judged} client connection(s) judged")
    if slow.too_slow and late:
        # As the liveness checkers: past the stretch limit a late answer may be the machine's.
        notes.append(f"inconclusive: {len(late)} timing finding(s) not judged: {slow.describe()}")
        if not violations:
            return finish(UPGRADE_FAILOVER, [], checked=False, notes=notes)
    else:
        violations = late + violations
    return finish(UPGRADE_FAILOVER, violations, checked=judged > 0, notes=notes)
