"""Run analysis: the facts about a recorded run that more than one reader needs, computed once.

The checkers, the report, the demo and the runner's progress tracking all ask the same questions
of a history: who is a client, what did each client see, which server was it attached to and
when, when was a fault in force, how long did each failover stall a player, who has played since
a moment. Each answer has its one definition here. Pure: records in, facts out; no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from harness.eventloop import LOOP_LAG, SWARM_START
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


def conn_key(rec: Mapping[str, Any]) -> str | None:
    """A client record's connection number as a key; None when absent or not a scalar."""
    conn = rec.get("conn")
    return None if conn is None or isinstance(conn, Mapping | list) else str(conn)


def client_ids(history: Iterable[Any]) -> list[str]:
    return sorted({p for p in (client_process(r) for r in _records(history)) if p is not None})


def client_histories(history: Iterable[Any]) -> dict[str, list[Record]]:
    """Each client's records in time order; records without a readable time are dropped because
    every client rule is about order in time."""
    # One pass, each record's time read once: every checker asks for this, and a herd's history
    # holds hundreds of thousands of records.
    clients: set[str] = set()
    timed: dict[str, list[tuple[float, Record]]] = {}
    for r in _records(history):
        client = client_process(r)
        if client is not None:
            clients.add(client)
        p = r.get("process")
        if isinstance(p, str):
            t = time_of(r)
            if t is not None:
                timed.setdefault(p, []).append((t, r))
    out: dict[str, list[Record]] = {}
    for client in sorted(clients):
        recs = timed.get(client, [])
        recs.sort(key=_first)  # stable: records at one time keep their order
        out[client] = [r for _, r in recs]
    return out


def _first(item: tuple[float, Record]) -> float:
    return item[0]


@dataclass(frozen=True)
class ClientConnection:
    """One game-client connection: when it opened, and when and how it ended.

    ``closed`` is the time of its ``conn_close``, or of the client's ``stopped`` when that came
    first (``close`` is then None), or +inf when the history never shows it ended.
    """

    client: str
    opened: float
    closed: float
    close: Record | None

    def live_at(self, t: float) -> bool:
        return self.opened < t <= self.closed


def client_connections(history: Iterable[Any]) -> list[ClientConnection]:
    """Every game-client connection in a history, from its client's own records."""
    out: list[ClientConnection] = []
    for client, recs in client_histories(history).items():
        opened: dict[str | None, float] = {}
        for rec in recs:
            if rec.get("type") != "event":
                continue
            t = time_of(rec) or 0.0
            if rec.get("f") == "conn_open":
                opened[conn_key(rec)] = t
            elif rec.get("f") == "conn_close" and conn_key(rec) in opened:
                out.append(ClientConnection(client, opened.pop(conn_key(rec)), t, rec))
            elif rec.get("f") == "stopped":
                out.extend(ClientConnection(client, t_open, t, None) for t_open in opened.values())
                opened.clear()
        out.extend(ClientConnection(client, t_open, math.inf, None) for t_open in opened.values())
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
    #: When the nemesis began removing it (its heal's invoke); inf without one, e.g. a restart.
    heal_start: float = math.inf

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
        elif rec.get("f") == "heal" and rec.get("type") == "invoke" and key in windows:
            windows[key].heal_start = min(windows[key].heal_start, t)
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


# -- fault evidence -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultEvidence:
    """Whether one nemesis step demonstrably landed.

    ``touched`` is True when the records show it acted (a process signalled and gone, a toxic that
    acted on at least one connection), False when they show it did not (its apply failed, no
    process was running, its toxics touched no connection), None when there is no evidence either
    way (a real Toxiproxy keeps no counters, the step was never healed, the kind records none).
    ``reason`` says which, in words fit for a report.
    """

    fault_id: str
    kind: str
    fault: dict[str, Any]
    touched: bool | None
    reason: str
    #: Per-toxic counters recorded at heal, by toxic name; None without them.
    counts: dict[str, Any] | None = None
    #: The step waited for a trigger that never fired, so it was never applied.
    never_fired: bool = False


def _process_evidence(outcome: Mapping[str, Any]) -> tuple[bool | None, str]:
    pid = outcome.get("pid")
    if pid is None:
        return False, "no process was running to signal"
    exit_code = outcome.get("exit_code", "absent")
    if exit_code == "absent":  # pause: the signal itself is the act; the process lives on
        return True, f"pid {pid} signalled"
    if exit_code is None:
        return None, f"pid {pid} signalled, but its exit status was not seen"
    return True, f"pid {pid} exited with status {exit_code}"


