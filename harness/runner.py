"""Runs one scenario against a cluster and returns the judged run.

Phases: warm-up, faults, heal, liveness deadline, quiesce, judge. Doing and judging are apart:
this module only acts and records; ``harness.checkers`` judges the run directory it leaves.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.checkers import CheckResult, judge
from harness.cluster import BACKEND_NAMES, Cluster, default_balancer_cmd
from harness.history import (
    BALANCER_STDERR,
    BALANCER_STDOUT,
    HISTORY_DIR,
    JOURNALS_DIR,
    LOGS_DIR,
    HistoryWriter,
    load_run,
    parse_event_lines,
    write_run_meta,
)
from harness.nemesis import Nemesis
from harness.procs import ManagedProcess
from harness.scenario import Scenario
from harness.schedule import agenda
from harness.swarm import swarm_argv
from harness.waiting import wait_until

MONITOR_INTERVAL_S = 0.25
SWARM_READY_TIMEOUT_S = 15.0


@dataclass
class JudgedRun:
    scenario: Scenario
    run_dir: Path
    results: list[CheckResult]
    notes: list[str] = field(default_factory=list)
    #: The build that ran; the replay command names it unless it is the default one.
    balancer_cmd: str | None = None

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def result(self, invariant: str) -> CheckResult:
        for r in self.results:
            if r.invariant == invariant:
                return r
        raise KeyError(invariant)

    def replay_command(self) -> str:
        cmd = f"python -m harness replay {shlex.quote(str(self.run_dir.resolve() / 'scenario.json'))}"
        if self.balancer_cmd and self.balancer_cmd != default_balancer_cmd():
            cmd += f" --balancer-cmd {shlex.quote(self.balancer_cmd)}"
        return cmd

    def summary(self) -> str:
        lines = [f"scenario {self.scenario.name}: {'PASS' if self.passed else 'FAIL'}  (run dir {self.run_dir})"]
        for r in self.results:
            lines.append(f"  {r.status:<11} {r.invariant}" + (f"  {r.note}" if r.note else ""))
            for v in r.violations[:5]:
                lines.append(f"      - {v.message}")
                for ev in v.evidence[:3]:
                    lines.append(f"          {json.dumps(ev, default=str)[:300]}")
            if len(r.violations) > 5:
                lines.append(f"      … and {len(r.violations) - 5} more")
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

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
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


class _Progress:
    """Tracks, from the clients' history files, which clients have played since a moment."""

    def __init__(self, history_dir: Path) -> None:
        self.dir = history_dir
        self.tails: dict[Path, _Tail] = {}
        self.last_ok: dict[str, float] = {}
        self.clients: set[str] = set()
        self.stopped: set[str] = set()

    def poll(self) -> None:
        for path in self.dir.glob("clients-*.jsonl"):
            tail = self.tails.setdefault(path, _Tail(path))
            for line in tail.new_lines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                proc = rec.get("process")
                if not isinstance(proc, str):
                    continue
                self.clients.add(proc)
                if rec.get("type") == "ok" and rec.get("f") == "move":
                    self.last_ok[proc] = float(rec.get("t", 0.0))
                elif rec.get("f") == "stopped":
                    self.stopped.add(proc)

    def all_played_since(self, t: float) -> bool:
        live = self.clients - self.stopped
        return bool(live) and all(self.last_ok.get(c, 0.0) > t for c in live)


class _Monitor(threading.Thread):
    def __init__(self, cluster: Cluster, writer: HistoryWriter) -> None:
        super().__init__(name="status-monitor", daemon=True)
        self.cluster = cluster
        self.writer = writer
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
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


