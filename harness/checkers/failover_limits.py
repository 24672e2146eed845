"""`reconnect_limits`: per client connection, failovers respect the configured limiter.

The limiter allows at most ``max_attempts`` failovers in any ``window_s`` and requires
``min_interval_s`` between consecutive ones (docs/contract.md). Every successful failover is an
attempt, so judging only the successful ones we can observe is sound: it can miss a violation
(attempts that failed are invisible) but never invent one.

Three views are judged independently and each must hold:
- history: every `welcome` after the first within one client connection (`conn`), at the time the
  client received it;
- journals: the backend `open` of the connection each of those welcomes names, at the time the
  backend accepted it (closer to the balancer's decision than the client's receive time);
- balancer events, where the build writes them: `failover_attempt` with `allowed: true`, per
  `session`, at its `ts`.

The timestamps come from different processes and travel through proxies, so a limit is only
violated when it is missed by more than a tolerance: ``meta.expect.clock_tolerance_s``, default
50 ms. Within a window, the (max_attempts+1)-th failover must come at least
``window_s - tolerance`` after the first of them; consecutive failovers at least
``min_interval_s - tolerance`` apart.

On a slow machine (harness.analysis.Slowness) every one of those timestamps can be late by the
scheduling delay of its process, so a miss by no more than the tolerance times the measured
slowness is not judged: the check says "inconclusive" and names it (a quick-profile run at slowness
x7.5 saw a client receive two welcomes 0.447 s apart where the limit was 0.5 s, while the backend
opens and the build's own events were 0.5 s apart). A larger miss fails as always.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from harness.analysis import conn_key, slowness
from harness.history import Record, Run

from .base import (
    CheckResult,
    Violation,
    evidence,
    finish,
    fmt_t,
    guarded,
    integer,
    num,
    records,
    time_of,
)
from .journal import index_upstreams

NAME = "reconnect_limits"
DEFAULT_CLOCK_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class Limits:
    max_attempts: int
    window_s: float
    min_interval_s: float


def read_limits(run: Run) -> Limits | None:
    failover = run.run_meta.failover
    max_attempts = integer(failover.get("max_attempts"))
    window_s = num(failover.get("window_s"))
    min_interval_s = num(failover.get("min_interval_s"))
    if max_attempts is None or window_s is None or min_interval_s is None or max_attempts < 0:
        return None
    return Limits(max_attempts, window_s, min_interval_s)


@dataclass(frozen=True)
class Breach:
    rule: str  # "min_interval" or "window"
    what: str
    involved: list[float]
    #: By how much the limit was missed (seconds).
    missed_by_s: float


def limit_breaches(limits: Limits, times: list[float], tolerance: float) -> list[Breach]:
    """Every place a series of failover times breaks the limits by more than ``tolerance``."""
    ts = sorted(times)
    found: list[Breach] = []
    for earlier, later in pairwise(ts):
        missed_by = limits.min_interval_s - (later - earlier)
        if missed_by > tolerance:
            found.append(
                Breach(
                    "min_interval",
                    f"failovers {later - earlier:.3f} s apart (min_interval_s {limits.min_interval_s:g})",
                    [earlier, later],
                    missed_by,
                )
            )
    n = limits.max_attempts
    for i in range(len(ts) - n):
        span = ts[i + n] - ts[i]
        missed_by = limits.window_s - span
        if missed_by > tolerance:
            found.append(
                Breach(
                    "window",
                    f"{n + 1} failovers within {span:.3f} s (max_attempts {n} per window_s {limits.window_s:g})",
                    ts[i : i + n + 1],
                    missed_by,
                )
            )
    return found


@guarded(NAME)
def check_reconnect_limits(run: Run) -> CheckResult:
    limits = read_limits(run)
    if limits is None:
        return finish(NAME, [], checked=False, notes=["run.json has no usable failover limits"])
    tolerance = run.run_meta.expect_number("clock_tolerance_s", DEFAULT_CLOCK_TOLERANCE_S)
    slow = slowness(run.history)
    # What scheduling delay alone could explain on this machine; 1x (nothing more) when not slow.
    slow_tolerance = tolerance * (slow.factor if slow.scale > 1.0 and slow.factor else 1.0)
    set_aside: list[str] = []
    violations: list[Violation] = []
    notes: list[str] = []
    checked = False
    unattributed = 0
    unmatched_in_journal = 0
    index = index_upstreams(run)

    def report(source: str, subject: dict[str, Any], times: list[float], recs: list[Record]) -> None:
        # One violation per rule and subject: a burst of failovers breaks many overlapping windows,
        # and the reader needs the burst, not each window.
        by_rule: dict[str, list[tuple[str, list[float]]]] = {}
        for breach in limit_breaches(limits, times, tolerance):
            if breach.missed_by_s <= slow_tolerance:
                set_aside.append(f"{source} {', '.join(f'{k} {v}' for k, v in subject.items())}: {breach.what}")
                continue
            by_rule.setdefault(breach.rule, []).append((breach.what, breach.involved))
        label = ", ".join(f"{k} {v}" for k, v in subject.items())
        for breaches in by_rule.values():
            what, involved = breaches[0]
            shown = ", ".join(fmt_t(t) for t in involved)
            more = f" and {len(breaches) - 1} more breach(es) of this rule" if len(breaches) > 1 else ""
            offending = {t for _, ts in breaches for t in ts}
            violations.append(
                Violation(
                    NAME,
                    f"{label}: {what} [{source}: {shown}]{more}",
                    evidence(
                        [{"source": source, **subject, "failover_times": sorted(times)}]
                        + [r for r in recs if time_of(r) in offending]
                    ),
                )
            )

    for client, recs in run.client_histories().items():
        welcomes_by_conn: dict[str, list[Record]] = {}
        for rec in recs:
            if rec.get("type") == "event" and rec.get("f") == "welcome":
                key = conn_key(rec)
                if key is None:
                    unattributed += 1
                    continue
                welcomes_by_conn.setdefault(key, []).append(rec)
        for conn, welcomes in welcomes_by_conn.items():
            checked = True
            failovers = welcomes[1:]
            if not failovers:
                continue
            subject: dict[str, Any] = {"client": client, "conn": conn}
            report("history welcome", subject, [time_of(w) or 0.0 for w in failovers], failovers)

            opens: list[Record] = []
            for w in failovers:
                uc = index.find(w.get("server"), w.get("server_conn"), time_of(w))
                if uc is None:
                    unmatched_in_journal += 1
                else:
                    opens.append(uc.open_record)
            if opens:
                report("journal open", subject, [time_of(o) or 0.0 for o in opens], opens)

    events = [e for e in records(run.balancer_events) if time_of(e) is not None]
    paths = {str(e.get("session")): e.get("path") for e in events if e.get("event") == "session_open"}
    attempts_by_session: dict[str, list[Record]] = {}
    for e in events:
        if e.get("event") == "failover_attempt" and e.get("allowed") is True:
            attempts_by_session.setdefault(str(e.get("session")), []).append(e)
    if events:
        checked = True
    for session, attempts in attempts_by_session.items():
        times = [time_of(a) or 0.0 for a in attempts]
        report("balancer failover_attempt", {"session": session, "path": paths.get(session)}, times, attempts)

    if unattributed:
        notes.append(f"{unattributed} welcome(s) without a conn were not judged")
    if unmatched_in_journal:
        notes.append(f"{unmatched_in_journal} failover welcome(s) have no matching journal open")
    if not events:
        notes.append("no balancer event lines: judged black-box only")
    if set_aside:
        notes.insert(
            0,
            f"inconclusive: {len(set_aside)} limit miss(es) within {slow_tolerance * 1000:.0f} ms, what scheduling "
            f"delay explains at {slow.describe()}, not judged (first: {set_aside[0]})",
        )
    return finish(NAME, violations, checked and not set_aside, notes)