def _toxic_evidence(heal: Mapping[str, Any]) -> tuple[bool | None, str, dict[str, Any] | None]:
    counts = heal.get("evidence")
    if not isinstance(counts, Mapping):
        return None, str(heal.get("evidence_reason") or "missing: no counters recorded"), None
    per_toxic = {str(k): mapping(v) for k, v in counts.items()}
    connections = sum(int(num(c.get("connections")) or 0) for c in per_toxic.values())
    if connections == 0:
        return False, f"its toxics ({', '.join(per_toxic)}) touched no connection", per_toxic
    totals = {
        key: sum(int(num(c.get(key)) or 0) for c in per_toxic.values())
        for key in ("bytes_delayed", "bytes_dropped", "bytes_cut", "cuts")
    }
    shown = ", ".join(f"{key} {value}" for key, value in totals.items() if value)
    return True, f"touched {connections} connection(s)" + (f": {shown}" if shown else ""), per_toxic


def fault_evidence_of(nemesis_records: Iterable[Any]) -> list[FaultEvidence]:
    """Each step's evidence from its nemesis records, in the order the steps were invoked.

    Reads only what the records carry (no kind knowledge): a completed apply with a ``pid`` is a
    process step; a heal with an ``evidence`` field is a toxic step; anything else has no evidence.
    A step whose trigger never fired (``fail`` ``trigger``, no apply) demonstrably did not land.
    """
    applies: dict[str, dict[str, Any]] = {}
    heals: dict[str, dict[str, Any]] = {}
    triggers: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for rec in _records(nemesis_records):
        if rec.get("process", "nemesis") != "nemesis" or rec.get("fault_id") is None:
            continue
        key = str(rec.get("fault_id"))
        if rec.get("f") == "trigger":
            if key not in applies and key not in triggers:
                order.append(key)
            triggers.setdefault(key, {})[str(rec.get("type"))] = rec
        elif rec.get("f") == "apply":
            if key not in applies:
                if key not in triggers:
                    order.append(key)
                applies[key] = {}
            applies[key][str(rec.get("type"))] = rec
        elif rec.get("f") == "heal":
            heals.setdefault(key, {})[str(rec.get("type"))] = rec
    out = []
    for key in order:
        if key not in applies:  # held back by a trigger, never applied
            waited = triggers[key]
            fault = mapping(next(iter(waited.values())).get("fault"))
            if "fail" in waited:
                reason = f"not applied: its trigger {waited['fail'].get('error', 'never fired')}"
                out.append(FaultEvidence(key, str(fault.get("kind", "?")), fault, False, reason, never_fired=True))
            else:
                reason = "missing: the run ended while the step waited for its trigger"
                out.append(FaultEvidence(key, str(fault.get("kind", "?")), fault, None, reason))
            continue
        recs = applies[key]
        fault = mapping(next(iter(recs.values())).get("fault"))
        kind = str(fault.get("kind", "?"))
        touched: bool | None
        counts = None
        heal_ok = heals.get(key, {}).get("ok")
        if "fail" in recs:
            touched, reason = False, f"not applied: {recs['fail'].get('error', 'the apply failed')}"
        elif "ok" not in recs:
            touched, reason = None, "missing: the apply never completed"
        elif "pid" in recs["ok"]:
            touched, reason = _process_evidence(recs["ok"])
        elif heal_ok is not None and "evidence" in heal_ok:
            touched, reason, counts = _toxic_evidence(heal_ok)
        elif heals.get(key, {}).get("fail") is not None or (heal_ok is None and key in heals):
            touched, reason = None, "missing: the heal did not complete, so no counts were taken"
        elif heal_ok is None:
            touched, reason = None, "missing: never healed, so no counts were taken"
        else:
            touched, reason = None, f"missing: {kind} records no evidence"
        out.append(FaultEvidence(key, kind, fault, touched, reason, counts))
    return out


def fault_evidence(run: Run) -> list[FaultEvidence]:
    """Each nemesis step of ``run`` and whether it demonstrably landed (:func:`fault_evidence_of`)."""
    return fault_evidence_of(run.nemesis())


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
    return [g for recs in run.client_histories().values() for g in failover_gaps_ms(recs)]


# -- progress -------------------------------------------------------------------------------------


