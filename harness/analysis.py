"""Run analysis: the facts about a recorded run that more than one reader needs, computed once.

The checkers, the report, the demo and the runner's progress tracking all ask the same questions
of a history: who is a client, what did each client see, which server was it attached to and
when, when was a fault in force, how long did each failover stall a player, who has played since
a moment. Each answer has its one definition here. Pure: records in, facts out; no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.records import Record, mapping, num, time_of

if TYPE_CHECKING:
    from harness.history import Run

# Processes in the history that are not game clients (docs/architecture.md, "History records").
NON_CLIENT_PROCESSES = frozenset({"nemesis", "monitor", "runner"})
# Any of these `f` values marks a process as a game client; the runner or a swarm supervisor may
# someday write other records, and those must not be judged (or drawn) as clients.
CLIENT_FUNCTIONS = frozenset({"conn_open", "conn_fail", "welcome", "resume", "move", "reply", "conn_close", "stopped"})


def _records(items: Iterable[Any]) -> list[Record]:
    return [r for r in items if isinstance(r, Mapping)]  # type: ignore[misc]


# -- clients --------------------------------------------------------------------------------------


def client_process(rec: Mapping[str, Any]) -> str | None:
    """The client a record shows to exist, or None: the one definition of "who is a client"."""
    process = rec.get("process")
    if isinstance(process, str) and process not in NON_CLIENT_PROCESSES and rec.get("f") in CLIENT_FUNCTIONS:
        return process
    return None


def client_ids(history: Iterable[Any]) -> list[str]:
    return sorted({p for p in (client_process(r) for r in _records(history)) if p is not None})


def client_histories(history: Iterable[Any]) -> dict[str, list[Record]]:
    """Each client's records in time order; records without a readable time are dropped because
    every client rule is about order in time."""
    recs = _records(history)
    out: dict[str, list[Record]] = {c: [] for c in client_ids(recs)}
    for r in recs:
        p = r.get("process")
        if isinstance(p, str) and p in out and time_of(r) is not None:
            out[p].append(r)
    for client_recs in out.values():
        client_recs.sort(key=lambda r: time_of(r) or 0.0)
    return out


def run_end_time(run: Run) -> float | None:
    """The latest time anything was recorded: where an unfinished interval is cut off."""
    meta = run.run_meta
    candidates = [meta.phase("quiesce_end"), meta.ended]
    candidates += [time_of(r) for r in _records(run.history)]
    journals = run.journals if isinstance(run.journals, Mapping) else {}
    for journal in journals.values():
        candidates += [time_of(r) for r in _records(journal)]
    known = [c for c in candidates if c is not None]
    return max(known) if known else None


# -- attachment -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """One stretch of a client connection attached to one server, as the client saw it: from a
    welcome to the next welcome, close or stop (or the end of the run)."""

    conn: Any
    server: str
    start: float
    end: float
    #: A welcome that was not the first on its connection: the balancer moved it in place.
    in_place_failover: bool


def attachments(client_records: Iterable[Any], run_end: float) -> list[Attachment]:
    out: list[Attachment] = []
    current: tuple[float, str, Any, bool] | None = None
    welcomes_in_conn: dict[Any, int] = {}
    for rec in _records(client_records):
        t = num(rec.get("t"))
        f = rec.get("f")
        if t is None or rec.get("type") != "event" or f not in ("welcome", "conn_close", "stopped"):
            continue
        if current is not None:
            start, server, conn, moved = current
            out.append(Attachment(conn, server, start, t, moved))
            current = None
        if f == "welcome":
            conn = rec.get("conn")
            welcomes_in_conn[conn] = welcomes_in_conn.get(conn, 0) + 1
            current = (t, str(rec.get("server") or "?"), conn, welcomes_in_conn[conn] > 1)
    if current is not None:
        start, server, conn, moved = current
        out.append(Attachment(conn, server, start, max(start, run_end), moved))
    return out


# -- faults ---------------------------------------------------------------------------------------


@dataclass
class FaultWindow:
    """When a nemesis fault was in force: from its apply's invoke to its heal's completion (ok,
    fail or info: the heal is over either way). A restart has no heal; its window ends when its
    apply completes, i.e. the process is back. A fault never healed runs to the end of the run."""

    fault_id: str
    kind: str
    targets: set[str] = field(default_factory=set)
    start: float = math.inf
    end: float = math.inf
    healed: bool = False

    @property
    def label(self) -> str:
        target = ",".join(sorted(self.targets)) or "?"
        return f"{self.kind}:{target}" + ("" if self.healed or self.kind == "restart" else " (no heal)")


def _fault_targets(fault: Mapping[str, Any]) -> set[str]:
    target = fault.get("target")
    if isinstance(target, str):
        return {target}
    if isinstance(target, list):
        return {t for t in target if isinstance(t, str)}
    return set()


def fault_windows(nemesis_records: Iterable[Any], run_end: float | None) -> list[FaultWindow]:
    windows: dict[str, FaultWindow] = {}
    ends: dict[str, float] = {}
    anonymous = 0
    for rec in _records(nemesis_records):
        t = time_of(rec)
        if t is None or rec.get("process", "nemesis") != "nemesis":
            continue
        fault_id = rec.get("fault_id")
        if fault_id is None:
            # Without an id an apply cannot be paired with its heal: treat it as never healed.
            anonymous += 1
            fault_id = f"anonymous-{anonymous}"
        key = str(fault_id)
        done = rec.get("type") in ("ok", "info", "fail")
        if rec.get("f") == "apply":
            fault = mapping(rec.get("fault"))
            w = windows.setdefault(key, FaultWindow(key, str(fault.get("kind", "?"))))
            w.start = min(w.start, t)
            w.targets |= _fault_targets(fault)
            if w.kind == "restart" and done:
                ends[key] = max(t, ends.get(key, t))
                w.healed = True
        elif rec.get("f") == "heal" and done and key in windows:
            ends[key] = max(t, ends.get(key, t))
            windows[key].healed = True
    open_end = run_end if run_end is not None else math.inf
    for key, w in windows.items():
        w.end = max(w.start, ends.get(key, open_end))
    return sorted(windows.values(), key=lambda w: (w.start, w.fault_id))


def windows_by_target(windows: Iterable[FaultWindow]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for w in windows:
        for target in w.targets:
            out.setdefault(target, []).append((w.start, w.end))
    return out


# -- failover gaps --------------------------------------------------------------------------------


def failover_gaps_ms(client_records: Iterable[Any]) -> list[float]:
    """One client's failover gaps: milliseconds from its last ack before a server transition to
    its first ack after it.

    A transition is a ``welcome`` from a different server than the client's previous one (inside
    one connection or across a reconnect). Several transitions with no ack in between (a flapping
    primary) are one gap: what the player saw is one stall. A transition never followed by an ack
    has no gap to measure (the liveness checkers judge that), and neither does one before the
    client's first ack.
    """
    gaps: list[float] = []
    last_server: str | None = None
    last_ack: float | None = None
    pending = False
    for rec in _records(client_records):
        t = num(rec.get("t"))
        if t is None:
            continue
        if rec.get("type") == "event" and rec.get("f") == "welcome":
            server = str(rec.get("server"))
            if last_server is not None and server != last_server and last_ack is not None:
                pending = True
            last_server = server
        elif rec.get("type") == "ok" and rec.get("f") == "move":
            if pending and last_ack is not None:
                gaps.append((t - last_ack) * 1000.0)
                pending = False
            last_ack = t
    return gaps


def run_failover_gaps(run: Run) -> list[float]:
    """Every client's failover gaps in one run, clients in name order."""
    return [g for recs in client_histories(run.history).values() for g in failover_gaps_ms(recs)]


