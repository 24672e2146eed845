"""Liveness: `clean_failover` (clients keep playing through faults, and never hang) and
`recovers_after_heal` (once faults are healed, every client plays again within a deadline).

Safety checkers ask "did anything wrong happen"; these ask "did the right thing happen in time", so
they depend on the scenario's expectations in run.json (`expect`) and on its phases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.analysis import (
    ABNORMAL_CLOSURE,
    FaultWindow,
    Slowness,
    describe_excused,
    fault_windows,
    is_keepalive_close,
    run_end_time,
    run_excused_keepalive_closes,
    slowness,
)
from harness.history import Record, Run
from harness.records import is_op

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

CLEAN_FAILOVER = "clean_failover"
RECOVERS = "recovers_after_heal"
DEFAULT_FAILOVER_DEADLINE_S = 10.0
DEFAULT_RECOVERY_DEADLINE_S = 10.0
# A client the run gave less than this after the heal (or after joining) is not judged: no build
# can be expected to fail over and answer in less, and blaming it would blame the scenario.
MIN_RECOVERY_WINDOW_S = 1.0
TRY_AGAIN_LATER = 1013
#: A backend's rejected handshake within this long of a client's drop is named as its likely cause.
REJECTION_EXPLAINS_S = 2.0


def _expected_close_codes(run: Run) -> set[int]:
    codes = run.run_meta.expect.get("close_codes")
    if not isinstance(codes, list):
        return set()
    return {c for c in (integer(x) for x in codes) if c is not None}


def _clipped(start: float, end: float, lo: float, hi: float) -> float:
    return max(0.0, min(end, hi) - max(start, lo))


@dataclass(frozen=True)
class StallThroughHeal:
    """A stall the slowness stretch would have passed although no failover of the build's ended
    it: the client's connection got no new upstream (no welcome) before the nemesis began removing
    a fault, the stall went on past that moment, and it was longer than the scenario's own,
    unstretched deadline. ``resumed``: it ended with an acknowledgement after the heal began;
    otherwise it never ended before the client stopped. A welcome after the heal began is the
    heal's doing (removing a toxic resets the connections it held, and any build then reconnects).
    On a machine not slow that is a failure; on a slow one the stretch cannot tell a slow failover
    from none, so it is inconclusive."""

    client: str
    start: float
    stalled_s: float
    heal: FaultWindow
    resumed: bool


class _StallTracker:
    """Follows one client's records and measures each period in which it had a connection open and
    moves outstanding but got no acknowledgement.

    ``deadline`` is the stretched failover deadline, ``base_deadline`` the scenario's own; ``heals``
    are the run's healed faults, to tell a stall that a failover ended from one the heal ended."""

    def __init__(
        self,
        client: str,
        deadline: float,
        lo: float,
        hi: float,
        base_deadline: float | None = None,
        heals: list[FaultWindow] | None = None,
    ) -> None:
        self.client = client
        self.deadline = deadline
        self.base_deadline = deadline if base_deadline is None else base_deadline
        self.heals = heals or []
        self.lo, self.hi = lo, hi
        self.outstanding: set[int] = set()
        self.connected = False
        self.waiting_since: float | None = None
        self.waiting_from: Record | None = None
        self.welcomes_while_waiting: list[float] = []
        self.violations: list[Violation] = []
        self.through_heal: list[StallThroughHeal] = []

    def _start_waiting(self, t: float, rec: Record) -> None:
        if self.waiting_since is None and self.connected and self.outstanding:
            self.waiting_since, self.waiting_from = t, rec
            self.welcomes_while_waiting = []

    def _heal_without_failover(self, since: float, t: float) -> FaultWindow | None:
        """A fault whose removal began inside this stall with no welcome (a new upstream) before."""
        return next(
            (
                w
                for w in self.heals
                if since < w.heal_start <= t and not any(at < w.heal_start for at in self.welcomes_while_waiting)
            ),
            None,
        )

    def _stop_waiting(self, t: float, ended_by: Record | dict[str, Any]) -> None:
        if self.waiting_since is None:
            return
        stalled = _clipped(self.waiting_since, t, self.lo, self.hi)
        resumed = is_op(ended_by, "ok", "move")
        # Ended by the client's own stop (or the run's end), not by the balancer closing it.
        never_resumed = (
            is_op(ended_by, "event", "stopped")
            or (is_op(ended_by, "event", "conn_close") and ended_by.get("initiator") == "client")
            or "end_of_run" in ended_by
        )
        heal = self._heal_without_failover(self.waiting_since, t) if resumed or never_resumed else None
        if heal is not None and self.base_deadline < stalled <= self.deadline:
            # Within the stretched deadline only: the stretch is for a slow failover, and none came.
            self.through_heal.append(StallThroughHeal(self.client, self.waiting_since, stalled, heal, resumed))
        elif stalled > self.deadline:
            self.violations.append(
                Violation(
                    CLEAN_FAILOVER,
                    f"client {self.client} waited {stalled:.3f} s for an acknowledgement with "
                    f"{len(self.outstanding)} move(s) outstanding, from "
                    f"{fmt_t(self.waiting_since)} (failover_deadline_s {self.deadline:g})",
                    evidence(
                        [
                            self.waiting_from or {},
                            {"outstanding": sorted(self.outstanding)},
                            ended_by,
                        ]
                    ),
                )
            )
        self.waiting_since, self.waiting_from = None, None

    def _settle(self, rec: Record) -> None:
        seq = integer(rec.get("seq"))
        if seq is not None:
            self.outstanding.discard(seq)

    def feed(self, rec: Record) -> None:
        t = time_of(rec)
        if t is None:
            return
        if is_op(rec, "event", "welcome"):
            # A new upstream for this connection: a failover, the build's own if it came before a heal.
            if self.waiting_since is not None:
                self.welcomes_while_waiting.append(t)
        elif is_op(rec, "event", "conn_open"):
            self.connected = True
            self._start_waiting(t, rec)
        elif is_op(rec, "invoke", "move"):
            # A move can only be sent on an open connection, whether or not conn_open survived.
            self.connected = True
            seq = integer(rec.get("seq"))
            if seq is not None:
                self.outstanding.add(seq)
            self._start_waiting(t, rec)
        elif is_op(rec, "ok", "move"):
            self._stop_waiting(t, rec)
            self._settle(rec)
            self._start_waiting(t, rec)
        elif is_op(rec, "info", "move"):
            # Indeterminate: the client gave up on it with its connection; if it is re-sent, the
            # re-send's invoke makes it outstanding again.
            self._settle(rec)
            if not self.outstanding:
                self._stop_waiting(t, rec)
        elif is_op(rec, "event", "conn_close") or is_op(rec, "event", "stopped"):
            self._stop_waiting(t, rec)
            self.connected = False

    def finish(self, run_end: float | None) -> None:
        if run_end is not None:
            self._stop_waiting(run_end, {"end_of_run": run_end})