class Progress:
    """Who has played since a moment, and who has failed over how often, fed one record at a time
    while a run is under way.

    A failover is a ``welcome`` from another server than the client's previous one, inside one
    connection or across a reconnect (the transitions :func:`failover_gaps_ms` measures).
    """

    def __init__(self) -> None:
        self.clients: set[str] = set()
        self.stopped: set[str] = set()
        self.last_ok: dict[str, float] = {}
        #: Per client, the time of its latest acknowledged move from each server.
        self.last_ok_from: dict[str, dict[str, float]] = {}
        self.last_server: dict[str, str] = {}
        self.failovers: dict[str, int] = {}

    def observe(self, rec: Mapping[str, Any]) -> None:
        client = client_process(rec)
        if client is None:
            return
        self.clients.add(client)
        if rec.get("type") == "event" and rec.get("f") == "welcome":
            server = str(rec.get("server"))
            previous = self.last_server.get(client)
            if previous is not None and server != previous:
                self.failovers[client] = self.failovers.get(client, 0) + 1
            self.last_server[client] = server
        elif rec.get("type") == "ok" and rec.get("f") == "move":
            t = num(rec.get("t"))
            if t is not None:
                self.last_ok[client] = max(t, self.last_ok.get(client, t))
                served = self.last_ok_from.setdefault(client, {})
                server = str(rec.get("server"))
                served[server] = max(t, served.get(server, t))
        elif rec.get("f") == "stopped":
            self.stopped.add(client)

    def all_played_since(self, t: float) -> bool:
        """Every client still playing has had a move acknowledged after ``t`` (and there is one)."""
        live = self.clients - self.stopped
        return bool(live) and all(self.last_ok.get(c, -math.inf) > t for c in live)

    def all_served_elsewhere_since(self, server: str, t: float) -> bool:
        """Every client still playing has had a move acknowledged by another server than
        ``server`` after ``t`` (and there is one): they have all failed over away from it."""
        live = self.clients - self.stopped
        return bool(live) and all(
            any(s != server and last > t for s, last in self.last_ok_from.get(c, {}).items()) for c in live
        )

    def played_since(self, t: float) -> int:
        """How many clients have had a move acknowledged after ``t``."""
        return sum(1 for last in self.last_ok.values() if last > t)

    def failed_over(self, count: int, clients: Iterable[str] | None = None) -> bool:
        """Some client (or, when named, each of ``clients``) has failed over ``count`` times or more."""
        if clients is None:
            return any(n >= count for n in self.failovers.values())
        return all(self.failovers.get(c, 0) >= count for c in clients)


def failover_counts(history: Iterable[Any]) -> dict[str, int]:
    """How often each client failed over in a recorded history (as :class:`Progress` counts live)."""
    progress = Progress()
    for rec in _records(history):
        progress.observe(rec)
    return dict(progress.failovers)


# -- evidence that the run could judge anything ----------------------------------------------------

#: The harness' own processes; one of them exiting when no fault stopped it leaves the run unable
#: to say anything about the build (a swarm is named ``swarm-<prefix>-…``).
HARNESS_PROCESSES = ("primary", "secondary", "toxiproxy")
#: Fault kinds that stop a process on purpose: its exit inside their window is the nemesis' doing.
STOPPING_KINDS = frozenset({"kill", "terminate", "restart"})
#: How long after a stopping fault's window the monitor may still be reporting its exit.
EXIT_REPORT_SLACK_S = 2.0
#: The build under test, as the runner's monitor names its process (its exits are recorded too).
BUILD_PROCESS = "balancer"


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


#: The runner's monitor records this when a client swarm gave up: it said ``NOT READY`` (not every
#: client had its first welcome within the swarm's ready timeout), stopped its clients and exited.
SWARM_GAVE_UP = "swarm_gave_up"


@dataclass(frozen=True)
class SwarmGaveUp:
    """A client swarm that gave up and stopped its clients before the runner did.

    ``during_setup``: it gave up while the runner was still waiting for it to be ready, before the
    run began; the build may well be why (it welcomed too few clients). Otherwise it gave up after
    the runner had moved on, a swarm too starved even to say READY in time: the harness' failure."""

    name: str
    pid: int | None
    t: float
    during_setup: bool

    def describe(self, started: float | None = None) -> str:
        at = f"t+{self.t - started:.1f} s" if started is not None else f"t={self.t:.3f}"
        if self.during_setup:
            return (
                f"client swarm {self.name} (pid {self.pid}) gave up before the run began (NOT READY: not "
                "every client had its first welcome within the ready timeout) and stopped all its clients"
            )
        return (
            f"client swarm {self.name} (pid {self.pid}) gave up mid-run, seen at {at} (NOT READY: too late "
            "for the runner, which had moved on) and stopped all its clients before deadline_end: the "
            "harness ended their games, not the build"
        )


