"""`reconnect_limits`: per client connection, failovers respect the configured limiter.

The limiter allows at most ``max_attempts`` failovers in any ``window_s`` and requires
``min_interval_s`` between consecutive ones (docs/contract.md section 4). A failover happens when
the build notices the loss of the upstream it replaces: that is when the limiter decides, and when
a build that writes events writes `failover_attempt`. Every successful failover is an attempt, so
judging only the successful ones we can observe is sound: it can miss a violation (attempts that
failed are invisible) but never invent one.

Two views are judged independently and each must hold:

- balancer events, where the build writes them: `failover_attempt` with `allowed: true`, per
  `session`, at its `ts`: the moment itself.
- upstreams, black-box: every `welcome` after the first within one client connection (`conn`) is
  a failover, joined with the backend journals. Its moment is not observed, only bounded. It
  came *no later than* the new upstream opened (the backend journal's `open`; the client's
  receive time of the welcome where the journal has no match). It came *no earlier than* the
  upstream it replaced opened, and no earlier than the first fault that could have ended that
  upstream began: a fault on that upstream's backend (process or link) or on the balancer,
  in force at some moment between that upstream's open and the new one's. A correct build loses
  an upstream only to a fault (the game backends never end a session on their own); where no
  fault of the run qualifies, only the open bounds it.

  A limit is broken only when no choice of moments inside those bounds keeps it. Placing every
  failover at its earliest allowed moment (its lower bound, ``min_interval_s`` after the previous
  one, ``window_s`` after the ``max_attempts``-th before it) finds such a choice whenever one
  exists, so the view reports a breach exactly when that earliest moment is past the upper bound.
  A welcome's time is no stand-in for the moment: a failover whose new upstream took 1 s
  to open (its backend paused) and whose next loss came 3 ms after that open puts two welcomes
  16 ms apart while the losses were a second apart (tests/chaos/regressions/plan-d060f875e5.json).

The timestamps come from different processes, so a limit is only violated when it is missed by
more than a tolerance: ``meta.expect.clock_tolerance_s``, default 50 ms.

On a slow machine (harness.analysis.Slowness) every one of those timestamps can be late by the
scheduling delay of its process, so a miss by no more than the tolerance times the measured
slowness is not judged: the check says "inconclusive" and names it (a quick-profile run at slowness
x7.5 saw a client receive two welcomes 0.447 s apart where the limit was 0.5 s, while the backend
opens and the build's own events were 0.5 s apart). A larger miss fails as always.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.analysis import FaultWindow, conn_key, fault_windows, run_end_time, slowness
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
from .journal import UpstreamIndex, index_upstreams

NAME = "reconnect_limits"
#: Also refusals_justified's, which reads the same ``clock_tolerance_s``: one default for one setting.
DEFAULT_CLOCK_TOLERANCE_S = 0.05
#: Faults on this target can end any upstream (a paused balancer misses its keepalive pongs).
_BALANCER_TARGET = "balancer"


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
class Moment:
    """When one failover can have happened: not before ``earliest``, not after ``latest``.

    A point (``earliest == latest``) when it was observed, as a build's `failover_attempt` is.
    """

    earliest: float
    latest: float
    #: What bounds it, for the evidence: ``{"earliest_because": "...", "latest_because": "..."}``.
    why: dict[str, str] = field(default_factory=dict)
    records: tuple[Record, ...] = ()

    @classmethod
    def at(cls, t: float, rec: Record | None = None) -> Moment:
        return cls(t, t, {}, (rec,) if rec is not None else ())

    @property
    def exact(self) -> bool:
        return self.earliest == self.latest


@dataclass(frozen=True)
class Breach:
    rule: str  # "min_interval" or "window"
    what: str
    involved: list[float]
    #: By how much the limit was missed (seconds).
    missed_by_s: float
    #: The failovers it involves (indexes into the series judged).
    failovers: tuple[int, ...] = ()


def limit_breaches(limits: Limits, moments: Sequence[Moment | float], tolerance: float) -> list[Breach]:
    """Every failover of a series (in order) that no placement inside the bounds lets through.

    Each failover is placed at its earliest moment the limits allow given the earlier ones; where
    that is later than its ``latest`` by more than ``tolerance``, the limit that pushed it there is
    breached. A breached failover is then placed at its own ``earliest``, the placement most
    favourable to the build, so one breach is not counted again in the failovers after it.
    """
    series = [m if isinstance(m, Moment) else Moment.at(m) for m in moments]
    if all(m.exact for m in series):
        series.sort(key=lambda m: m.earliest)
    n = limits.max_attempts
    placed: list[float] = []
    found: list[Breach] = []
    for k, m in enumerate(series):
        latest = m.latest
        earliest = min(m.earliest, latest)
        if n == 0:
            found.append(
                Breach(
                    "window",
                    f"a failover although max_attempts is 0 (window_s {limits.window_s:g})",
                    [latest],
                    math.inf,
                    (k,),
                )
            )
            placed.append(earliest)
            continue
        t, rule = earliest, ""
        if placed and placed[-1] + limits.min_interval_s > t:
            t, rule = placed[-1] + limits.min_interval_s, "min_interval"
        if k >= n and placed[k - n] + limits.window_s > t:
            t, rule = placed[k - n] + limits.window_s, "window"
        missed_by = t - latest
        if not rule or missed_by <= tolerance:
            placed.append(min(t, latest))
            continue
        bounded = "" if m.exact and all(s.exact for s in series[:k]) else "at most "
        if rule == "min_interval":
            gap = latest - placed[-1]
            found.append(
                Breach(
                    rule,
                    f"failovers {bounded}{gap:.3f} s apart (min_interval_s {limits.min_interval_s:g})",
                    [placed[-1], latest],
                    missed_by,
                    (k - 1, k),
                )
            )
        else:
            span = latest - placed[k - n]
            found.append(
                Breach(
                    rule,
                    f"{n + 1} failovers within {bounded}{span:.3f} s (max_attempts {n} per window_s "
                    f"{limits.window_s:g})",
                    [*placed[k - n :], latest],
                    missed_by,
                    tuple(range(k - n, k + 1)),
                )
            )
        placed.append(earliest)
    return found


def _may_end(window: FaultWindow, server: str | None) -> bool:
    """Whether a fault can have ended an upstream to ``server``."""
    if not window.targets:
        return True  # an unnamed target: it may have been anything
    return _BALANCER_TARGET in window.targets or (server is not None and server in window.targets)


def upstream_moments(
    welcomes: Sequence[Record], index: UpstreamIndex, faults: Sequence[FaultWindow], tolerance: float
) -> tuple[list[Moment], int]:
    """The bounds of each failover of one client connection (welcomes in order, the first is its
    initial upstream), and how many of the welcomes had no journal open to match."""
    unmatched = 0
    opened: list[float | None] = []
    servers: list[str | None] = []
    opens: list[Record | None] = []
    for w in welcomes:
        uc = index.find(w.get("server"), w.get("server_conn"), time_of(w))
        if uc is None:
            unmatched += 1
        opened.append(uc.opened if uc is not None else None)
        opens.append(uc.open_record if uc is not None else None)
        server = uc.journal if uc is not None else w.get("server")
        servers.append(server if isinstance(server, str) else None)
    moments: list[Moment] = []
    for k in range(1, len(welcomes)):
        welcome_t = time_of(welcomes[k]) or 0.0
        new_open = opened[k]
        latest = new_open if new_open is not None else welcome_t
        why = {
            "latest_because": (
                f"{servers[k]} opened the new upstream" if new_open is not None else "the client got the welcome"
            )
        }
        earliest = -math.inf
        replaced_open = opened[k - 1]
        if replaced_open is not None:
            earliest, why["earliest_because"] = replaced_open, f"{servers[k - 1]} opened the upstream it replaced"
        since = replaced_open if replaced_open is not None else -math.inf
        causes = [
            f
            for f in faults
            if _may_end(f, servers[k - 1]) and f.start <= latest + tolerance and f.end >= since - tolerance
        ]
        if causes:
            first = min(causes, key=lambda f: f.start)
            if first.start > earliest:
                earliest, why["earliest_because"] = first.start, f"the fault {first.label} began"
        recs = tuple(r for r in (welcomes[k], opens[k]) if r is not None)
        moments.append(Moment(earliest, latest, why, recs))
    return moments, unmatched


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
    seen_upstreams = 0
    seen_events = 0
    unattributed = 0
    unmatched_in_journal = 0
    index = index_upstreams(run)
    faults = fault_windows(run.nemesis(), run_end_time(run))

    def report(source: str, subject: dict[str, Any], moments: list[Moment]) -> None:
        # One violation per rule and subject: a burst of failovers breaks many overlapping windows,
        # and the reader needs the burst, not each window.
        by_rule: dict[str, list[Breach]] = {}
        for breach in limit_breaches(limits, moments, tolerance):
            if breach.missed_by_s <= slow_tolerance:
                set_aside.append(f"{source} {', '.join(f'{k} {v}' for k, v in subject.items())}: {breach.what}")
                continue
            by_rule.setdefault(breach.rule, []).append(breach)
        label = ", ".join(f"{k} {v}" for k, v in subject.items())
        for breaches in by_rule.values():
            first = breaches[0]
            shown = ", ".join(fmt_t(t) for t in first.involved)
            more = f" and {len(breaches) - 1} more breach(es) of this rule" if len(breaches) > 1 else ""
            involved = sorted({i for b in breaches for i in b.failovers})
            # None for "unbounded": verdict.json stays strict JSON (no -Infinity).
            bounds = [
                {
                    "failover": i + 1,
                    "earliest": moments[i].earliest if math.isfinite(moments[i].earliest) else None,
                    "latest": moments[i].latest,
                    **moments[i].why,
                }
                for i in involved
                if not moments[i].exact
            ]
            violations.append(
                Violation(
                    NAME,
                    f"{label}: {first.what} [{source}: {shown}]{more}",
                    evidence(
                        [{"source": source, **subject, "failover_times": [m.latest for m in moments]}]
                        + ([{"bounds": bounds}] if bounds else [])
                        + [r for i in involved for r in moments[i].records]
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
            welcomes.sort(key=lambda w: time_of(w) or 0.0)
            if len(welcomes) < 2:
                continue
            moments, unmatched = upstream_moments(welcomes, index, faults, tolerance)
            unmatched_in_journal += unmatched
            seen_upstreams += len(moments)
            report("upstreams", {"client": client, "conn": conn}, moments)

    events = [e for e in records(run.balancer_events) if time_of(e) is not None]
    paths = {str(e.get("session")): e.get("path") for e in events if e.get("event") == "session_open"}
    attempts_by_session: dict[str, list[Record]] = {}
    for e in events:
        if e.get("event") == "failover_attempt" and e.get("allowed") is True:
            attempts_by_session.setdefault(str(e.get("session")), []).append(e)
    for session, attempts in attempts_by_session.items():
        attempts.sort(key=lambda a: time_of(a) or 0.0)
        moments = [Moment.at(time_of(a) or 0.0, a) for a in attempts]
        seen_events += len(moments)
        report("balancer failover_attempt", {"session": session, "path": paths.get(session)}, moments)
    # Limits on failovers hold vacuously in a run without any: that is nothing judged, not a pass.
    checked = bool(seen_upstreams or seen_events)
    notes.append(
        f"{seen_upstreams} failover(s) judged from the upstreams, {seen_events} from the build's events"
        if checked
        else "no failover in the run: nothing to judge"
    )

    if unattributed:
        notes.append(f"{unattributed} welcome(s) without a conn were not judged")
    if unmatched_in_journal:
        notes.append(
            f"{unmatched_in_journal} welcome(s) have no matching journal open: bounded by the client's receive time"
        )
    if not events:
        notes.append("no balancer event lines: judged black-box only")
    if set_aside:
        notes.insert(
            0,
            f"inconclusive: {len(set_aside)} limit miss(es) within {slow_tolerance * 1000:.0f} ms, what scheduling "
            f"delay explains at {slow.describe()}, not judged (first: {set_aside[0]})",
        )
    return finish(NAME, violations, checked and not set_aside, notes)