# -- progress -------------------------------------------------------------------------------------


class Progress:
    """Who has played since a moment, fed one record at a time while a run is under way."""

    def __init__(self) -> None:
        self.clients: set[str] = set()
        self.stopped: set[str] = set()
        self.last_ok: dict[str, float] = {}

    def observe(self, rec: Mapping[str, Any]) -> None:
        client = client_process(rec)
        if client is None:
            return
        self.clients.add(client)
        if rec.get("type") == "ok" and rec.get("f") == "move":
            t = num(rec.get("t"))
            if t is not None:
                self.last_ok[client] = max(t, self.last_ok.get(client, t))
        elif rec.get("f") == "stopped":
            self.stopped.add(client)

    def all_played_since(self, t: float) -> bool:
        """Every client still playing has had a move acknowledged after ``t`` (and there is one)."""
        live = self.clients - self.stopped
        return bool(live) and all(self.last_ok.get(c, -math.inf) > t for c in live)


# -- evidence that the run could judge anything ----------------------------------------------------

#: The harness' own processes; one of them exiting when no fault stopped it leaves the run unable
#: to say anything about the build (a swarm is named ``swarm-<prefix>-…``).
HARNESS_PROCESSES = ("primary", "secondary", "toxiproxy")
#: Fault kinds that stop a process on purpose: its exit inside their window is the nemesis' doing.
STOPPING_KINDS = frozenset({"kill", "terminate", "restart"})
#: How long after a stopping fault's window the monitor may still be reporting its exit.
EXIT_REPORT_SLACK_S = 2.0