def swarm_give_ups(history: Iterable[Any]) -> list[SwarmGaveUp]:
    out = []
    for rec in _records(history):
        t = time_of(rec)
        if rec.get("f") != SWARM_GAVE_UP or t is None:
            continue
        pid = rec.get("pid")
        out.append(
            SwarmGaveUp(
                str(rec.get("name") or "?"), pid if isinstance(pid, int) else None, t, rec.get("during_setup") is True
            )
        )
    return sorted(out, key=lambda g: g.t)


def unexpected_exits(run: Run) -> list[ProcessExit]:
    """Harness processes that ended with no stopping fault (kill, terminate, restart) on them.
    The build's own exits (``BUILD_PROCESS``) are not the harness': the checkers judge them."""
    windows = [w for w in fault_windows(run.history, run_end_time(run)) if w.kind in STOPPING_KINDS]

    def stopped_by_nemesis(e: ProcessExit) -> bool:
        return any(e.name in w.targets and w.start <= e.t <= w.end + EXIT_REPORT_SLACK_S for w in windows)

    return [e for e in process_exits(run.history) if e.name != BUILD_PROCESS and not stopped_by_nemesis(e)]


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


def traffic_evidence(run: Run) -> list[StepEvidence]:
    """Per applied fault, whether it touched any game traffic: a link fault on a backend's link
    touched something if a game connection to that backend was open during its window; on the
    clients' link (``lb``), if a client was attached. Process faults are not judged here (None).

    The fallback when the nemesis' own evidence (toxic counters, signal results) is missing, as
    with a real Toxiproxy: :func:`step_evidence` prefers that evidence.
    """
    run_end = run_end_time(run)
    end_default = run_end if run_end is not None else math.inf
    journals = run.journals if isinstance(run.journals, Mapping) else {}
    clients = run.client_histories()
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


def step_evidence(run: Run) -> list[StepEvidence]:
    """Per applied fault, whether it touched anything: the nemesis' own evidence (the proxy's
    per-toxic counters, the signalled process) when the run has it, else the traffic the run
    recorded during the fault's window (:func:`traffic_evidence`), with why the first was missing."""
    recorded = {e.fault_id: e for e in fault_evidence(run)}
    # A step whose trigger never fired has no window to judge traffic in, and is reported as such.
    out: list[StepEvidence] = [
        StepEvidence(e.fault_id, e.kind, tuple(sorted(_fault_targets(e.fault))), e.fault, False, e.reason)
        for e in recorded.values()
        if e.never_fired
    ]
    for step in traffic_evidence(run):
        own = recorded.get(step.fault_id)
        if own is not None and own.touched is not None:
            out.append(replace(step, touched=own.touched, why=own.reason))
        elif own is not None and step.touched is not None:
            out.append(replace(step, why=f"{step.why} (the proxy's own evidence is {own.reason})"))
        else:
            out.append(step)
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


# -- harness starvation ---------------------------------------------------------------------------

# websockets closes a connection whose ping went unanswered with 1011 "keepalive ping timeout",
# on whichever side sent the ping.
KEEPALIVE_CLOSE_CODE = 1011
#: The code websockets reports for a connection that ended without a close frame received.
ABNORMAL_CLOSURE = 1006
KEEPALIVE_REASON = "keepalive"
# How much of ping_timeout one stall of the client's own process must cover to excuse its
# keepalive close: the rest of the timeout is the pinging side's own scheduling (the balancer
# shares the loaded machine) and the proxies' hops.
STALL_EXCUSE_FRACTION = 0.8
# How far from the keepalive's window a stall may be and still count: the client records its
# close only once its starved loop gets to it, and tick times are 50 ms apart.
STALL_WINDOW_SLACK_S = 0.5
# harness.scenario.Keepalive's defaults, for a run.json that does not say.
DEFAULT_PING_INTERVAL_S = 0.5
DEFAULT_PING_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Stall:
    """One late tick of a harness process's event loop: it ran nothing from `start` to `end`.

    `process` is the recording process (``swarm-c-<pid>``, ``backend <name>``); `clients` are the
    game clients that process runs (none for a backend)."""

    process: str
    start: float
    end: float
    clients: frozenset[str] = frozenset()

    @property
    def lag_ms(self) -> float:
        return (self.end - self.start) * 1000.0

    def overlaps(self, lo: float, hi: float) -> bool:
        return self.start <= hi and self.end >= lo


