"""`single_upstream`: a client connection is attached to one backend at a time, and no move is
delivered to the backends more often than the client sent it (plus the one re-send the contract
allows at a failover).

Attachment is judged from the backends' journals: each `welcome` a client connection received
names a backend connection; those connections' open..close intervals must not overlap by more than
``meta.expect.upstream_overlap_tolerance_s`` (default 0.25 s: one close handshake on loopback).
On a slow machine that tolerance is stretched like any timing deadline (``Slowness.scale``); on a
machine too slow, an overlap within the tolerance times the measured slowness is not judged
("inconclusive"). A flake-check run at slowness x7.2 saw 12 clients attached to the old and the new
backend for 0.28-0.30 s: the balancer had declared the old upstream lost 0.24 s before the new
one opened, and the starved old backend journaled the close late.

An interval ends at the connection's `close` record, or at the backend's next `start` or `stop`
record (the process ended; it could not journal a close), or else at the end of the run.

A journal only tells the truth about a connection while its backend and the link to it are
healthy: a killed, paused or partitioned backend keeps a dead connection "open" in its journal
while the balancer legitimately moves on, and a slowed link delays the close. So the fault windows
of the two backends involved (``harness.analysis.fault_windows``, of the faults whose target is that
backend) are *excused gaps*: overlap inside
them is not counted. Overlap after the heal is: by then the old backend can journal the close, so a
connection it still shows open (no `close`, no later `start`/`stop`) while the same client
connection is attached elsewhere is a double attachment. The tolerance applies to each stretch of
counted overlap, i.e. from the new welcome's open, or from a heal, the old connection has
`tolerance` seconds to be seen closed.

Delivery is judged by counting, per (client, seq), the backends' `recv` records of kind move. The
most the contract ("Delivery semantics across a failover") allows is one delivery per send (each
send or re-send is an `invoke`) plus one per server transition at which that move was in flight: a
transition is a welcome from a different backend connection within the same client connection, and
the move was in flight if it was invoked on that client connection before the welcome and not
acknowledged (`ok`) by then. That move may have reached the old backend and be re-sent once by the
relay on the new one. A move sent after the transition and delivered to two backends is the
two-upstreams defect and fails.

A fault that repeats frames toward the backends (``frame_duplicate`` upstream: a middlebox
sending one message twice) makes a backend receive a move once more than anyone sent it, which no
relay can prevent. Each frame such a fault repeated (its evidence: one per connection its upstream
toxic touched) allows one extra delivery of one move, received while the fault was in place (or
``REPEAT_GRACE_S`` after its heal, for a copy still on its way); never two extra of the same move.
The counters are final: the heal reads them once the toxic is removed (``ToxicKind.heal``), so an
extra delivery past the count is a failure, also during a heal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.analysis import fault_evidence, fault_windows, run_end_time, slowness, windows_by_target
from harness.faults.model import KINDS
from harness.history import Record, Run
from harness.records import INCONCLUSIVE_NOTE, num

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
from .journal import UpstreamConn, index_upstreams

NAME = "single_upstream"
DEFAULT_OVERLAP_TOLERANCE_S = 0.25
DELIVERY_RULE = "deliveries <= sends + 1 per server transition with the move in flight"
#: A frame repeated just before a heal reaches its backend at most this long after it.
REPEAT_GRACE_S = 1.0

Window = tuple[float, float]


def _backend_names(uc: UpstreamConn) -> set[str]:
    names = {uc.journal}
    server = uc.open_record.get("server")
    if isinstance(server, str):
        names.add(server)
    return names


def _merged(windows: Iterable[Window]) -> list[Window]:
    out: list[Window] = []
    for lo, hi in sorted(windows):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _counted_stretches(lo: float, hi: float, excused: list[Window]) -> list[Window]:
    """The parts of [lo, hi] outside the (merged, sorted) excused windows."""
    stretches: list[Window] = []
    cursor = lo
    for w_lo, w_hi in excused:
        if w_hi <= cursor:
            continue
        if w_lo >= hi:
            break
        if w_lo > cursor:
            stretches.append((cursor, w_lo))
        cursor = max(cursor, w_hi)
        if cursor >= hi:
            break
    if cursor < hi:
        stretches.append((cursor, hi))
    return stretches


@dataclass
class _Overlap:
    lo: float
    hi: float
    excused: list[Window] = field(default_factory=list)
    stretches: list[Window] = field(default_factory=list)

    @property
    def longest(self) -> Window:
        return max(self.stretches, key=lambda s: s[1] - s[0])

    @property
    def excused_s(self) -> float:
        return (self.hi - self.lo) - sum(hi - lo for lo, hi in self.stretches)


def _overlap(a: UpstreamConn, b: UpstreamConn, faults: dict[str, list[Window]], end_of_run: float) -> _Overlap | None:
    end_a, end_b = a.end(), b.end()
    lo = max(a.opened, b.opened)
    hi = min(end_of_run if end_a is None else end_a, end_of_run if end_b is None else end_b)
    if hi <= lo:
        return None
    names = _backend_names(a) | _backend_names(b)
    excused = _merged(w for name in names for w in faults.get(name, []) if w[0] < hi and w[1] > lo)
    return _Overlap(lo, hi, excused, _counted_stretches(lo, hi, excused))


def _overlaps(
    run: Run, violations: list[Violation], notes: list[str], tolerance: float, set_aside_within: float
) -> int:
    """Judges attachment; an overlap past ``tolerance`` but within ``set_aside_within`` is noted
    "inconclusive" instead of failing (the close handshake's time on a machine too slow)."""
    index = index_upstreams(run)
    run_end = run_end_time(run)
    faults = windows_by_target(fault_windows(run.nemesis(), run_end))
    end_of_run = run_end if run_end is not None else float("inf")
    judged_conns = 0
    unmatched = 0
    excused_pairs = 0
    set_aside: list[str] = []
    for client, recs in run.client_histories().items():
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
                for welcome_b, b in attached[i + 1 :]:
                    ov = _overlap(a, b, faults, end_of_run)
                    if ov is None or ov.hi - ov.lo <= tolerance:
                        continue
                    if not ov.stretches or ov.longest[1] - ov.longest[0] <= tolerance:
                        if ov.excused:
                            excused_pairs += 1
                        continue
                    start, stop = ov.longest
                    if stop - start <= set_aside_within:
                        set_aside.append(f"client {client} conn {conn}: {stop - start:.3f} s from {fmt_t(start)}")
                        continue
                    counted = sum(hi - lo for lo, hi in ov.stretches)
                    healed_at = next((w_hi for _, w_hi in ov.excused if w_hi == start), None)
                    violations.append(
                        Violation(
                            NAME,
                            f"client {client} conn {conn} was attached to {a.journal} "
                            f"({a.conn}) and {b.journal} ({b.conn}) at once for {stop - start:.3f} s, "
                            f"from {fmt_t(start)}"
                            + (" (when a fault on the backends had been healed)" if healed_at is not None else "")
                            + (
                                f"; {counted:.3f} s counted in all, {ov.excused_s:.3f} s inside fault "
                                "windows not counted"
                                if ov.excused
                                else ""
                            ),
                            evidence(
                                [
                                    welcome_a,
                                    a.open_record,
                                    {
                                        "journal": a.journal,
                                        "conn": a.conn,
                                        "closed": a.closed,
                                        "process_ended": a.process_ended,
                                        "judged_end": a.end() or end_of_run,
                                    },
                                    welcome_b,
                                    b.open_record,
                                    {
                                        "overlap": [ov.lo, ov.hi],
                                        "excused_fault_windows": [list(w) for w in ov.excused],
                                        "counted": [list(s) for s in ov.stretches],
                                        "tolerance_s": tolerance,
                                    },
                                ]
                            ),
                        )
                    )
    if unmatched:
        notes.append(f"{unmatched} welcome(s) name no backend connection found in the journals")
    if excused_pairs:
        notes.append(f"{excused_pairs} overlap(s) excused: inside fault windows on the backends")
    if set_aside:
        notes.insert(
            0,
            f"{INCONCLUSIVE_NOTE} {len(set_aside)} overlap(s) within {set_aside_within:.3f} s, the close "
            f"handshake's time at the measured slowness, not judged (first: {set_aside[0]})",
        )
    return judged_conns


@dataclass
class _Allowance:
    """Per (client, seq): how often the client sent it, and the transitions it was in flight at."""

    sent: int = 0
    transitions: list[Record] = field(default_factory=list)

    @property
    def allowed(self) -> int:
        return self.sent + len(self.transitions)


def _allowances(run: Run) -> tuple[dict[tuple[str, int], _Allowance], int]:
    out: dict[tuple[str, int], _Allowance] = {}
    transitions = 0
    for client, recs in run.client_histories().items():
        acked: set[int] = set()
        in_flight: dict[str, set[int]] = {}  # client conn -> seqs invoked on it, not yet acked
        attached_to: dict[str, tuple[Any, Any]] = {}  # client conn -> (server, server_conn)
        for rec in recs:
            kind = (rec.get("type"), rec.get("f"))
            conn = str(rec.get("conn"))
            if kind == ("invoke", "move"):
                seq = integer(rec.get("seq"))
                if seq is None:
                    continue
                out.setdefault((client, seq), _Allowance()).sent += 1
                if seq not in acked:
                    in_flight.setdefault(conn, set()).add(seq)
            elif kind == ("ok", "move"):
                seq = integer(rec.get("seq"))
                if seq is not None:
                    acked.add(seq)
                    for pending in in_flight.values():
                        pending.discard(seq)
            elif kind == ("event", "welcome"):
                upstream = (rec.get("server"), rec.get("server_conn"))
                previous = attached_to.get(conn)
                attached_to[conn] = upstream
                if previous is None or previous == upstream:
                    continue
                transitions += 1
                for seq in sorted(in_flight.get(conn, ())):
                    out.setdefault((client, seq), _Allowance()).transitions.append(rec)
    return out, transitions


@dataclass
class _Repeats:
    """Frames that faults repeated toward the backends, and when those faults were in place."""

    budget: int = 0
    windows: list[Window] = field(default_factory=list)
    uncounted: list[str] = field(default_factory=list)  # fault ids whose proxy kept no counters
    used: int = 0

    def take(self, recvs: list[Record]) -> bool:
        """Spends one repeated frame on a move delivered once too often, if its last delivery (the
        copy) fell inside a repeating fault's window."""
        times = [t for t in (time_of(r) for r in recvs) if t is not None]
        if not times:
            return False
        if self.used < self.budget and any(lo <= max(times) <= hi for lo, hi in self.windows):
            self.used += 1
            return True
        return False


def _repeated_frames(run: Run) -> _Repeats:
    repeats = _Repeats()
    nemesis = run.nemesis()
    windows = {w.fault_id: w for w in fault_windows(nemesis, run_end_time(run))}
    for ev in fault_evidence(run):
        kind = KINDS.get(ev.kind)
        if kind is None or not kind.repeats_upstream_frames or ev.fault_id not in windows:
            continue
        if ev.counts is None:
            repeats.uncounted.append(ev.fault_id)
            continue
        frames = sum(
            int(num(counts.get("connections")) or 0)
            for toxic, counts in ev.counts.items()
            if toxic.endswith("_upstream")
        )
        w = windows[ev.fault_id]
        if any(toxic.endswith("_upstream") for toxic in ev.counts):
            repeats.budget += frames
            repeats.windows.append((w.start, w.end + REPEAT_GRACE_S))
    return repeats


def _last_time(recvs: list[Record]) -> float:
    return max((t for t in (time_of(r) for r in recvs) if t is not None), default=math.inf)


def _duplicate_deliveries(run: Run, violations: list[Violation], notes: list[str]) -> int:
    allowances, transitions = _allowances(run)
    repeats = _repeated_frames(run)

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

    # Repeated frames explain copies in the order the copies arrived, so that which copies a
    # limited count explains does not depend on the order of the journals.
    once_too_often = [
        key for key, recvs in delivered.items() if len(recvs) == allowances.get(key, _Allowance()).allowed + 1
    ]
    explained = {
        key for key in sorted(once_too_often, key=lambda k: _last_time(delivered[k])) if repeats.take(delivered[key])
    }
    resent_in_flight = 0
    for (client, seq), recvs in sorted(delivered.items()):
        allowance = allowances.get((client, seq), _Allowance())
        if len(recvs) <= allowance.allowed:
            resent_in_flight += len(recvs) > allowance.sent
            continue
        if (client, seq) in explained:
            continue
        if allowance.transitions:
            at = ", ".join(fmt_t(time_of(w)) for w in allowance.transitions)
            rule = (
                f"; it was in flight at {len(allowance.transitions)} server transition(s) (welcome at {at}), "
                f"so at most {allowance.allowed} deliveries are allowed"
            )
        else:
            rule = "; it was not in flight at any server transition, so no failover re-send is allowed"
        violations.append(
            Violation(
                NAME,
                f"client {client} move {seq} was delivered to backends {len(recvs)} times "
                f"but sent {allowance.sent} time(s){rule} (rule: {DELIVERY_RULE})",
                evidence([*recvs, *allowance.transitions]),
            )
        )
    if delivered:
        notes.append(
            f"delivery rule: {DELIVERY_RULE} ({transitions} transition(s) seen; {resent_in_flight} "
            "in-flight move(s) delivered more often than sent, within that allowance)"
        )
    if repeats.budget:
        notes.append(
            f"{repeats.used} of {repeats.budget} frame(s) repeated toward the backends by a fault "
            "explain one extra delivery each"
        )
    if repeats.uncounted:
        notes.append(
            f"fault(s) {', '.join(repeats.uncounted)} repeat frames but their proxy kept no counters, "
            "so no extra delivery is allowed for them"
        )
    if unattributed:
        notes.append(f"{unattributed} journal move recv(s) without client or seq not counted")
    return len(delivered)


@guarded(NAME)
def check_single_upstream(run: Run) -> CheckResult:
    if not run.journals:
        return finish(NAME, [], checked=False, notes=["no backend journals"])
    tolerance = run.run_meta.expect_number("upstream_overlap_tolerance_s", DEFAULT_OVERLAP_TOLERANCE_S)
    # The tolerance is a close handshake's time, which a slow machine stretches like any deadline
    # (docs/architecture.md, "measured slowness"); on a machine too slow, an overlap that the
    # measured slowness could still explain is not judged either way.
    slow = slowness(run.history)
    stretched = tolerance * slow.scale
    set_aside_within = tolerance * slow.factor if slow.too_slow and slow.factor else stretched
    violations: list[Violation] = []
    notes: list[str] = []
    judged_conns = _overlaps(run, violations, notes, stretched, set_aside_within)
    judged_moves = _duplicate_deliveries(run, violations, notes)
    set_aside = any(n.startswith(INCONCLUSIVE_NOTE) for n in notes)
    if slow.scale > 1.0:
        notes.append(f"overlap tolerance {tolerance:g} s x{slow.scale:.2f}: {slow.describe()}")
    return finish(NAME, violations, checked=bool(judged_conns or judged_moves) and not set_aside, notes=notes)