@dataclass(frozen=True)
class ProcessExit:
    """A harness process that ended while a run was under way, as the runner's monitor saw it."""

    name: str
    pid: int | None
    exit_code: int | None
    t: float

    def describe(self) -> str:
        code = "?" if self.exit_code is None else str(self.exit_code)
        signalled = self.exit_code is not None and self.exit_code < 0
        how = f"killed by signal {-(self.exit_code or 0)}" if signalled else f"exit {code}"
        return f"harness process {self.name} (pid {self.pid}) ended ({how}) and no fault stopped it"


def process_exits(history: Iterable[Any]) -> list[ProcessExit]:
    out = []
    for rec in _records(history):
        t = time_of(rec)
        if rec.get("f") != "process_exit" or t is None:
            continue
        pid, code = rec.get("pid"), rec.get("exit_code")
        out.append(
            ProcessExit(
                str(rec.get("name") or "?"),
                pid if isinstance(pid, int) else None,
                code if isinstance(code, int) and not isinstance(code, bool) else None,
                t,
            )
        )
    return sorted(out, key=lambda e: e.t)


def unexpected_exits(run: Run) -> list[ProcessExit]:
    """Harness processes that ended with no stopping fault (kill, terminate, restart) on them."""
    windows = [w for w in fault_windows(run.history, run_end_time(run)) if w.kind in STOPPING_KINDS]

    def stopped_by_nemesis(e: ProcessExit) -> bool:
        return any(e.name in w.targets and w.start <= e.t <= w.end + EXIT_REPORT_SLACK_S for w in windows)

    return [e for e in process_exits(run.history) if not stopped_by_nemesis(e)]


def clients_played_by(history: Iterable[Any], t: float) -> list[str]:
    """The clients that completed a game exchange (a move acknowledged) at or before ``t``."""
    played = set()
    for rec in _records(history):
        client = client_process(rec)
        when = time_of(rec)
        if client and rec.get("type") == "ok" and rec.get("f") == "move" and when is not None and when <= t:
            played.add(client)
    return sorted(played)


@dataclass(frozen=True)
class StepEvidence:
    """Whether one applied fault touched anything. ``touched`` is None when the run holds no
    evidence either way (a process fault: the signal itself is the effect)."""

    fault_id: str
    kind: str
    targets: tuple[str, ...]
    fault: dict[str, Any]
    touched: bool | None
    why: str


def _journal_busy(journal: Iterable[Any], start: float, end: float) -> bool:
    """A game connection to this backend was open at some moment in [start, end]."""
    opened: dict[Any, float] = {}
    closed: dict[Any, float] = {}
    for rec in _records(journal):
        t = time_of(rec)
        if t is None:
            continue
        if rec.get("event") == "open":
            opened[rec.get("conn")] = t
        elif rec.get("event") == "close":
            closed[rec.get("conn")] = t
        elif rec.get("event") in ("recv", "send") and start <= t <= end:
            return True
    return any(t_open <= end and closed.get(conn, math.inf) >= start for conn, t_open in opened.items())