def harness_stalls(history: Iterable[Any], journals: Mapping[str, Iterable[Any]] | None = None) -> list[Stall]:
    """Every recorded loop stall of a harness process, in time order: the swarms' (from the
    history; each swarm's `swarm_start` says which clients it runs) and the backends' (from their
    journals)."""
    recs = _records(history)
    members: dict[str, frozenset[str]] = {}
    for r in recs:
        clients = r.get("clients")
        if r.get("f") == SWARM_START and isinstance(r.get("process"), str) and isinstance(clients, list):
            members[r["process"]] = frozenset(c for c in clients if isinstance(c, str))
    stalls: list[Stall] = []
    for r in recs:
        if r.get("f") == LOOP_LAG and isinstance(r.get("process"), str):
            stall = _stall(r, r["process"], members.get(r["process"], frozenset()))
            if stall is not None:
                stalls.append(stall)
    for name, journal in (journals or {}).items():
        for r in _records(journal):
            if r.get("event") == LOOP_LAG:
                stall = _stall(r, f"backend {name}", frozenset())
                if stall is not None:
                    stalls.append(stall)
    stalls.sort(key=lambda s: (s.start, s.process))
    return stalls


def _stall(rec: Record, process: str, clients: frozenset[str]) -> Stall | None:
    t, lag_ms = num(rec.get("t")), num(rec.get("lag_ms"))
    if t is None or lag_ms is None or lag_ms < 0:
        return None
    return Stall(process, t - lag_ms / 1000.0, t, clients)


def run_harness_stalls(run: Run) -> list[Stall]:
    journals = run.journals if isinstance(run.journals, Mapping) else {}
    return harness_stalls(run.history, journals)


def is_keepalive_close(rec: Mapping[str, Any]) -> bool:
    """A connection closed because a keepalive ping went unanswered (whichever side pinged)."""
    return (
        rec.get("f") == "conn_close"
        and num(rec.get("code")) == KEEPALIVE_CLOSE_CODE
        and KEEPALIVE_REASON in str(rec.get("reason") or "").lower()
    )


#: What ended a connection when this client's own write found the peer already gone (conn_close ``cause``).
WRITE_AFTER_CLOSE_CAUSES = ("BrokenPipeError", "ConnectionResetError")


def is_close_lost_to_own_write(rec: Mapping[str, Any]) -> bool:
    """A 1006 that this client's own write caused: it sent no close frame, and a write failed on a
    connection the peer had already closed (EPIPE/ECONNRESET). After a stall, a client that writes
    before it reads aborts with the peer's close frame still unread in its socket (docs/verdicts.md
    "A 1006 after the client's own stall"); old histories without ``cause`` never match."""
    return (
        rec.get("f") == "conn_close"
        and num(rec.get("code")) == ABNORMAL_CLOSURE
        and "sent_code" in rec
        and rec.get("sent_code") is None
        and str(rec.get("cause") or "").startswith(WRITE_AFTER_CLOSE_CAUSES)
    )


@dataclass(frozen=True)
class ExcusedClose:
    """A keepalive close that the client's own starved process explains: the harness's failure,
    not the build's. `stall` is the worst stall of that process around the close."""

    client: str
    close: Record
    stall: Stall

    def describe(self) -> str:
        return (
            f"client {self.client} conn {self.close.get('conn')} keepalive close at "
            f"{num(self.close.get('t')) or 0.0:.3f}: its process {self.stall.process} stalled "
            f"{self.stall.lag_ms:.0f} ms (loop lag) from {self.stall.start:.3f}"
        )


