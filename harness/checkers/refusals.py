"""`refusals_justified`: a failover is refused only when the configured limits call for it.

`reconnect_limits` judges one side of each limit (no more failovers than allowed); this judges the
other: a build that refuses a failover the limits allow (too strict a window, too long an interval,
one attempt fewer) drops a client it should have kept. A refusal at time ``t`` of one client
connection is justified when, counting that connection's earlier *allowed* failovers,

- at least ``max_attempts`` of them are less than ``window_s`` before ``t``, or
- the latest one is less than ``min_interval_s`` before ``t``

(each with the clock tolerance, in the build's favour). Two views:

- balancer events, where the build writes them: every `failover_attempt` with `allowed: false`
  (except reason `shutting_down`) against the same session's allowed attempts;
- clients, only where the scenario says a backend is reachable throughout
  (``expect.backends_reachable``): every 1013 a client gets, against the failovers (welcomes
  after the first) of that connection. Elsewhere a 1013 may mean "no backend", which is no refusal.
"""

from __future__ import annotations

from harness.analysis import conn_key
from harness.history import Record, Run

from .base import (
    CheckResult,
    Violation,
    evidence,
    finish,
    fmt_t,
    guarded,
    integer,
    records,
    time_of,
)
from .failover_limits import DEFAULT_CLOCK_TOLERANCE_S, Limits, read_limits
from .liveness import TRY_AGAIN_LATER

NAME = "refusals_justified"


def refusal_reason(limits: Limits, allowed_before: list[float], t: float, tolerance: float) -> str | None:
    """Why the limits refuse a failover at ``t`` after the allowed ones; None if they allow it."""
    recent = [a for a in allowed_before if a <= t and t - a < limits.window_s + tolerance]
    if len(recent) >= limits.max_attempts:
        return f"{len(recent)} failover(s) within window_s {limits.window_s:g} (max_attempts {limits.max_attempts})"
    earlier = [a for a in allowed_before if a <= t]
    if earlier and t - max(earlier) < limits.min_interval_s + tolerance:
        return f"last failover {t - max(earlier):.3f} s before (min_interval_s {limits.min_interval_s:g})"
    return None


def _unjustified(limits: Limits, allowed_before: list[float], t: float) -> str:
    earlier = sorted(a for a in allowed_before if a <= t)
    in_window = sum(1 for a in earlier if t - a < limits.window_s)
    last = f"{t - earlier[-1]:.3f} s" if earlier else "none"
    return (
        f"{in_window} allowed failover(s) in the last window_s {limits.window_s:g} (max_attempts "
        f"{limits.max_attempts}), the last one {last} before (min_interval_s {limits.min_interval_s:g})"
    )


@guarded(NAME)
def check_refusals_justified(run: Run) -> CheckResult:
    limits = read_limits(run)
    if limits is None:
        return finish(NAME, [], checked=False, notes=["run.json has no usable failover limits"])
    tolerance = run.run_meta.expect_number("clock_tolerance_s", DEFAULT_CLOCK_TOLERANCE_S)
    violations: list[Violation] = []
    notes: list[str] = []
    checked = False
    judged = 0

    events = [e for e in records(run.balancer_events) if time_of(e) is not None]
    by_session: dict[str, list[Record]] = {}
    for e in events:
        if e.get("event") == "failover_attempt":
            by_session.setdefault(str(e.get("session")), []).append(e)
    if events:
        checked = True
    for session, attempts in by_session.items():
        attempts.sort(key=lambda e: time_of(e) or 0.0)
        allowed: list[float] = []
        for a in attempts:
            t = time_of(a) or 0.0
            if a.get("allowed") is True:
                allowed.append(t)
                continue
            if a.get("allowed") is not False or a.get("reason") == "shutting_down":
                continue
            judged += 1
            if refusal_reason(limits, allowed, t, tolerance) is None:
                violations.append(
                    Violation(
                        NAME,
                        f"session {session}: failover refused at {fmt_t(t)} although the limits allow it: "
                        + _unjustified(limits, allowed, t),
                        evidence([a, {"allowed_failovers": allowed}]),
                    )
                )

    if run.run_meta.expect.get("backends_reachable") is True:
        for client, recs in run.client_histories().items():
            checked = True
            welcomes: dict[str | None, list[float]] = {}
            for rec in recs:
                t = time_of(rec) or 0.0
                if rec.get("type") != "event":
                    continue
                if rec.get("f") == "welcome":
                    welcomes.setdefault(conn_key(rec), []).append(t)
                elif rec.get("f") == "conn_close" and rec.get("initiator") == "remote":
                    if integer(rec.get("code")) != TRY_AGAIN_LATER:
                        continue
                    judged += 1
                    seen = welcomes.get(conn_key(rec), []) if conn_key(rec) is not None else []
                    if not seen:
                        violations.append(
                            Violation(
                                NAME,
                                f"client {client} conn {rec.get('conn')} got 1013 at {fmt_t(t)} before any "
                                "welcome, although a backend was reachable throughout",
                                evidence([rec]),
                            )
                        )
                    elif refusal_reason(limits, seen[1:], t, tolerance) is None:
                        violations.append(
                            Violation(
                                NAME,
                                f"client {client} conn {rec.get('conn')} got 1013 at {fmt_t(t)} although the "
                                "limits allow a failover: " + _unjustified(limits, seen[1:], t),
                                evidence([rec, {"failovers_seen": seen[1:]}]),
                            )
                        )
    else:
        notes.append("clients' 1013s not judged: the scenario does not promise a reachable backend")
    if not events:
        notes.append("no balancer event lines")
    notes.append(f"{judged} refusal(s) judged")
    return finish(NAME, violations, checked, notes)