def fault_evidence(run: Run) -> list[StepEvidence]:
    """Per applied fault, whether it touched any game traffic: a link fault on a backend's link
    touched something if a game connection to that backend was open during its window; on the
    clients' link (``lb``), if a client was attached. Process faults are not judged here (None).

    This is the hook the nemesis' own evidence (toxic counters, signal results) plugs into; until
    then the journals and the client histories are the evidence.
    """
    run_end = run_end_time(run)
    end_default = run_end if run_end is not None else math.inf
    journals = run.journals if isinstance(run.journals, Mapping) else {}
    clients = client_histories(run.history)
    applied: dict[str, dict[str, Any]] = {}
    for rec in _records(run.history):
        if rec.get("process") == "nemesis" and rec.get("f") == "apply" and rec.get("type") == "ok":
            applied[str(rec.get("fault_id"))] = mapping(rec.get("fault"))
    out: list[StepEvidence] = []
    for w in fault_windows(run.history, run_end):
        if w.fault_id not in applied:
            continue  # never applied: nothing to judge
        fault = applied[w.fault_id]
        end = w.end if math.isfinite(w.end) else end_default
        targets = tuple(sorted(w.targets))
        touched: bool | None = None
        why = "a process fault acts on its process; no traffic evidence is needed"
        if w.kind not in ("kill", "terminate", "pause", "restart"):
            busy = []
            for target in targets:
                if target == "lb":
                    busy.append(any(a.start <= end and a.end >= w.start for recs in clients.values()
                                    for a in attachments(recs, end_default)))  # fmt: skip
                else:
                    busy.append(_journal_busy(journals.get(target, []), w.start, end))
            touched = any(busy)
            origin = run.run_meta.started
            span = (
                f"{w.start:.3f} to {end:.3f}"
                if origin is None
                else f"t+{w.start - origin:.3f}s to t+{end - origin:.3f}s"  # as the checkers' messages
            )
            why = (
                f"game traffic crossed {','.join(targets)} during {span}"
                if touched
                else f"no game connection crossed {','.join(targets)} during its window {span}"
            )
        out.append(StepEvidence(w.fault_id, w.kind, targets, fault, touched, why))
    return out


# -- the smoke gate -------------------------------------------------------------------------------


@dataclass
class SmokeFacts:
    """What a few clients saw when they tried to play through a build: the smoke gate's evidence."""

    clients: int = 0
    played: list[str] = field(default_factory=list)
    #: Connections whose WebSocket handshake completed.
    opened: int = 0
    welcomed: int = 0
    #: Why connecting failed, most frequent first, with counts ("InvalidStatus: … HTTP 503").
    connect_errors: list[tuple[str, int]] = field(default_factory=list)
    #: Remote close codes and reasons, most frequent first, with counts.
    closes: list[tuple[str, int]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.played)


def _most_frequent(items: Iterable[str]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def smoke_facts(history: Iterable[Any]) -> SmokeFacts:
    recs = _records(history)
    errors, closes = [], []
    welcomed = set()
    opened = 0
    for rec in recs:
        client = client_process(rec)
        if client is None:
            continue
        if rec.get("f") == "conn_fail":
            errors.append(str(rec.get("error") or "?"))
        elif rec.get("f") == "conn_close" and rec.get("initiator") == "remote":
            reason = str(rec.get("reason") or "").strip()
            closes.append(f"code {rec.get('code')}" + (f" {reason!r}" if reason else ""))
        elif rec.get("f") == "welcome":
            welcomed.add(client)
        elif rec.get("f") == "conn_open":
            opened += 1
    return SmokeFacts(
        opened=opened,
        clients=len(client_ids(recs)),
        played=clients_played_by(recs, math.inf),
        welcomed=len(welcomed),
        connect_errors=_most_frequent(errors),
        closes=_most_frequent(closes),
    )