def excused_keepalive_closes(
    client_records: Mapping[str, Iterable[Any]],
    stalls: Iterable[Stall],
    *,
    ping_interval_s: float,
    ping_timeout_s: float,
    balancer_survived: bool = False,
) -> list[ExcusedClose]:
    """The keepalive closes (1011 "keepalive ping timeout") of clients whose own process had a
    loop stall of at least :data:`STALL_EXCUSE_FRACTION` times `ping_timeout_s` around the close.

    With `balancer_survived`, also the 1006s that such a client's own write caused
    (:func:`is_close_lost_to_own_write`): the keepalive close it never read. A balancer that died
    leaves the same record, so without that evidence a 1006 is never excused.

    "Around" is the keepalive's own window: the unanswered ping was sent at most `ping_interval_s`
    + `ping_timeout_s` before the close was recorded (and the record itself waited for the starved
    loop), widened by :data:`STALL_WINDOW_SLACK_S` on each side. A stall of another process (a
    backend, another swarm) excuses nothing: it did not hold this client's pong.
    """
    need_ms = STALL_EXCUSE_FRACTION * ping_timeout_s * 1000.0
    by_client: dict[str, list[Stall]] = {}
    for stall in stalls:
        if stall.lag_ms >= need_ms:
            for client in stall.clients:
                by_client.setdefault(client, []).append(stall)
    excused: list[ExcusedClose] = []
    for client, recs in client_records.items():
        own = by_client.get(client)
        if not own:
            continue
        for rec in _records(recs):
            t = num(rec.get("t"))
            if t is None or not (is_keepalive_close(rec) or (balancer_survived and is_close_lost_to_own_write(rec))):
                continue
            lo = t - ping_interval_s - ping_timeout_s - STALL_WINDOW_SLACK_S
            hi = t + STALL_WINDOW_SLACK_S
            near = [s for s in own if s.overlaps(lo, hi)]
            if near:
                excused.append(ExcusedClose(client, rec, max(near, key=lambda s: s.lag_ms)))
    return excused


def describe_excused(excused: list[ExcusedClose]) -> str:
    """One line for a verdict: "harness swarm stalled N ms (loop lag) around the keepalive closes"."""
    worst = max(excused, key=lambda e: e.stall.lag_ms)
    processes = sorted({e.stall.process for e in excused})
    return (
        f"harness swarm stalled up to {worst.stall.lag_ms:.0f} ms (loop lag) around {len(excused)} keepalive "
        f"close(s) of {len({e.client for e in excused})} client(s) ({', '.join(processes)}): the harness could "
        "not answer the balancer's pings in time, so these closes are not the build's"
    )


def run_excused_keepalive_closes(run: Run) -> list[ExcusedClose]:
    """:func:`excused_keepalive_closes` for a recorded run, with the keepalive it was configured
    with (run.json ``balancer_config``; the scenario defaults when absent)."""
    config = run.run_meta.balancer_config
    interval = num(config.get("ping_interval_s"))
    timeout = num(config.get("ping_timeout_s"))
    return excused_keepalive_closes(
        run.client_histories(),
        run_harness_stalls(run),
        ping_interval_s=interval if interval is not None else DEFAULT_PING_INTERVAL_S,
        ping_timeout_s=timeout if timeout is not None else DEFAULT_PING_TIMEOUT_S,
        balancer_survived=run.run_meta.final.get("balancer_alive") is True,
    )


# -- the machine's slowness -----------------------------------------------------------------------

# Timing deadlines stretch with the measured slowness up to this factor. Beyond it the machine is
# too slow for the run's own phases (which are not stretched) to show whether the build is in
# time, so a timing violation there is inconclusive, never a fail.
SLOWNESS_SCALE_LIMIT = 3.0
# Below this the measurement is noise (a 30 ms busy loop on a machine with a core to spare reads
# 1.0-1.3), and deadlines stay exactly as the scenario set them.
SLOWNESS_FLOOR = 1.5


def inexcusable_stall_s(deadline_s: float) -> float:
    """The shortest stall that breaks ``deadline_s`` however slow the machine measured: the deadline
    at the largest stretch. A fault meant to leave a broken build stalled has to outlast this, or on
    a loaded machine the stretched deadline covers the stall, which is then set aside as
    inconclusive instead of failing the build."""
    return deadline_s * SLOWNESS_SCALE_LIMIT


