"""Runs one scenario against a cluster and returns the judged run.

Phases: warm-up, faults, heal, liveness deadline, quiesce, judge. Doing and judging are apart:
this module only acts and records; ``harness.checkers`` judges the run directory it leaves.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import analysis
from harness.analysis import Progress
from harness.checkers import CheckResult, judge
from harness.cluster import BACKEND_NAMES, Cluster, default_balancer_cmd, read_socket_table
from harness.faults.kinds import declares_drain
from harness.faults.model import FailoverTrigger
from harness.history import (
    BALANCER_STDERR,
    BALANCER_STDOUT,
    HISTORY_DIR,
    JOURNALS_DIR,
    LOGS_DIR,
    HistoryWriter,
    describe_write_failure,
    load_run,
    parse_event_lines,
)
from harness.nemesis import Nemesis
from harness.outcome import decide
from harness.probes import run_probes
from harness.procs import ManagedProcess, open_files_needed, tail
from harness.records import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    RUN_META_FILE,
    Outcome,
    RecoveryFigures,
    RunMeta,
    Verdict,
    phase_durations,
    render_violations,
)
from harness.recovery import recovery_figures
from harness.scenario import Scenario, Workload
from harness.schedule import agenda
from harness.swarm import (
    EXIT_HISTORY_LOST,
    EXIT_NOT_READY,
    history_lost_reason,
    says_ready_within_s,
    stops_within_s,
    swarm_argv,
)
from harness.waiting import wait_until

MONITOR_INTERVAL_S = 0.25
SWARM_READY_TIMEOUT_S = 15.0
#: Beyond this many clients a swarm gets more time to be welcomed, in proportion (see below).
SWARM_READY_BASE_CLIENTS = 200
#: Extra seconds per client past SWARM_READY_BASE_CLIENTS. Measured on the shared 2-core machine at
#: a load average of 12-14: the reference balancer welcomed 30-35 clients a second (each is a
#: handshake through the lb proxy, an upstream handshake through a backend proxy and a welcome).
SWARM_READY_S_PER_CLIENT = 0.04


def swarm_ready_timeout_s(clients: int, connect_spread_s: float = 0.0) -> float:
    """How long a swarm of ``clients`` may take until every client has had its welcome: the fixed
    bound for small swarms; big ones start many worker processes and open thousands of sessions
    through two proxies and the build, which takes time in proportion on a 2-core machine."""
    extra = max(0, clients - SWARM_READY_BASE_CLIENTS) * SWARM_READY_S_PER_CLIENT
    return SWARM_READY_TIMEOUT_S + extra + connect_spread_s


class RunNotRecorded(Exception):
    """The run directory could not be written (a full disk): the run cannot be judged from it."""


@dataclass
class JudgedRun:
    scenario: Scenario
    run_dir: Path
    results: list[CheckResult]
    notes: list[str] = field(default_factory=list)
    #: The build that ran; the replay command names it unless it is the default one.
    balancer_cmd: str | None = None
    #: run.json as the runner wrote it.
    meta: RunMeta = field(default_factory=RunMeta)
    #: pass, fail or inconclusive (harness.outcome); ``reasons`` say why it is inconclusive.
    outcome: Outcome = PASSED
    reasons: list[str] = field(default_factory=list)
    #: How the clients recovered (harness.recovery); None when the run could not be measured.
    recovery: RecoveryFigures | None = None
    #: Seconds spent judging the run directory (the phases' own are in ``meta.durations``).
    judge_s: float | None = None

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def passed(self) -> bool:
        """Only a conclusive pass: an inconclusive run is not one."""
        return self.outcome == PASSED

    @property
    def failed(self) -> bool:
        return self.outcome == FAILED

    def result(self, invariant: str) -> CheckResult:
        for r in self.results:
            if r.invariant == invariant:
                return r
        raise KeyError(invariant)

    def replay_command(self) -> str:
        # The interpreter that is running, so the printed command works when pasted.
        python = shlex.quote(sys.executable)
        cmd = f"{python} -m harness replay {shlex.quote(str(self.run_dir.resolve() / 'scenario.json'))}"
        if self.balancer_cmd and self.balancer_cmd != default_balancer_cmd():
            cmd += f" --balancer-cmd {shlex.quote(self.balancer_cmd)}"
        return cmd

    def summary(self) -> str:
        lines = [f"scenario {self.scenario.name}: {self.outcome.upper()}  (run dir {self.run_dir})"]
        lines.extend(f"  inconclusive: {reason}" for reason in self.reasons)
        for r in self.results:
            lines.append(f"  {r.status:<11} {r.invariant}" + (f"  {r.note}" if r.note else ""))
            lines.extend(render_violations(r.violations, indent="      "))
        for note in self.notes:
            lines.append(f"  note: {note}")
        if not self.passed:
            lines.append(f"  replay: {self.replay_command()}")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        if not self.passed:
            raise AssertionError(self.summary())


class _Tail:
    """Reads what was appended to a file since the last call (a poor man's `tail -f`)."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.partial = ""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
                self.offset = fh.tell()
        except FileNotFoundError:
            return []
        text = self.partial + chunk
        lines = text.split("\n")
        self.partial = lines.pop()
        return lines


class RunCancelled(Exception):
    """The run's owner tore it down from outside (an interrupted certify): nothing was judged."""


class _Progress:
    """Feeds the clients' history files, as they grow, to :class:`harness.analysis.Progress`."""

    def __init__(self, history_dir: Path) -> None:
        self.dir = history_dir
        self.tails: dict[Path, _Tail] = {}
        self.state = Progress()

    def poll(self) -> None:
        for path in self.dir.glob("clients-*.jsonl"):
            tail = self.tails.setdefault(path, _Tail(path))
            for line in tail.new_lines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict):
                    self.state.observe(rec)

    def all_played_since(self, t: float) -> bool:
        return self.state.all_played_since(t)


