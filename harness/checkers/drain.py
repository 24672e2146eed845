"""`drain_graceful`: a SIGHUP drain of the balancer (docs/contract.md, section 8a).

Judged from the ``drain`` fault's own record (when the signal went, what a new connection got while
the old process drained, how and when it exited, when the new one was ready) and from the game
clients' records:

- no new connection is accepted once the drain has begun: it is refused (no listener) or answered
  HTTP 503;
- every client connection live when the signal went ends only by itself (the client closed, or the
  backend ended the session with 1000 or 4000-4999), or with **1001** or **1012** from the build,
  and then not before it had the drain timeout;
- the old process exits with status 0 within the drain timeout plus the shutdown's bound (the fault
  SIGKILLs it after that, and says so);
- every client it drained is welcomed again once the old process is gone (it exited, or the new
  one was ready where the exit time is not known): only the new process can welcome it then. Not
  from the moment the harness saw the new one ready: a client that reconnects as soon as the new
  process listens can be welcomed before the harness's readiness poll notices it.

A run without a drain step, or whose build does not declare drain support (it was restarted with
SIGTERM instead: ``drain_declared: false``), is "not checked".
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.analysis import client_connections
from harness.history import Record, Run

from .base import CheckResult, Violation, evidence, finish, fmt_t, guarded, integer, mapping, num, records, time_of

DRAIN_GRACEFUL = "drain_graceful"
#: Close codes a draining build may end a live session with.
DRAIN_CLOSE_CODES = (1001, 1012)
#: Codes that end a session on the backend's say (contract section 4): not the drain's doing.
SESSION_END_CODES = frozenset({1000, *range(4000, 5000)})
#: New connections refused properly while draining (harness.faults.kinds.handshake_outcome).
PROPER_REFUSALS = ("refused", "HTTP 503")
#: Record times and the signal's time come from different processes' clocks on one machine:
#: a close this much earlier than the drain timeout still counts as on time.
CLOCK_SLACK_S = 0.05


@dataclass(frozen=True)
class _Drain:
    record: Record
    signalled_at: float
    drain_timeout_s: float
    #: From when a welcome can only come from the new process.
    replaced_at: float | None


@dataclass(frozen=True)
class _Connection:
    client: str
    opened: float
    close: Record | None


def _drain_steps(run: Run) -> tuple[list[_Drain], int]:
    """The completed drain applies with drain support declared, and how many were not declared."""
    declared: list[_Drain] = []
    undeclared = 0
    for rec in records(run.nemesis()):
        if rec.get("f") != "apply" or rec.get("type") != "ok" or mapping(rec.get("fault")).get("kind") != "drain":
            continue
        signalled_at, timeout = num(rec.get("signalled_at")), num(rec.get("drain_timeout_s"))
        if rec.get("drain_declared") is not True or signalled_at is None or timeout is None:
            undeclared += 1
            continue
        exited_at, started_at = num(rec.get("exited_at")), num(rec.get("started_at"))
        declared.append(_Drain(rec, signalled_at, timeout, exited_at if exited_at is not None else started_at))
    return declared, undeclared


def _live_at(run: Run, t: float) -> list[_Connection]:
    """Client connections opened before ``t`` and not ended by then, with their close record."""
    return [_Connection(c.client, c.opened, c.close) for c in client_connections(run.history) if c.live_at(t)]


def _welcomed_after(recs: list[Record], t: float) -> bool:
    return any(r.get("f") == "welcome" and r.get("type") == "event" and (time_of(r) or 0.0) >= t for r in recs)


@guarded(DRAIN_GRACEFUL)
def check_drain_graceful(run: Run) -> CheckResult:
    drains, undeclared = _drain_steps(run)
    if not drains:
        why = (
            "the build does not declare SIGHUP drain (no boolean `draining` in /status, contract section 8a): "
            "it was restarted with SIGTERM instead"
            if undeclared
            else "no drain step in this run"
        )
        return finish(DRAIN_GRACEFUL, [], checked=False, notes=[why])
    histories = run.client_histories()
    violations: list[Violation] = []
    notes: list[str] = []
    for drain in drains:
        rec, t0, timeout = drain.record, drain.signalled_at, drain.drain_timeout_s
        where = f"the drain signalled at {fmt_t(t0)} (drain_timeout_s {timeout:g})"
        outcome = str(rec.get("new_connection"))
        if outcome == "accepted":
            violations.append(
                Violation(DRAIN_GRACEFUL, f"a new connection was accepted during {where}", evidence([rec]))
            )
        elif outcome.startswith("not tried"):
            notes.append(f"no new connection was tried during {where}: {outcome}")
        elif outcome not in PROPER_REFUSALS:
            violations.append(
                Violation(
                    DRAIN_GRACEFUL,
                    f"a new connection during {where} was neither refused nor answered 503: {outcome}",
                    evidence([rec]),
                )
            )
        exit_code, exited_at = integer(rec.get("exit_code")), num(rec.get("exited_at"))
        if rec.get("killed") is True:
            violations.append(
                Violation(
                    DRAIN_GRACEFUL,
                    f"the old process had not exited by its drain timeout plus the shutdown bound after {where}: "
                    "SIGKILLed",
                    evidence([rec]),
                )
            )
        elif exit_code != 0:
            violations.append(
                Violation(
                    DRAIN_GRACEFUL, f"the old process exited with status {exit_code} after {where}", evidence([rec])
                )
            )
        elif exited_at is not None:
            notes.append(f"the old process exited {exited_at - t0:.2f} s after the signal")
        live = _live_at(run, t0)
        if not live:
            notes.append(f"no client connection was live at {where}")
        for conn in live:
            close = conn.close
            if close is None:
                continue  # never seen closed: the run ended first, nothing to judge
            code, t_close = integer(close.get("code")), time_of(close) or 0.0
            if close.get("initiator") == "client" or code in SESSION_END_CODES:
                continue  # ended by itself, not by the drain
            if code not in DRAIN_CLOSE_CODES:
                violations.append(
                    Violation(
                        DRAIN_GRACEFUL,
                        f"{conn.client}'s live session was ended with {code}, not 1001 or 1012, "
                        f"{t_close - t0:.2f} s into {where}",
                        evidence([close]),
                    )
                )
            elif t_close < t0 + timeout - CLOCK_SLACK_S:
                violations.append(
                    Violation(
                        DRAIN_GRACEFUL,
                        f"{conn.client}'s live session was closed with {code} only {t_close - t0:.2f} s into {where}",
                        evidence([close]),
                    )
                )
            elif drain.replaced_at is not None and not _welcomed_after(histories[conn.client], drain.replaced_at):
                violations.append(
                    Violation(
                        DRAIN_GRACEFUL,
                        f"{conn.client} was never welcomed again by the new process (after the old one was gone "
                        f"at {fmt_t(drain.replaced_at)})",
                        evidence([close]),
                    )
                )
        draining = rec.get("draining_seen")
        notes.append(f"/status said draining: {'yes' if draining is True else 'not seen'}; new connection: {outcome}")
    return finish(DRAIN_GRACEFUL, violations, checked=True, notes=notes)