def describe_through_heal(stalls: list[StallThroughHeal], base_deadline: float, slow: Slowness) -> str:
    worst = max(stalls, key=lambda s: s.stalled_s)
    after = "resumed only after it" if worst.resumed else "never resumed"
    return (
        f"inconclusive: {len(stalls)} stall(s) with no failover before the heal, longer than the "
        f"unstretched failover_deadline_s {base_deadline:g} (worst: client {worst.client} got no "
        f"acknowledgement for {worst.stalled_s:.3f} s from {fmt_t(worst.start)}, no failover before "
        f"the heal of {worst.heal.label} began at {fmt_t(worst.heal.heal_start)}, {after}); only the "
        f"slowness stretch x{slow.scale:.2f} would pass it ({slow.describe()})"
    )


@guarded(CLEAN_FAILOVER)
def check_clean_failover(run: Run) -> CheckResult:
    clients = run.client_histories()
    if not clients:
        return finish(CLEAN_FAILOVER, [], checked=False, notes=["no clients in the history"])
    violations: list[Violation] = []
    notes: list[str] = []
    allowed_codes = _expected_close_codes(run)
    slow = slowness(run.history)
    base_deadline = run.run_meta.expect_number("failover_deadline_s", DEFAULT_FAILOVER_DEADLINE_S)
    deadline = base_deadline * slow.scale
    warmup_end, deadline_end = run.run_meta.phase("warmup_end"), run.run_meta.phase("deadline_end")
    lo = warmup_end if warmup_end is not None else float("-inf")
    hi = deadline_end if deadline_end is not None else float("inf")
    run_end = run_end_time(run)
    heals = [w for w in fault_windows(run.nemesis(), run_end) if w.heal_start < float("inf")]
    through_heal: list[StallThroughHeal] = []
    unknown_initiator = 0
    # Keepalive closes that the client's own starved swarm process explains are the harness's
    # failure: not judged here (the verdict says inconclusive, naming the stall).
    excused = run_excused_keepalive_closes(run)
    excused_closes = {id(e.close) for e in excused}
    # On a machine too slow to judge timing, the timing findings are inconclusive, not failures.
    set_aside = 0
    balancer_survived = run.run_meta.final.get("balancer_alive") is True

    for client, recs in clients.items():
        tracker = _StallTracker(client, deadline, lo, hi, base_deadline, heals)
        stopped: Record | None = None
        for rec in recs:
            tracker.feed(rec)
            if is_op(rec, "event", "stopped"):
                stopped = rec
            if not is_op(rec, "event", "conn_close"):
                continue
            initiator = rec.get("initiator")
            if initiator not in ("client", "remote"):
                unknown_initiator += 1
            if initiator != "remote":
                continue
            code = integer(rec.get("code"))
            if code in allowed_codes or id(rec) in excused_closes:
                continue
            if slow.too_slow and (is_keepalive_close(rec) or (code == ABNORMAL_CLOSURE and balancer_survived)):
                # Keepalive timeouts, and the aborts of a live balancer's send and close deadlines,
                # are timing too; a balancer that died still fails here.
                set_aside += 1
                continue
            if code == TRY_AGAIN_LATER:
                message = (
                    f"client {client} conn {rec.get('conn')} closed by the balancer with 1013 "
                    f"(no failover allowed) at {fmt_t(time_of(rec))}, but this scenario does not "
                    "expect 1013"
                )
            else:
                message = (
                    f"connection dropped: client {client} conn {rec.get('conn')} closed remotely "
                    f"with code {rec.get('code')!r} reason {rec.get('reason')!r} at "
                    f"{fmt_t(time_of(rec))}"
                )
            violations.append(Violation(CLEAN_FAILOVER, message, evidence([rec])))
        tracker.finish(run_end)
        through_heal.extend(tracker.through_heal)
        if slow.too_slow:
            set_aside += len(tracker.violations)
        else:
            violations.extend(tracker.violations)

        if stopped is None:
            last = recs[-1] if recs else {}
            violations.append(
                Violation(
                    CLEAN_FAILOVER,
                    f"client never stopped: {client} has no `stopped` record (last record at {fmt_t(time_of(last))})",
                    evidence([last]),
                )
            )
        elif stopped.get("hung") is True and slow.too_slow:
            set_aside += 1  # its close handshake has a deadline too
        elif stopped.get("hung") is True:
            violations.append(
                Violation(
                    CLEAN_FAILOVER,
                    f"client hung: {client} did not finish closing within its deadline",
                    evidence([stopped]),
                )
            )

    if unknown_initiator:
        notes.append(f"{unknown_initiator} conn_close record(s) without a known initiator")
    notes.append(
        f"deadline {deadline:g} s; expected close codes {sorted(allowed_codes) or 'none'}"
        + ("" if warmup_end is None and deadline_end is None else "; stalls counted within phases")
    )
    # Only rejections just before a drop explain it; others are health probes and the like.
    drops = [t for v in violations for r in records(v.evidence) if (t := time_of(r)) is not None]
    rejected = [
        r
        for r in rejected_handshakes(run)
        if (t := time_of(r)) is not None
        and any(t - REJECTION_EXPLAINS_S <= d <= t + REJECTION_EXPLAINS_S for d in drops)
    ]
    if rejected:
        # What the balancer's close code hides: the backend refused the handshake it forwarded.
        first = rejected[0]
        notes.append(
            f"the backends rejected {len(rejected)} handshake(s), first: {first.get('server')} answered "
            f"HTTP {first.get('status')} {str(first.get('reason') or '').strip()!r} to path {first.get('path')!r}"
        )
    # A failover is only judged if some client was attached to a server at all; drops and hangs
    # seen without one still fail, but nothing attached is nothing checked, never a pass.
    attached = any(is_op(r, "event", "welcome") for recs in clients.values() for r in recs)
    if not attached:
        notes.append("no client was ever attached to a server (no welcome), so no failover could be judged")
    if excused:
        notes.insert(0, "inconclusive: " + describe_excused(excused))
    _note_slowness(notes, slow, set_aside)
    if through_heal:
        notes.insert(0, describe_through_heal(through_heal, base_deadline, slow))
    # With excused findings and nothing else wrong, the run did not show the build doing right.
    return finish(
        CLEAN_FAILOVER, violations, checked=attached and not (excused or set_aside or through_heal), notes=notes
    )