class ScenarioRunner:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def run(self, scenario: Scenario, run_dir: Path) -> JudgedRun:
        run_dir = Path(run_dir)
        if (run_dir / HISTORY_DIR).exists() or (run_dir / "run.json").exists():
            # Histories are appended and every *.jsonl is read back: a second run here would be
            # judged together with the first.
            raise ValueError(f"{run_dir} already holds a run; give each run a directory of its own")
        run_dir.mkdir(parents=True, exist_ok=True)
        scenario.save(run_dir / "scenario.json")
        c = self.cluster
        notes: list[str] = []

        # Checked reset: every earlier fault healed, the build configured for this scenario.
        c.reconfigure(scenario.limits, scenario.keepalive)
        c.heal_all()
        if c.status() is not None and not c.wait_balancer_sees_backends_healthy(timeout=10.0):
            notes.append("the build did not report every backend healthy within 10 s of the reset")

        bal_out = c.logs / BALANCER_STDOUT
        bal_err = c.logs / BALANCER_STDERR
        offsets = {"out": _file_size(bal_out), "err": _file_size(bal_err)}
        journal_offsets = {n: _file_size(c.journal_path(n)) for n in BACKEND_NAMES}
        status_before = c.status()
        baseline_sockets = c.balancer_sockets()

        hist_dir = run_dir / HISTORY_DIR
        nemesis_log = HistoryWriter(hist_dir / "nemesis.jsonl", "nemesis")
        monitor_log = HistoryWriter(hist_dir / "monitor.jsonl", "monitor")
        nemesis = Nemesis(c, nemesis_log)
        monitor = _Monitor(c, monitor_log)
        progress = _Progress(hist_dir)
        swarms: list[ManagedProcess] = []
        phases: dict[str, float] = {"started": time.time()}

        def phase(name: str) -> None:
            phases[name] = time.time()
            monitor_log.event("phase", phase=name)

        monitor.start()
        try:
            w = scenario.workload
            swarm = self._start_swarm(run_dir, "c", w.clients, w.rate_hz, w.connect_spread_s, notes)
            swarms.append(swarm)
            time.sleep(scenario.phases.warmup_s)  # the warm-up is a timed phase, not a wait
            phase("warmup_end")

            self._fault_phase(scenario, nemesis, notes)
            phase("faults_end")

            nemesis.heal_all()
            c.heal_all()
            phase("heal_end")

            if w.probe_clients:
                swarms.append(self._start_swarm(run_dir, "n", w.probe_clients, w.rate_hz, 0.0, notes))
            self._wait_progress(progress, phases["heal_end"], scenario.phases.deadline_s)
            phase("deadline_end")
        finally:
            for s in swarms:
                s.terminate(timeout=20.0)
            phase("clients_stopped")
            monitor.stop()
            # Never let a failing heal here hide the error that brought us to this finally.
            try:
                nemesis.heal_all()
            except Exception as exc:
                notes.append(f"healing after the run failed: {exc}")

        final = self._quiesce(scenario, baseline_sockets)
        phase("quiesce_end")
        nemesis_log.close()
        monitor_log.close()

        # Copy this run's slice of every long-lived log into the run directory.
        _copy_since(bal_out, offsets["out"], run_dir / LOGS_DIR / BALANCER_STDOUT)
        _copy_since(bal_err, offsets["err"], run_dir / LOGS_DIR / BALANCER_STDERR)
        for name in BACKEND_NAMES:
            _copy_since(c.journal_path(name), journal_offsets[name], run_dir / JOURNALS_DIR / f"{name}.jsonl")

        events = parse_event_lines((run_dir / LOGS_DIR / BALANCER_STDOUT).read_text(errors="replace"))
        meta: dict[str, Any] = {
            "run_id": run_dir.name,
            "scenario": scenario.name,
            "started": phases["started"],
            "ended": time.time(),
            "balancer_cmd": c.spec.balancer_cmd,
            "balancer_config": c.config,
            "failover": dict(c.config.get("failover", {})),
            "capabilities": {"status": status_before is not None, "events": bool(events)},
            "phases": phases,
            "expect": {
                "close_codes": list(scenario.expect.close_codes),
                "failover_deadline_s": scenario.expect.failover_deadline_s,
                "recovery_deadline_s": scenario.expect.recovery_deadline_s,
            },
            "baseline": {"balancer_sockets": baseline_sockets, "status": status_before},
            "final": final,
            "faults": [s.fault.to_dict() for s in scenario.steps],
            "notes": notes,
        }
        write_run_meta(run_dir, meta)
        run = load_run(run_dir)
        results = judge(run, only=list(scenario.invariants))
        (run_dir / "verdict.json").write_text(
            json.dumps(
                {
                    "scenario": scenario.name,
                    "passed": all(r.status != "fail" for r in results),
                    "results": [r.to_dict() for r in results],
                },
                indent=2,
                default=str,
            ),
            encoding="utf-8",
        )
        return JudgedRun(
            scenario=scenario, run_dir=run_dir, results=results, notes=notes, balancer_cmd=c.spec.balancer_cmd
        )

    # -- phases -------------------------------------------------------------------------------
    def _start_swarm(
        self, run_dir: Path, prefix: str, clients: int, rate_hz: float, spread_s: float, notes: list[str]
    ) -> ManagedProcess:
        name = f"swarm-{prefix}-{run_dir.name}"
        argv = swarm_argv(
            f"{self.cluster.lb_url}/play",
            clients,
            history_dir=run_dir / HISTORY_DIR,
            prefix=prefix,
            rate_hz=rate_hz,
            id_offset=self.cluster.client_id_offset(),
            ready_timeout_s=SWARM_READY_TIMEOUT_S,
            connect_spread_s=spread_s,
        )
        proc = self.cluster.supervisor.spawn(name, argv, wait=False)
        ready = _Tail(proc.stdout_path)
        seen: list[str] = []

        def is_ready() -> bool:
            seen.extend(ready.new_lines())
            return any(line.startswith(("READY", "NOT READY")) for line in seen) or not proc.running

        try:
            wait_until(is_ready, timeout=SWARM_READY_TIMEOUT_S + 5, what=f"client swarm {prefix} ready")
        except TimeoutError as exc:
            notes.append(str(exc))
        if not any(line.startswith("READY") for line in seen):
            notes.append(f"client swarm {prefix}: not every client got a welcome ({' '.join(seen)[-200:]})")
        return proc

    def _fault_phase(self, scenario: Scenario, nemesis: Nemesis, notes: list[str]) -> None:
        t0 = time.monotonic()
        fault_ids: dict[int, str] = {}
        for action in agenda(scenario.steps):
            delay = t0 + action.at_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the schedule itself: faults happen at their planned times
            step = scenario.steps[action.step]
            if action.verb == "apply":
                try:
                    fault_ids[action.step] = nemesis.apply(step.fault).fault_id
                except Exception as exc:
                    notes.append(f"fault {step.fault.describe()} could not be applied: {exc}")
            elif action.step in fault_ids:  # nothing to heal when the apply failed
                try:
                    nemesis.heal(fault_ids[action.step])
                except Exception as exc:
                    notes.append(f"heal of {fault_ids[action.step]} failed: {exc}")
        rest = t0 + scenario.fault_phase_s - time.monotonic()
        if rest > 0:
            time.sleep(rest)

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
            return {
                "status": c.status(),
                "balancer_sockets": c.balancer_sockets(),
                "backend_open_connections": c.backend_open_connections(),
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