@dataclass(frozen=True)
class Slowness:
    """The run's measured slowness: the worst `slowness` a swarm process measured at its start
    (harness.eventloop.measure_slowness: a busy loop's wall time over its CPU time; 1 = a core to
    spare). None when no swarm measured it (older runs): deadlines then stay as they are."""

    factor: float | None

    @property
    def scale(self) -> float:
        """What the timing deadlines are multiplied by."""
        if self.factor is None or self.factor < SLOWNESS_FLOOR:
            return 1.0
        return min(self.factor, SLOWNESS_SCALE_LIMIT)

    @property
    def too_slow(self) -> bool:
        return self.factor is not None and self.factor > SLOWNESS_SCALE_LIMIT

    def describe(self) -> str:
        if self.factor is None:
            return "slowness not measured"
        if self.too_slow:
            return (
                f"machine too slow: slowness x{self.factor:.1f} measured by the harness swarm (deadlines stretch "
                f"at most x{SLOWNESS_SCALE_LIMIT:g})"
            )
        return f"slowness x{self.factor:.2f} measured; timing deadlines scaled x{self.scale:.2f}"


def slowness(history: Iterable[Any]) -> Slowness:
    factors = [num(r.get("slowness")) for r in _records(history) if r.get("f") == SWARM_START]
    known = [f for f in factors if f is not None and f > 0]
    return Slowness(max(known) if known else None)


# -- thundering herd -------------------------------------------------------------------------------

#: Fault targets whose disruption drops the clients' own connections, not only their upstreams.
HERD_TARGETS = frozenset({"lb", "balancer"})
#: So many clients dropped by one fault make a herd (the named herd scenarios drop 1,000 or more).
HERD_MIN_CLIENTS = 100
#: A drop counts towards a fault up to this long after its window ended (a restart's closes, the
#: last resets of a toxic, the monitor's lag).
HERD_DROP_SLACK_S = 2.0
#: The clients' opening-handshake timeout when the swarm did not record its own.
DEFAULT_OPEN_TIMEOUT_S = 5.0


def client_open_timeout_s(history: Iterable[Any]) -> float:
    """The longest opening-handshake timeout a swarm gave its clients (``swarm_start``)."""
    found = [
        t for r in _records(history)
        if r.get("f") == SWARM_START and (t := num(r.get("open_timeout_s"))) is not None and t > 0
    ]  # fmt: skip
    return max(found, default=DEFAULT_OPEN_TIMEOUT_S)


@dataclass(frozen=True)
class HerdDrop:
    """One client of a herd: the close of the connection it had before the fault, and the first
    acknowledged move after it (None: it never played again)."""

    client: str
    close: Record
    back: Record | None

    @property
    def t(self) -> float:
        return time_of(self.close) or 0.0

    @property
    def back_t(self) -> float | None:
        return None if self.back is None else time_of(self.back)


@dataclass(frozen=True)
class Herd:
    """A fault on the lb link or the balancer that dropped at least HERD_MIN_CLIENTS clients."""

    window: FaultWindow
    drops: list[HerdDrop]

    @property
    def clients(self) -> list[str]:
        return [d.client for d in self.drops]


def herd_drops(window: FaultWindow, clients: Mapping[str, list[Record]]) -> list[HerdDrop]:
    """The clients whose connection, open before the fault, closed while it was in force (or
    within :data:`HERD_DROP_SLACK_S` after): one drop per client, its first."""
    out = []
    for client, recs in clients.items():
        opened: dict[Any, float] = {}
        close: Record | None = None
        for rec in recs:
            t = time_of(rec)
            if t is None or rec.get("type") != "event":
                continue
            if rec.get("f") == "conn_open":
                opened[rec.get("conn")] = t
            elif (
                rec.get("f") == "conn_close"
                and window.start <= t <= window.end + HERD_DROP_SLACK_S
                and opened.get(rec.get("conn"), math.inf) < window.start
            ):
                close = rec
                break
        if close is None:
            continue
        since = time_of(close) or 0.0
        back = next(
            (r for r in recs if r.get("type") == "ok" and r.get("f") == "move" and (time_of(r) or -math.inf) > since),
            None,
        )
        out.append(HerdDrop(client, close, back))
    return sorted(out, key=lambda d: (d.t, d.client))


def herds(run: Run) -> tuple[list[Herd], int]:
    """Every herd in the run, and the most clients any lb/balancer fault dropped (to say why a
    run without a herd had none)."""
    clients = run.client_histories()
    found: list[Herd] = []
    most = 0
    for w in fault_windows(run.history, run_end_time(run)):
        if not w.targets & HERD_TARGETS:
            continue
        drops = herd_drops(w, clients)
        most = max(most, len(drops))
        if len(drops) >= HERD_MIN_CLIENTS:
            found.append(Herd(w, drops))
    return found, most