class _Monitor(threading.Thread):
    """Polls the build's /status, and records every harness process that ends while watched
    (``process_exit``): the run's outcome asks whether the nemesis stopped it."""

    def __init__(self, cluster: Cluster, writer: HistoryWriter) -> None:
        super().__init__(name="status-monitor", daemon=True)
        self.cluster = cluster
        self.writer = writer
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._watched: dict[str, tuple[ManagedProcess, frozenset[int], bool]] = {}
        self._reported: set[tuple[str, int | None]] = set()
        # The build too: an exit no fault caused is the build falling over (herd_recovered).
        for name in (*analysis.HARNESS_PROCESSES, analysis.BUILD_PROCESS):
            with contextlib.suppress(KeyError):
                self.watch(name, cluster.supervisor[name])

    def watch(
        self, name: str, proc: ManagedProcess, gave_up_codes: frozenset[int] = frozenset(), during_setup: bool = False
    ) -> None:
        """An exit with one of ``gave_up_codes`` is recorded as ``swarm_gave_up`` (``during_setup``:
        it happened while the runner still waited for the process), any other as ``process_exit``."""
        with self._lock:
            self._watched[name] = (proc, gave_up_codes, during_setup)

    def unwatch(self, name: str) -> None:
        """Before the runner stops a process itself: that exit is expected. An exit that came
        before this call was not the runner's doing, so it is recorded first: the polls are
        ``MONITOR_INTERVAL_S`` apart or more, and a swarm that gave up just before the runner
        stopped it would otherwise leave no trace (the run would be judged without the reason)."""
        with self._lock:
            watched = self._watched.pop(name, None)
            if watched is not None:
                self._record_exit(name, *watched)

    def _check_processes(self) -> None:
        with self._lock:
            for name, watched in list(self._watched.items()):
                self._record_exit(name, *watched)

    def _record_exit(self, name: str, proc: ManagedProcess, gave_up_codes: frozenset[int], during_setup: bool) -> None:
        # Called with self._lock held, so an exit seen by the poll and by unwatch is written once.
        pid, code = proc.pid, proc.poll()
        if code is None or (name, pid) in self._reported:
            return
        self._reported.add((name, pid))
        if code in gave_up_codes:
            self.writer.event(analysis.SWARM_GAVE_UP, name=name, pid=pid, exit_code=code, during_setup=during_setup)
        else:
            self.writer.event("process_exit", name=name, pid=pid, exit_code=code)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._check_processes()
                status = self.cluster.status(timeout=MONITOR_INTERVAL_S)
                if status is not None:
                    self.writer.event("status", status=status)
            except Exception as exc:  # a dead monitor would silently thin the history
                self.writer.event("monitor_error", error=f"{type(exc).__name__}: {exc}")
            self.stop_event.wait(MONITOR_INTERVAL_S)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _copy_since(src: Path, offset: int, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = b""
    with contextlib.suppress(FileNotFoundError), open(src, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    dst.write_bytes(data)


@dataclass
class _RunState:
    """What the phases of one run share: its logs, its actors and what it has noted so far."""

    scenario: Scenario
    run_dir: Path
    nemesis_log: HistoryWriter
    monitor_log: HistoryWriter
    nemesis: Nemesis
    monitor: _Monitor
    progress: _Progress
    #: Where this run's slice of each long-lived log starts.
    log_offsets: dict[Path, int]
    status_before: dict[str, Any] | None
    baseline_sockets: int
    notes: list[str] = field(default_factory=list)
    swarms: list[ManagedProcess] = field(default_factory=list)
    #: Swarms that did not say READY in time: their clients never all got in, or were stopped.
    unready_swarms: set[str] = field(default_factory=set)
    phases: dict[str, float] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    #: Every history writer of the runner's own (nemesis, monitor, probes): was any record lost?
    writers: list[HistoryWriter] = field(default_factory=list)
    #: When the checked reset before the run began (its length is the ``reset`` duration).
    reset_start: float | None = None

    def phase(self, name: str) -> None:
        self.phases[name] = time.time()
        self.monitor_log.event("phase", phase=name)


class ScenarioRunner:
    def __init__(self, cluster: Cluster, cancelled: threading.Event | None = None) -> None:
        self.cluster = cluster
        #: Set by the owner (certify's lanes) when the run is being torn down from outside: a run
        #: under way then stops before it is judged, since its cluster may already be gone.
        self.cancelled = cancelled or threading.Event()

    def run(self, scenario: Scenario, run_dir: Path) -> JudgedRun:
        try:
            state = self._prepare(scenario, Path(run_dir))
        except RunNotRecorded as exc:
            return self._not_recorded(scenario, Path(run_dir), [str(exc)], [])
        state.monitor.start()
        try:
            self._warmup_phase(state)
            if self._swarm_ready(state):
                self._fault_phase(scenario, state.nemesis, state.notes, state.progress)
            else:
                # Its clients are stopped or never got in: a fault now would only be judged on a
                # workload the harness ended (harness.outcome says why the run is inconclusive).
                state.notes.append("faults not applied: the client swarm was not ready")
            state.phase("faults_end")
            self._heal_phase(state)
            self._deadline_phase(state)
        finally:
            self._stop_clients(state)
        if self.cancelled.is_set():
            raise RunCancelled(f"{scenario.name}: cancelled before it was judged")
        self._quiesce_phase(state)
        if self.cancelled.is_set():
            raise RunCancelled(f"{scenario.name}: cancelled before it was judged")
        lost = self._history_lost(state)
        if lost:
            return self._not_recorded(scenario, state.run_dir, lost, state.notes)
        try:
            meta = self._collect(state)
        except RunNotRecorded as exc:
            return self._not_recorded(scenario, state.run_dir, [str(exc)], state.notes)
        return self._judge(state, meta)

    # -- prepare, phases, collect, judge --------------------------------------------------------
    def _prepare(self, scenario: Scenario, run_dir: Path) -> _RunState:
        if (run_dir / HISTORY_DIR).exists() or (run_dir / RUN_META_FILE).exists():
            # Histories are appended and every *.jsonl is read back: a second run here would be
            # judged together with the first.
            raise ValueError(f"{run_dir} already holds a run; give each run a directory of its own")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            scenario.save(run_dir / "scenario.json")
        except OSError as exc:
            raise RunNotRecorded(describe_write_failure(exc.filename or run_dir, exc)) from None
        c = self.cluster
        notes: list[str] = []
        reset_start = time.time()

        # Checked reset: every earlier fault healed, the build configured for this scenario.
        try:
            c.reconfigure(scenario.limits, scenario.keepalive)
        except OSError as exc:
            # The build's config could not be written (a full disk): the harness failed, not the build.
            raise RunNotRecorded(
                "the build's config: " + describe_write_failure(exc.filename or c.config_path, exc)
            ) from None
        c.heal_all()
        if c.status() is not None and not c.wait_balancer_sees_backends_healthy(timeout=10.0):
            notes.append("the build did not report every backend healthy within 10 s of the reset")

        needed = open_files_needed(scenario.workload.clients + scenario.workload.probe_clients)
        if c.open_files_limit is not None and needed > c.open_files_limit:
            notes.append(
                f"the open-files limit binds: {c.open_files_limit} (raised to the hard limit) for "
                f"{scenario.workload.clients} clients, which need about {needed} in the busiest process"
            )
        logs = [c.logs / BALANCER_STDOUT, c.logs / BALANCER_STDERR, *(c.journal_path(n) for n in BACKEND_NAMES)]
        offsets = {p: _file_size(p) for p in logs}
        status_before = c.status()
        baseline_sockets = c.balancer_sockets()

        hist_dir = run_dir / HISTORY_DIR
        try:
            nemesis_log = HistoryWriter(hist_dir / "nemesis.jsonl", "nemesis")
            monitor_log = HistoryWriter(hist_dir / "monitor.jsonl", "monitor")
        except OSError as exc:
            raise RunNotRecorded(describe_write_failure(exc.filename or hist_dir, exc)) from None
        return _RunState(
            scenario=scenario,
            run_dir=run_dir,
            nemesis_log=nemesis_log,
            monitor_log=monitor_log,
            nemesis=Nemesis(c, nemesis_log),
            monitor=_Monitor(c, monitor_log),
            progress=_Progress(hist_dir),
            log_offsets=offsets,
            status_before=status_before,
            baseline_sockets=baseline_sockets,
            notes=notes,
            phases={"started": time.time()},
            writers=[nemesis_log, monitor_log],
            reset_start=reset_start,
        )

    def _warmup_phase(self, state: _RunState) -> None:
        w = state.scenario.workload
        state.swarms.append(self._start_swarm(state, "c", w, w.clients, w.connect_spread_s))
        self._watch_swarm(state, state.swarms[-1])
        since = state.phases["started"]

        def everyone_played() -> bool:
            state.progress.poll()
            return state.progress.state.played_since(since) >= w.clients

        # The warm-up is there so that every client has a game under way when the faults start:
        # it ends as soon as the history shows that, and at warmup_s at the latest (a run where it
        # never happens is judged inconclusive by harness.outcome, not here).
        with contextlib.suppress(TimeoutError):
            wait_until(
                everyone_played, timeout=state.scenario.phases.warmup_s, interval=0.05, what="every client to play"
            )
        state.phase("warmup_end")
        if state.scenario.probes:
            c = self.cluster
            probe_log = HistoryWriter(state.run_dir / HISTORY_DIR / "probes.jsonl", "probe")
            state.writers.append(probe_log)
            prefix = f"probe{c.client_id_offset()}"
            state.notes += run_probes(state.scenario.probes, c.lb_url, prefix, probe_log, state.scenario.limits)
            probe_log.close()

    @staticmethod
    def _swarm_ready(state: _RunState) -> bool:
        return bool(state.swarms) and state.swarms[0].running and state.swarms[0].name not in state.unready_swarms

    @staticmethod
    def _watch_swarm(state: _RunState, swarm: ManagedProcess) -> None:
        # A swarm that gave up (NOT READY) stopped its clients: recorded as such, and judged by
        # harness.outcome; one already gone gave up while the runner waited for it, before the run
        # began. Any other end is the harness' own failure (process_exit).
        state.monitor.watch(swarm.name, swarm, frozenset({EXIT_NOT_READY}), during_setup=not swarm.running)

    def _heal_phase(self, state: _RunState) -> None:
        state.nemesis.heal_all()
        self.cluster.heal_all()
        state.phase("heal_end")

    def _deadline_phase(self, state: _RunState) -> None:
        w = state.scenario.workload
        if w.probe_clients:
            state.swarms.append(self._start_swarm(state, "n", w, w.probe_clients, 0.0))
            self._watch_swarm(state, state.swarms[-1])
        self._wait_progress(state.progress, state.phases["heal_end"], state.scenario.phases.deadline_s)
        state.phase("deadline_end")

    def _stop_clients(self, state: _RunState) -> None:
        for s in state.swarms:
            state.monitor.unwatch(s.name)
        w = state.scenario.workload
        for s in state.swarms:
            # Its clients' closing handshakes, then 5 s more before it is killed.
            s.terminate(timeout=stops_within_s(max(w.clients, w.probe_clients)) + 5.0)
        state.phase("clients_stopped")
        state.monitor.stop()
        # Never let a failing heal here hide the error that brought us to this finally.
        try:
            state.nemesis.heal_all()
        except Exception as exc:
            state.notes.append(f"healing after the run failed: {exc}")

    def _quiesce_phase(self, state: _RunState) -> None:
        state.final = self._quiesce(state.scenario, state.baseline_sockets)
        state.phase("quiesce_end")
        state.nemesis_log.close()
        state.monitor_log.close()

    def _history_lost(self, state: _RunState) -> list[str]:
        """Why the history has holes (a write that failed, in this process or a swarm), or []."""
        lost = [w.lost for w in state.writers if w.lost]
        for swarm in state.swarms:
            if swarm.poll() != EXIT_HISTORY_LOST:
                continue
            lost.append(f"client swarm {swarm.name}: {history_lost_reason(tail(swarm.stderr_path, 20))}")
        if lost:
            with contextlib.suppress(OSError):
                free = shutil.disk_usage(state.run_dir).free
                lost.append(f"{free} bytes free on the file system of {state.run_dir}")
        # The cluster's own record of the run (the backends' journals, the build's event lines).
        lost += self.cluster.journal_losses()
        cluster_disk = self.cluster.disk_full()
        if cluster_disk:
            lost.append(cluster_disk)
        return lost

    def _not_recorded(self, scenario: Scenario, run_dir: Path, why: list[str], notes: list[str]) -> JudgedRun:
        """A run whose record is incomplete is not judged: a missing ack could read as a lost one."""
        reasons = [f"the run could not be recorded in full, so it was not judged: {'; '.join(why)}"]
        with contextlib.suppress(OSError):  # the same full disk may refuse this too
            Verdict(scenario.name, [], INCONCLUSIVE, reasons).write(run_dir)
        return JudgedRun(
            outcome=INCONCLUSIVE,
            reasons=reasons,
            scenario=scenario,
            run_dir=run_dir,
            results=[],
            notes=notes,
            balancer_cmd=self.cluster.spec.balancer_cmd,
        )

    def _collect(self, state: _RunState) -> RunMeta:
        """Copies this run's slice of every long-lived log into the run directory; writes run.json."""
        try:
            return self._write_record(state)
        except OSError as exc:
            raise RunNotRecorded(describe_write_failure(exc.filename or state.run_dir, exc)) from None

    def _write_record(self, state: _RunState) -> RunMeta:
        c, run_dir, scenario = self.cluster, state.run_dir, state.scenario
        copies = {
            c.logs / BALANCER_STDOUT: run_dir / LOGS_DIR / BALANCER_STDOUT,
            c.logs / BALANCER_STDERR: run_dir / LOGS_DIR / BALANCER_STDERR,
        }
        copies.update({c.journal_path(n): run_dir / JOURNALS_DIR / f"{n}.jsonl" for n in BACKEND_NAMES})
        for src, dst in copies.items():
            _copy_since(src, state.log_offsets[src], dst)

        events = parse_event_lines((run_dir / LOGS_DIR / BALANCER_STDOUT).read_text(errors="replace"))
        meta = RunMeta(
            run_id=run_dir.name,
            scenario=scenario.name,
            started=state.phases["started"],
            ended=time.time(),
            balancer_cmd=c.spec.balancer_cmd,
            balancer_config=c.config,
            failover=dict(c.config.get("failover", {})),
            capabilities={
                "status": state.status_before is not None,
                "events": bool(events),
                "drain": declares_drain(state.status_before),
            },
            phases=state.phases,
            expect=scenario.to_dict()["expect"],
            baseline={"balancer_sockets": state.baseline_sockets, "status": state.status_before},
            final=state.final,
            faults=[s.fault.to_dict() for s in scenario.steps],
            notes=state.notes,
            durations=phase_durations(state.reset_start, state.phases),
        )
        meta.write(run_dir)
        return meta

    def _judge(self, state: _RunState, meta: RunMeta) -> JudgedRun:
        judging_since = time.monotonic()
        run = load_run(state.run_dir)
        results = judge(run, only=list(state.scenario.invariants))
        outcome, reasons = decide(run, results)
        try:
            Verdict(state.scenario.name, results, outcome, reasons).write(state.run_dir)
        except OSError as exc:
            # The evidence was complete and judged; only the verdict's copy on disk is missing.
            why = describe_write_failure(exc.filename or state.run_dir, exc)
            state.notes.append(f"verdict.json not written: {why}")
        recovery = recovery_figures(run)
        return JudgedRun(
            recovery=recovery,
            judge_s=round(time.monotonic() - judging_since, 3),
            outcome=outcome,
            reasons=reasons,
            scenario=state.scenario,
            run_dir=state.run_dir,
            results=results,
            notes=state.notes,
            balancer_cmd=self.cluster.spec.balancer_cmd,
            meta=meta,
        )

    def _start_swarm(
        self, state: _RunState, prefix: str, workload: Workload, clients: int, spread_s: float
    ) -> ManagedProcess:
        run_dir, notes = state.run_dir, state.notes
        name = f"swarm-{prefix}-{run_dir.name}"
        ready_timeout_s = swarm_ready_timeout_s(clients, spread_s)
        argv = swarm_argv(
            f"{self.cluster.lb_url}/play",
            clients,
            history_dir=run_dir / HISTORY_DIR,
            prefix=prefix,
            rate_hz=workload.rate_hz,
            id_offset=self.cluster.client_id_offset(clients),
            ready_timeout_s=ready_timeout_s,
            connect_spread_s=spread_s,
            reconnect=workload.reconnect_policy,
            open_timeout_s=workload.open_timeout_s,
            compression=workload.compression,
            resend_on_gap=workload.resend_on_gap,
        )
        proc = self.cluster.supervisor.spawn(name, argv, wait=False)
        # From this start's first byte: a READY left in the file by an earlier run into the same
        # report directory would otherwise end the wait before this swarm has even started.
        ready = _Tail(proc.stdout_path, proc.stdout_start)
        seen: list[str] = []

        def is_ready() -> bool:
            seen.extend(ready.new_lines())
            return any(line.startswith(("READY", "NOT READY")) for line in seen) or not proc.running

        try:
            # As long as the swarm itself may take to say READY or NOT READY: a runner that moved
            # on earlier would fault a run whose swarm then stops its clients under it.
            wait_until(
                is_ready,
                timeout=says_ready_within_s(clients, ready_timeout_s) + 5,
                what=f"client swarm {prefix} ready",
            )
        except TimeoutError as exc:
            notes.append(str(exc))
        if not any(line.startswith("READY") for line in seen):
            notes.append(f"client swarm {prefix}: not every client got a welcome ({' '.join(seen)[-200:]})")
            state.unready_swarms.add(name)
        return proc

    def _fault_phase(self, scenario: Scenario, nemesis: Nemesis, notes: list[str], progress: _Progress) -> None:
        t0 = time.monotonic()
        fault_ids: dict[int, str] = {}
        for action in agenda(scenario.steps):
            delay = t0 + action.at_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the schedule itself: faults happen at their planned times
            step = scenario.steps[action.step]
            if action.verb == "apply":
                try:
                    if step.fault.after_failovers is None:
                        fault_ids[action.step] = nemesis.apply(step.fault).fault_id
                        continue
                    waiting_since = time.monotonic()
                    active = nemesis.apply_when(
                        step.fault, self._failovers_seen(progress, step.fault.after_failovers),
                        step.fault.after_failovers.within_s,
                    )  # fmt: skip
                    # The rest of the schedule slides by the wait (schedule.latest_times says so too).
                    t0 += time.monotonic() - waiting_since
                    if active is None:
                        notes.append(f"fault {step.fault.describe()} was not applied: its trigger never fired")
                    else:
                        fault_ids[action.step] = active.fault_id
                except Exception as exc:
                    notes.append(f"fault {step.fault.describe()} could not be applied: {exc}")
            elif action.step in fault_ids:  # nothing to heal when the apply failed
                try:
                    nemesis.heal(fault_ids[action.step])
                except Exception as exc:
                    notes.append(f"heal of {fault_ids[action.step]} failed: {exc}")
        rest = t0 + scenario.fault_phase_s - time.monotonic()
        if rest <= 0:
            return
        if not (scenario.phases.faults_end_on_failover and fault_ids):
            time.sleep(rest)  # the schedule: the faults stay in place for the phase's length
            return
        # The failover the phase is there for, seen in the history: every client served by another
        # backend since the last fault landed. A build that never fails over gets the whole phase.
        faulted, landed = scenario.steps[0].fault.target, time.time()

        def everyone_moved_off() -> bool:
            progress.poll()
            return progress.state.all_served_elsewhere_since(faulted, landed)

        with contextlib.suppress(TimeoutError):
            wait_until(everyone_moved_off, timeout=rest, interval=0.1, what=f"every client to move off {faulted}")

    @staticmethod
    def _failovers_seen(progress: _Progress, trigger: FailoverTrigger) -> Callable[[], dict[str, Any] | None]:
        """Whether the clients have failed over as ``trigger`` asks: None, or the counts that fired it."""

        def fired() -> dict[str, Any] | None:
            progress.poll()
            if not progress.state.failed_over(trigger.count, trigger.clients):
                return None
            return {"failovers": dict(sorted(progress.state.failovers.items()))}

        return fired

    def _wait_progress(self, progress: _Progress, since: float, deadline_s: float) -> None:
        def everyone_played() -> bool:
            progress.poll()
            return progress.all_played_since(since)

        # Not meeting it is judged by the checkers (recovers_after_heal), not raised here.
        with contextlib.suppress(TimeoutError):
            wait_until(everyone_played, timeout=deadline_s, interval=0.1, what="clients to play again")

    def _quiesce(self, scenario: Scenario, baseline_sockets: int) -> dict[str, Any]:
        c = self.cluster

        def snapshot() -> dict[str, Any]:
            sockets = read_socket_table()  # one read of the machine's sockets for both counts
            return {
                "status": c.status(),
                "balancer_sockets": c.balancer_sockets(sockets),
                "backend_open_connections": c.backend_open_connections(sockets),
                "backend_unjournaled_closes": c.backend_unjournaled_closes(),
                "backend_alive": c.backend_alive(),
                "balancer_alive": c.balancer.running,
            }

        state: dict[str, Any] = {}

        def clean() -> bool:
            state.update(snapshot())
            st = state["status"]
            if st is not None and not _status_empty(st):
                return False
            if any(state["backend_open_connections"].values()):
                return False
            # A backend that did not answer is not waited for: its journal is judged as it stands.
            if any(state["backend_unjournaled_closes"].values()):
                return False
            return bool(state["balancer_sockets"] <= baseline_sockets)

        with contextlib.suppress(TimeoutError):
            wait_until(clean, timeout=scenario.phases.quiesce_s, interval=0.1, what="cleanup")
        return state


def _status_empty(st: dict[str, Any]) -> bool:
    tables = st.get("tables") or {}
    backends = st.get("backends") or []
    return (
        not st.get("sessions")
        and all(not v for v in tables.values())
        and all(not (b or {}).get("connection_count") for b in backends if isinstance(b, dict))
    )