def rejected_handshakes(run: Run) -> list[Record]:
    """Handshakes the backends answered with an HTTP error (their journals' ``rejected`` events)."""
    journals = run.journals if isinstance(run.journals, dict) else {}
    out = [r for recs in journals.values() for r in records(recs) if r.get("event") == "rejected"]
    return sorted(out, key=lambda r: time_of(r) or 0.0)


def _note_slowness(notes: list[str], slow: Slowness, set_aside: int) -> None:
    if set_aside:
        notes.insert(0, f"inconclusive: {set_aside} timing finding(s) not judged: {slow.describe()}")
    elif slow.scale > 1.0 or slow.too_slow:
        notes.append(slow.describe())


@guarded(RECOVERS)
def check_recovers_after_heal(run: Run) -> CheckResult:
    """Every client alive after heal_end gets an acknowledged move within `recovery_deadline_s` of
    the heal (or of joining, for a client that joined later).

    The run may end sooner than that: the runner stops clients at `deadline_end`. A client without
    an ok is then judged against the time it was observed, ``min(recovery_deadline_s,
    max(deadline_end, its stop) - start)``: not recovering within the whole window the run gave it
    is a violation, never a free pass. Only a client the run gave less than
    :data:`MIN_RECOVERY_WINDOW_S` before `deadline_end` is skipped (noted). A client that stopped on
    its own before `deadline_end` is judged against what the run allowed, not against its own
    shorter life: giving up without playing again is not recovering.
    """
    heal_end = run.run_meta.phase("heal_end")
    if heal_end is None:
        return finish(RECOVERS, [], checked=False, notes=["no phases.heal_end in run.json"])
    slow = slowness(run.history)
    deadline = run.run_meta.expect_number("recovery_deadline_s", DEFAULT_RECOVERY_DEADLINE_S) * slow.scale
    deadline_end = run.run_meta.phase("deadline_end")
    violations: list[Violation] = []
    notes: list[str] = []
    judged = 0
    set_aside = 0
    too_short: list[str] = []
    shortened = 0

    for client, recs in run.client_histories().items():
        if not recs:
            continue
        first_t = time_of(recs[0])
        stopped_t = next((time_of(r) for r in recs if is_op(r, "event", "stopped")), None)
        if first_t is None or (stopped_t is not None and stopped_t <= heal_end):
            continue  # gone before the heal: nothing to recover
        # A client that joined after the heal gets the same deadline from its own start.
        start = max(heal_end, first_t)
        # An ok counts as long as it came within the recovery deadline, whenever the client was
        # stopped; the deadline is only shortened for judging a client that never got one.
        due = start + deadline
        acks = [r for r in recs if is_op(r, "ok", "move") and start <= (time_of(r) or float("-inf")) <= due]
        if acks:
            judged += 1
            continue
        # How long the run let this client try: until deadline_end, where the runner stops clients;
        # without that phase, until the client stopped (or was last seen).
        life_end = stopped_t if stopped_t is not None else time_of(recs[-1])
        allowed_end = deadline_end if deadline_end is not None else life_end
        if allowed_end is None or allowed_end - start < MIN_RECOVERY_WINDOW_S:
            too_short.append(client)
            continue
        # A client seen alive past deadline_end was observed for longer than that: say so.
        observed_end = max(allowed_end, life_end) if life_end is not None else allowed_end
        effective = min(deadline, observed_end - start)
        if slow.too_slow or (slow.scale > 1.0 and effective < deadline):
            # The run's phases are not stretched: it did not give this client the deadline that
            # the machine's slowness calls for, so not recovering in it proves nothing.
            set_aside += 1
            continue
        if effective < deadline:
            shortened += 1
        judged += 1
        what = "the heal" if start == heal_end else "joining"
        if effective < deadline:
            within = (
                f"did not play again within the {effective:.3g} s the run allowed it after {what} at "
                f"{fmt_t(start)} (recovery_deadline_s {deadline:g} is longer than the run allowed: "
                + (f"deadline_end {fmt_t(deadline_end)})" if deadline_end is not None else "no deadline_end)")
            )
        else:
            within = f"got no acknowledged move within {deadline:g} s of {what} at {fmt_t(start)}"
        why = (
            f"stopped at {fmt_t(stopped_t)}"
            if stopped_t is not None and stopped_t < start + effective
            else "no ok move in that window"
        )
        violations.append(
            Violation(
                RECOVERS,
                f"client {client} {within} ({why})",
                evidence(
                    [
                        {
                            "client": client,
                            "heal_end": heal_end,
                            "window_start": start,
                            "recovery_deadline_s": deadline,
                            "effective_deadline_s": effective,
                            "deadline_end": deadline_end,
                        },
                        *[r for r in recs if start <= (time_of(r) or 0.0) <= due][-5:],
                    ]
                ),
            )
        )

    if too_short:
        notes.append(
            f"not judged, the run gave them less than {MIN_RECOVERY_WINDOW_S:g} s after the heal "
            "(or joining) before deadline_end: " + ", ".join(too_short)
        )
    notes.append(f"recovery deadline {deadline:g} s after heal_end {fmt_t(heal_end)}")
    if shortened:
        notes.append(
            f"{shortened} client(s) without an ok judged against min(recovery_deadline_s, the time the run "
            "allowed them): the run ended before their deadline"
        )
    _note_slowness(notes, slow, set_aside)
    return finish(RECOVERS, violations, checked=judged > 0 and not set_aside, notes=notes)
