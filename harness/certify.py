"""Certification: runs the chaos suite against a balancer build and issues a verdict.

Exit codes (docs/verdicts.md): 0 certified; 1 rejected (an invariant was violated, or a generated
plan failed then passed: flaky); 2 the build did not start, never became ready, or relayed no game
at all (the smoke gate), or the command line or report directory was wrong; 3 inconclusive (a
scenario could not be judged, twice); 128 + N interrupted by signal N (130 SIGINT, 143 SIGTERM),
with a partial report whose verdict is ``interrupted``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import queue
import shlex
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import harness
from harness.catalog import named_scenarios
from harness.cluster import BuildFailed, Cluster, ClusterSpec, ToxiproxyUnusable
from harness.procs import ProcessFailed, interrupt_signal
from harness.records import (
    CERTIFIED,
    ERROR,
    EXIT_CODES,
    FAILED,
    FLAKY,
    INCONCLUSIVE,
    INTERRUPTED,
    INTERRUPTED_KEY,
    NOT_CHECKED,
    PASS,
    PASSED,
    REFUSED,
    REJECTED,
    Certificate,
    ResultEntry,
    ScenarioEntry,
    Status,
    certificate_verdict,
    clip,
    interrupted_exit_code,
)
from harness.runner import JudgedRun, ScenarioRunner
from harness.scenario import INVARIANTS, Scenario
from harness.smoke import SMOKE_CLIENTS, SMOKE_TIMEOUT_S, SmokeFailed, smoke_gate

EXIT_CERTIFIED, EXIT_REJECTED, EXIT_BUILD, EXIT_INCONCLUSIVE = 0, 1, 2, 3


Job = TypeVar("Job")


class MachineGate:
    """Runs a scenario that needs the machine alone (``Scenario.needs_machine_alone``: a herd, a
    mass failover) with no other scenario under way on another lane.

    A lane with such a scenario waits for the scenarios under way to end, and no lane starts another
    meanwhile. Every wait ends when ``stop`` is set (an interrupt, --fail-fast): ``enter`` then
    yields False and the lane gives its job up.
    """

    #: How often a waiting lane looks at ``stop``.
    POLL_S = 0.2

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._alone = False
        self._waiting_alone = 0

    def claim(self, jobs: queue.SimpleQueue[Job], alone: Callable[[Job], bool]) -> Job | None:
        """The next job from ``jobs`` (None when there is none). One that needs the machine alone
        starts waiting at the gate in the same step, so that no job taken after it, by any lane,
        gets in first: ``enter`` it with ``claimed=True``."""
        with self._cond:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                return None
            if alone(job):
                self._waiting_alone += 1
            return job

    @contextlib.contextmanager
    def enter(self, alone: bool, stop: threading.Event, *, claimed: bool = False) -> Iterator[bool]:
        with self._cond:
            if alone:
                if not claimed:
                    self._waiting_alone += 1
                try:
                    admitted = self._wait(lambda: self._running == 0 and not self._alone, stop)
                finally:
                    self._waiting_alone -= 1
                    self._cond.notify_all()
            else:
                admitted = self._wait(lambda: not self._alone and self._waiting_alone == 0, stop)
            if admitted:
                self._running += 1
                self._alone = alone
        if not admitted:
            yield False
            return
        try:
            yield True
        finally:
            with self._cond:
                self._running -= 1
                if alone:
                    self._alone = False
                self._cond.notify_all()

    def _wait(self, ready: Callable[[], bool], stop: threading.Event) -> bool:
        while not ready():
            if stop.is_set():
                return False
            self._cond.wait(timeout=self.POLL_S)
        return True


class _FailFast(Exception):
    """--fail-fast: a scenario failed; stop here."""


@dataclass(frozen=True)
class Profile:
    """A profile runs every named scenario but those tagged with one of ``skip_tags``; profiles
    differ in that and in the Hypothesis budget."""

    name: str
    hypothesis_examples: int
    shrink: bool
    #: Scenarios with one of these tags are left out (and listed as not run in the certificate).
    skip_tags: tuple[str, ...] = ()


PROFILES = {
    # Within 3 minutes on 2 cores (measured: ~1.5 min of named scenarios, ~8 s a plan):
    # every named scenario and 5 generated plans, not shrunk.
    # A scenario tagged "large" (mass_failover: 2,000 sessions) spends minutes connecting its
    # clients on 2 cores; it is in ci and nightly. thundering_herd (1,000) stays in quick, since a
    # mutant is aimed at it.
    "quick": Profile("quick", hypothesis_examples=5, shrink=False, skip_tags=("large",)),
    # Within 10 minutes: every named scenario and 20 generated plans, shrunk on failure.
    "ci": Profile("ci", hypothesis_examples=20, shrink=True),
    # Long: every named scenario and 100 generated plans.
    "nightly": Profile("nightly", hypothesis_examples=100, shrink=True),
}


def default_parallel() -> int:
    """How many clusters certify runs at once when --parallel is not given.

    A scenario's wall time is mostly waiting (warm-up, fault windows, deadlines), so lanes scale
    past the core count; docs/performance.md has the measurement behind this number.
    """
    return max(1, min(LANES_PER_CORE * (os.cpu_count() or 1), MAX_LANES))


LANES_PER_CORE = 3
MAX_LANES = 6


def machine_facts() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def harness_facts() -> dict[str, Any]:
    import websockets

    return {"version": harness.__version__, "python": platform.python_version(), "websockets": websockets.__version__}


def scenario_entry(judged: JudgedRun, kind: str, duration_s: float) -> ScenarioEntry:
    # Everything the checkers recorded is kept (they cap it once); the report decides what to show.
    return ScenarioEntry(
        outcome=judged.outcome,
        reasons=list(judged.reasons),
        name=judged.scenario.name,
        description=judged.scenario.description,
        kind=kind,
        run_dir=str(judged.run_dir.resolve()),
        duration_s=round(duration_s, 2),
        passed=judged.passed,
        results={r.invariant: ResultEntry.from_check(r) for r in judged.results},
        notes=list(judged.notes),
        replay=judged.replay_command(),
        recovery=judged.recovery,
    )


class Certifier:
    def __init__(
        self,
        *,
        balancer_cmd: str,
        profile: Profile,
        report_dir: Path,
        toxiproxy_url: str | None = None,
        only: list[str] | None = None,
        extra: list[Scenario] | None = None,
        hypothesis_examples: int | None = None,
        ready_timeout_s: float = 20.0,
        console: Console | None = None,
        fail_fast: bool = False,
        seed: int | None = None,
        smoke_timeout_s: float = SMOKE_TIMEOUT_S,
        parallel: int = 1,
    ) -> None:
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.parallel = parallel
        self._lock = threading.RLock()
        self.fail_fast = fail_fast
        self.seed = seed
        self.smoke_timeout_s = smoke_timeout_s
        self.first_failure_s: float | None = None
        self._started_mono = time.monotonic()
        self.ready_timeout_s = ready_timeout_s
        self.balancer_cmd = balancer_cmd
        self.profile = profile
        self.report_dir = Path(report_dir)
        self.toxiproxy_url = toxiproxy_url
        self.only = only
        self.extra = extra or []
        self.examples = profile.hypothesis_examples if hypothesis_examples is None else hypothesis_examples
        self.console = console or Console(stderr=False)
        self.entries: list[ScenarioEntry] = []
        self.capabilities: dict[str, bool] = {}
        self.build_died: str | None = None
        #: Named scenarios this profile leaves out (``Profile.skip_tags``).
        self.not_run: list[str] = []
        #: Generated plans already run by some lane's chunk (by their content-derived name).
        self._plans_run: set[str] = set()
        #: What certify is doing now, for the report of an interrupted run.
        self.stage = "starting the cluster"
        #: The scenario under way: its entry if the run is interrupted (name, kind, run dir, start).
        #: The scenario each lane has under way, by thread: what an interrupt cuts short.
        self._current: dict[int, tuple[Scenario, str, Path, float]] = {}
        #: Seconds spent in each part of the runs (``RunMeta.durations``, and ``judge``), summed
        #: over all runs and lanes: where the suite's time went.
        self.time_in_runs: dict[str, float] = {}
        #: Seconds from the start to the end of the smoke gate (first cluster started, smoke run).
        self.startup_s: float | None = None
        #: How many lanes ran (``parallel``, or fewer when there were fewer jobs).
        self.lanes_run = 0

    def scenarios(self) -> list[Scenario]:
        catalog = named_scenarios()
        if self.only:
            unknown = [n for n in self.only if n not in catalog]
            if unknown:
                raise ValueError(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(catalog)})")
            chosen = [catalog[n] for n in self.only]
        else:
            skip = set(self.profile.skip_tags)
            chosen = [s for s in catalog.values() if not skip & set(s.tags)]
            self.not_run = [s.name for s in catalog.values() if skip & set(s.tags)]
        return chosen + self.extra

    def run(self) -> dict[str, Any]:
        """The certificate as certificate.json holds it."""
        return self.certify().to_json()

    def certify(self) -> Certificate:
        started = time.time()
        self._started_mono = time.monotonic()
        cert = Certificate(
            verdict="error",
            error=None,
            build={"command": self.balancer_cmd, "capabilities": {}},
            harness=harness_facts(),
            machine=machine_facts(),
            profile=self.profile.name,
            started=dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            invariants=list(INVARIANTS),
            scenarios=self.entries,
        )
        scenarios = self.scenarios()
        runs_dir = self.report_dir / "runs"
        # A report directory is ours to rewrite: runs left from an earlier certify must not be
        # judged with this one.
        for old in (runs_dir, self.report_dir / "cluster"):
            shutil.rmtree(old, ignore_errors=True)
        spec = ClusterSpec(
            balancer_cmd=self.balancer_cmd, toxiproxy_url=self.toxiproxy_url, ready_timeout_s=self.ready_timeout_s
        )
        cluster = Cluster(self.report_dir / "cluster", spec)
        clusters = [cluster]
        started_ok = False
        try:
            cluster.start()
            started_ok = True
            self.stage = "the smoke gate"
            self.console.print(
                f"smoke gate: {SMOKE_CLIENTS} clients must play within {self.smoke_timeout_s:g} s", highlight=False
            )
            smoke_gate(cluster, self.report_dir / "smoke", self.smoke_timeout_s)
            self.startup_s = round(time.monotonic() - self._started_mono, 1)
            self._run_lanes(scenarios, runs_dir, spec, clusters)
        except _FailFast:
            pass
        except KeyboardInterrupt as exc:
            # SIGINT, or SIGTERM turned into one: stop, reap (below), and leave a partial report.
            self._interrupted(cert, exc)
        except SmokeFailed as exc:
            cert.verdict = REFUSED
            cert.error = str(exc)
        except BuildFailed as exc:
            if started_ok:
                # It started, ran, then died for good: that is the build failing the suite.
                self.build_died = f"the balancer build died mid-run and could not be restarted:\n{exc}"
            else:
                cert.error = f"the balancer build did not start or never became ready:\n{exc}"
        except ToxiproxyUnusable as exc:
            cert.error = f"the Toxiproxy server given (--toxiproxy-url / TOXIPROXY_URL) cannot be used:\n{exc}"
            cert.verdict = ERROR
        except ProcessFailed as exc:
            cert.error = f"the harness could not start its own processes:\n{exc}"
            cert.verdict = ERROR
        except Exception as exc:
            cert.error = f"harness error: {type(exc).__name__}: {exc}"
        finally:
            for each in clusters:
                each.close()
        cert.build["capabilities"] = self.capabilities
        cert.duration_s = round(time.time() - started, 1)
        if self.first_failure_s is not None:
            cert.extra["first_failure_s"] = self.first_failure_s
        if self.seed is not None:
            cert.extra["seed"] = self.seed
        if self.startup_s is not None:
            cert.extra["startup_s"] = self.startup_s
        if self.time_in_runs:
            cert.extra["time_in_runs_s"] = {k: round(v, 1) for k, v in self.time_in_runs.items()}
        if self.not_run:
            cert.extra["not_run"] = {
                "scenarios": self.not_run,
                "why": f"profile {self.profile.name} leaves out scenarios tagged {', '.join(self.profile.skip_tags)}; "
                "--profile ci runs them",
            }
        if cert.verdict == INTERRUPTED:
            pass  # whatever was seen before, the certification did not finish: never a verdict
        elif self.build_died:
            cert.build["died"] = self.build_died
            cert.verdict = REJECTED
        elif cert.error is None:
            cert.verdict = certificate_verdict(self.entries)
        return cert

    def _run_lanes(self, scenarios: list[Scenario], runs_dir: Path, spec: ClusterSpec, clusters: list[Cluster]) -> None:
        """Runs the scenarios on ``self.parallel`` independent clusters (lanes) at once.

        Each lane is a thread that owns one cluster (its own Toxiproxy, backends and build, on
        collision-free ports) and takes the next job from a shared queue. The generated plans are
        one job, queued first because Hypothesis runs them one after another. The lanes' threads
        only wait on processes and sockets, so the GIL is not what bounds them. ``clusters[0]`` is
        already started (the smoke gate ran on it); the others start inside their lanes, in
        parallel. Entries are put back into catalog order at the end, so the certificate does not
        depend on which lane finished first.
        """
        jobs: queue.SimpleQueue[tuple[int, Scenario | None]] = queue.SimpleQueue()
        chunks = generated_chunks(self.examples, self.parallel)
        for job in job_order(scenarios, len(chunks), self.fail_fast):
            jobs.put(job)
        n_jobs = len(scenarios) + len(chunks)
        generated: list[_Generated] = []
        stop = threading.Event()
        cancelled = threading.Event()  # set on an interrupt: a run under way is not judged
        gate = MachineGate()
        errors: list[BaseException] = []
        named: dict[int, ScenarioEntry] = {}
        with Progress(
            TextColumn("[bold]certify[/]"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=True,
        ) as progress:
            task = progress.add_task("", total=len(scenarios) + self.examples)
            con = progress.console

            def lane(number: int) -> None:
                try:
                    if number == 0:
                        cluster = clusters[0]
                    else:
                        cluster = Cluster(self.report_dir / f"cluster-{number + 1}", spec)
                        with self._lock:
                            clusters.append(cluster)
                        if stop.is_set():
                            return
                        cluster.start()
                    runner = ScenarioRunner(cluster, cancelled)
                    while not stop.is_set():
                        job = gate.claim(jobs, lambda job: job[1] is not None and job[1].needs_machine_alone)
                        if job is None:
                            return
                        index, scenario = job
                        if scenario is None:
                            with gate.enter(False, stop) as admitted:
                                if not admitted:
                                    return
                                result = self._run_generated(
                                    runner, runs_dir, con, lambda: progress.advance(task), chunks[index], index
                                )
                            with self._lock:
                                generated.append(result)
                            for entry in [*result.flaky, *([result.failure] if result.failure else [])]:
                                self._after(entry)
                            continue
                        with gate.enter(scenario.needs_machine_alone, stop, claimed=True) as admitted:
                            if not admitted:
                                return
                            progress.update(task, description=scenario.name)
                            entry = self._run_one(runner, scenario, runs_dir / f"{index + 1:02d}-{scenario.name}", con)
                        named[index] = entry
                        progress.advance(task)
                        self._after(entry)
                except BaseException as exc:  # handed to the main thread, which decides
                    with self._lock:
                        errors.append(exc)
                    stop.set()

            self.lanes_run = max(1, min(self.parallel, n_jobs))
            lanes = [
                threading.Thread(target=lane, args=(n,), name=f"certify-lane-{n + 1}", daemon=True)
                for n in range(self.lanes_run)
            ]
            for thread in lanes:
                thread.start()
            try:
                # join() with a timeout, so that Ctrl-C reaches this thread between waits.
                while any(thread.is_alive() for thread in lanes):
                    for thread in lanes:
                        thread.join(timeout=0.2)
            except BaseException:
                stop.set()
                cancelled.set()
                # What was finished and what was under way at this moment is the partial report:
                # a scenario judged after its cluster was killed below would be judged on wreckage.
                with self._lock:
                    finished, under_way = list(self.entries), dict(self._current)
                # Killing the lanes' processes ends their scenarios at once; the lanes then see
                # errors and return. Bounded: a lane stuck anyway is a daemon thread.
                for each in list(clusters):
                    each.close()
                for thread in lanes:
                    thread.join(timeout=10.0)
                with self._lock:
                    self.entries[:] = finished
                    self._current = under_way
                raise
        self._report_generated(generated, con)
        in_catalog = {id(entry) for entry in named.values()}
        self.entries[:] = [named[i] for i in sorted(named)] + [e for e in self.entries if id(e) not in in_catalog]
        if errors:
            # A stop asked for by --fail-fast is not an error; any other is.
            real = [e for e in errors if not isinstance(e, _FailFast)]
            raise real[0] if real else errors[0]

    def _interrupted(self, cert: Certificate, exc: KeyboardInterrupt) -> None:
        sig = interrupt_signal(exc)
        finished = len(self.entries)
        for scenario, kind, run_dir, t0 in list(self._current.values()):
            elapsed = time.monotonic() - t0
            self.entries.append(
                ScenarioEntry(
                    name=scenario.name if kind == "named" else f"generated:{scenario.name}",
                    description=scenario.description,
                    kind=kind,
                    run_dir=str(run_dir.resolve()),
                    duration_s=round(elapsed, 2),
                    passed=False,
                    outcome=INCONCLUSIVE,
                    reasons=[f"interrupted by {sig.name} {elapsed:.1f} s into the run; the partial run was not judged"],
                )
            )
        cert.verdict = INTERRUPTED
        cert.error = (
            f"interrupted by {sig.name} during {self.stage}, after {finished} finished scenario(s): "
            "a partial report, never a certification"
        )
        cert.extra[INTERRUPTED_KEY] = {
            "signal": sig.name,
            "exit_code": interrupted_exit_code(sig),
            "during": self.stage,
            "finished_scenarios": finished,
        }

    def _judged_entry(self, runner: ScenarioRunner, scenario: Scenario, run_dir: Path, kind: str) -> ScenarioEntry:
        t0 = time.monotonic()
        lane = threading.get_ident()
        with self._lock:
            self._current[lane] = (scenario, kind, run_dir, t0)
            self.stage = ", ".join(f"scenario {s.name} ({d})" for s, _k, d, _t in self._current.values())
        try:
            judged = runner.run(scenario, run_dir)
        finally:
            with self._lock:
                self._current.pop(lane, None)
        spent = {**{k: float(v) for k, v in judged.meta.durations.items()}, "judge": judged.judge_s or 0.0}
        with self._lock:
            for part, seconds in spent.items():
                self.time_in_runs[part] = self.time_in_runs.get(part, 0.0) + seconds
        if judged.results:
            with self._lock:
                for k, v in judged.meta.capabilities.items():
                    self.capabilities[k] = self.capabilities.get(k, True) and bool(v)
        return scenario_entry(judged, kind, time.monotonic() - t0)

    def _run_one(self, runner: ScenarioRunner, scenario: Scenario, run_dir: Path, con: Console) -> ScenarioEntry:
        entry = self._judged_entry(runner, scenario, run_dir, "named")
        if entry.effective_outcome == INCONCLUSIVE:
            # Once more: a harness hiccup should not decide a certification; a second one does.
            self._print_line(entry, con, suffix=" (running it again)")
            first = entry
            entry = self._judged_entry(runner, scenario, run_dir.with_name(run_dir.name + "-rerun"), "named")
            entry.earlier_runs = [str(first.run_dir), *first.earlier_runs]
            entry.duration_s = round((first.duration_s or 0.0) + (entry.duration_s or 0.0), 2)
            if entry.effective_outcome == INCONCLUSIVE:
                entry.reasons = [*entry.reasons, *(f"first run: {r}" for r in first.reasons)]
        with self._lock:
            self.entries.append(entry)
        self._print_line(entry, con)
        return entry

    def _after(self, entry: ScenarioEntry) -> None:
        with self._lock:
            first = entry.failing and self.first_failure_s is None
            if first:
                self.first_failure_s = round(time.monotonic() - self._started_mono, 1)
        if first:
            if self.fail_fast:
                self.console.print(
                    f"--fail-fast: first failure after {self.first_failure_s:.1f} s; stopping", highlight=False
                )
                raise _FailFast

    def _print_line(self, entry: ScenarioEntry, con: Console, suffix: str = "") -> None:
        con.print(console_line(entry) + suffix, highlight=False)
        for reason in entry.reasons[:3]:
            con.print(f"    {clip(reason, 300)}", highlight=False)

    def _run_generated(
        self,
        runner: ScenarioRunner,
        runs_dir: Path,
        con: Console,
        advance: Callable[[], None],
        examples: int,
        chunk: int,
    ) -> _Generated:
        """One lane's share of the generated plans: ``examples`` of them, in one Hypothesis run.

        With ``--seed N`` chunk ``k`` is seeded ``N + k``, so the same seed and ``--parallel``
        draw the same plans.
        """
        from hypothesis import HealthCheck, Phase, given, reject, seed, settings
        from hypothesis.database import DirectoryBasedExampleDatabase
        from hypothesis.errors import Unsatisfiable

        from harness.strategies import fault_plans, note_plan_events

        phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if self.profile.shrink else [])
        if self.seed is not None:
            # A seed reproduces the plans only without the example database replaying old ones.
            phases = [p for p in phases if p != Phase.reuse]
        last_failure: list[ScenarioEntry] = []
        flaky: list[ScenarioEntry] = []
        discarded: list[ScenarioEntry] = []

        def run_plan(plan: Scenario, suffix: str = "") -> ScenarioEntry:
            return self._judged_entry(
                runner, plan, runs_dir / f"gen-{time.monotonic_ns()}-{plan.name}{suffix}", "generated"
            )

        @settings(
            max_examples=examples,
            deadline=None,
            phases=phases,
            database=None
            if self.seed is not None
            else DirectoryBasedExampleDatabase(str(Path(".hypothesis") / "certify")),
            suppress_health_check=list(HealthCheck),
            print_blob=False,
            report_multiple_bugs=False,
        )
        @given(fault_plans())
        def generated(plan: Scenario) -> None:
            note_plan_events(plan)
            if not last_failure:
                # Every chunk's Hypothesis run starts from the simplest plan: a plan another chunk
                # already ran is drawn again for nothing. (Shrinking a failure may revisit plans.)
                with self._lock:
                    seen = plan.name in self._plans_run
                    self._plans_run.add(plan.name)
                if seen:
                    reject()
            entry = run_plan(plan)
            if entry.effective_outcome == PASSED:
                # After a failure, Hypothesis only shrinks or replays it: those runs are not
                # further evidence that plans pass, and must not be shown as passes.
                if not last_failure and len(passes) < examples:
                    passes.append(entry)
                    advance()
                return
            if entry.effective_outcome == INCONCLUSIVE:
                # A plan that could not judge the build (its fault on an idle link, say) tests
                # nothing; running it again would not change that. It does not count, and
                # Hypothesis draws another.
                discarded.append(entry)
                reject()
            # Failed: the same plan once more decides whether it is a failure or flaky.
            again = run_plan(plan, "-rerun")
            entry.earlier_runs = [str(again.run_dir)]
            if again.effective_outcome == PASSED:
                entry.outcome = FLAKY
                entry.reasons = [f"failed, then passed when run again: {again.run_dir}"]
                flaky.append(entry)
                return
            # Failed again (that run is shown), or inconclusive the second time (the failure
            # seen stands: it is proof).
            if again.effective_outcome == FAILED:
                again.earlier_runs = [str(entry.run_dir)]
                entry = again
            last_failure[:] = [entry]
            raise AssertionError(f"generated plan {plan.name} failed")

        passes: list[ScenarioEntry] = []
        if self.seed is not None:
            generated = seed(self.seed + chunk)(generated)
        try:
            generated()
        except (BuildFailed, ProcessFailed, _FailFast):
            raise
        except Unsatisfiable:
            pass  # every plan was discarded as inconclusive: reported below, not a harness error
        except Exception as exc:
            # A failing plan (AssertionError) or Hypothesis' verdict on one that failed only
            # sometimes (FlakyFailure): either way the build failed a generated plan.
            if not last_failure:
                raise RuntimeError(f"generated plans stopped: {type(exc).__name__}: {exc}") from exc
        return _Generated(passes, discarded, flaky, last_failure[0] if last_failure else None)

    def _report_generated(self, results: list[_Generated], con: Console) -> None:
        """Every lane's generated plans as rows: the passes summarised in one, a failure (shrunk,
        when the profile shrinks) and each flaky plan in rows of their own."""
        passes = [e for r in results for e in r.passes]
        discarded = [e for r in results for e in r.discarded]
        if passes:
            summary = _summarise_generated(passes)
            with self._lock:
                self.entries.append(summary)
            self._print_line(summary, con)
        if discarded:
            con.print(
                f"  {len(discarded)} generated plan(s) discarded as inconclusive, e.g. {discarded[0].run_dir}: "
                f"{clip('; '.join(discarded[0].reasons), 300)}",
                highlight=False,
            )
        for result in results:
            for entry in result.flaky:
                entry.name = f"generated:{entry.name}"
                with self._lock:
                    self.entries.append(entry)
                self._print_line(entry, con)
                con.print(f"  failing run: {entry.run_dir}; passing run: {entry.earlier_runs[0]}", highlight=False)
            if result.failure is not None:
                failure = result.failure
                failure.name = f"generated:{failure.name}"
                with self._lock:
                    self.entries.append(failure)
                self._print_line(failure, con)
                shrunk = "shrunk " if self.profile.shrink else ""
                con.print(f"  failing {shrunk}plan: {failure.run_dir}/scenario.json", highlight=False)
                con.print(f"  replay: {failure.replay}", highlight=False)


@dataclass
class _Generated:
    """What one lane's Hypothesis run of generated plans found."""

    passes: list[ScenarioEntry]
    discarded: list[ScenarioEntry]
    flaky: list[ScenarioEntry]
    failure: ScenarioEntry | None


def estimated_s(scenario: Scenario) -> float:
    """A scenario's wall time for a build that passes it, roughly: its timed phases, plus its
    clients' connects (tens a second on 2 cores). A fault phase that ends on failover is over by the
    failover deadline after the last step for such a build. Only the order of jobs depends on it."""
    faults_s = scenario.fault_phase_s
    if scenario.phases.faults_end_on_failover and scenario.steps:
        faults_s = min(faults_s, max(s.at_s for s in scenario.steps) + scenario.expect.failover_deadline_s)
    return scenario.phases.warmup_s + faults_s + scenario.workload.clients / 50


def fault_kind_of(scenario: Scenario) -> str:
    """What a scenario exercises, for ``job_order``: its first step's fault kind; a limit's edge
    (tag "boundary") or a scenario without fault steps probes something of its own, whatever fault
    it uses to get there."""
    if "boundary" in scenario.tags or not scenario.steps:
        return f"probe:{scenario.name}"
    return scenario.steps[0].fault.kind


def job_order(scenarios: list[Scenario], chunks: int, fail_fast: bool) -> list[tuple[int, Scenario | None]]:
    """The lanes' queue: ``(index, scenario)`` for a named scenario, ``(chunk, None)`` for a chunk
    of generated plans.

    Normally the scenarios that need the machine alone first, while every lane is still free (any
    later, every other lane idles while the ones under way drain before it, then while it runs);
    then the generated chunks, which run several plans each; then the longest first
    (longest-processing-time scheduling: no lane is left running a long job alone at the end).

    With ``--fail-fast`` the aim is the earliest first failure instead: every fault kind once
    before any kind twice (a defect shows under some kind of fault, and which one is not known in
    advance; each limit probe counts as a kind of its own), each round in catalog order
    (``scenarios.ORDER`` puts the classic faults first), and the generated chunks last. Within a
    kind the shortest scenario goes in the earliest round.
    """
    if not fail_fast:
        ranked = sorted(enumerate(scenarios), key=lambda item: estimated_s(item[1]), reverse=True)
        alone = [item for item in ranked if item[1].needs_machine_alone]
        shared = [item for item in ranked if not item[1].needs_machine_alone]
        return [*alone, *[(chunk, None) for chunk in range(chunks)], *shared]
    by_kind: dict[str, list[tuple[int, Scenario]]] = {}
    for index, scenario in sorted(enumerate(scenarios), key=lambda item: estimated_s(item[1])):
        by_kind.setdefault(fault_kind_of(scenario), []).append((index, scenario))
    rounds: list[list[tuple[int, Scenario]]] = []
    for members in by_kind.values():
        for depth, member in enumerate(members):
            if depth == len(rounds):
                rounds.append([])
            rounds[depth].append(member)
    named: list[tuple[int, Scenario | None]] = [item for round_ in rounds for item in sorted(round_)]
    return named + [(chunk, None) for chunk in range(chunks)]


def generated_chunks(examples: int, lanes: int) -> list[int]:
    """How many generated plans each of up to ``lanes`` Hypothesis runs draws: as even as can be,
    at least 2 each (a run of 1 would never get past Hypothesis' simplest plan)."""
    if examples <= 0:
        return []
    count = max(1, min(lanes, examples // 2))
    return [examples // count + (1 if k < examples % count else 0) for k in range(count)]


def _summarise_generated(entries: list[ScenarioEntry]) -> ScenarioEntry:
    results: dict[str, ResultEntry] = {}
    for inv in INVARIANTS:
        statuses = [e.results[inv].status for e in entries if inv in e.results]
        if not statuses:
            continue
        # Every one of these plans passed, so each invariant was passed or had nothing to judge in
        # it: a pass where at least one plan judged it, saying in how many.
        judged = statuses.count(PASS)
        status: Status = PASS if judged else NOT_CHECKED
        results[inv] = ResultEntry(status, f"judged in {judged} of {len(statuses)} generated plans", [], status)
    return ScenarioEntry(
        name=f"generated plans ({len(entries)})",
        description="Hypothesis-generated fault plans that passed",
        kind="generated",
        run_dir=entries[-1].run_dir,
        duration_s=round(sum(e.duration_s or 0.0 for e in entries), 2),
        passed=True,
        results=results,
        notes=[],
        replay=entries[-1].replay,
        outcome=PASSED,
    )


_MARKS = {PASSED: "[green]PASS[/]", FAILED: "[red]FAIL[/]", INCONCLUSIVE: "[yellow]INCONCLUSIVE[/]",
          FLAKY: "[red]FLAKY[/]"}  # fmt: skip


def console_line(entry: ScenarioEntry) -> str:
    """One scenario's console line: its outcome, and for a failure the first violation in words."""
    outcome = entry.effective_outcome
    failed = [name for name, r in entry.results.items() if r.status == "fail"]
    unchecked = [r.status for r in entry.results.values()].count(NOT_CHECKED)
    extra = f" violated: {', '.join(failed)}" if failed else ""
    if unchecked:
        extra += f" ({unchecked} not checked)"
    first = entry.first_violation
    if first and outcome in (FAILED, FLAKY):
        extra += f": {clip(first, 200)}"
    return f"{_MARKS[outcome]} {entry.name:<28} {entry.duration_s or 0.0:5.1f}s{extra}"


def time_spent_line(startup_s: float | None, time_in_runs: dict[str, float], lanes: int) -> str:
    """Where the time went, in one console line: the start and smoke gate, then each part of the
    runs summed over every run (so over ``lanes`` lanes at once: the sum exceeds the wall time)."""
    parts = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in time_in_runs.items())
    start = f"start and smoke gate {startup_s:.0f} s; " if startup_s is not None else ""
    return f"time: {start}in runs, summed over {lanes} lane(s): {parts}"


def report_dir_problem(report_dir: Path) -> str | None:
    """Why the report cannot be written to ``report_dir``, found before anything runs (a path under
    a regular file, a read-only file system, a full disk), or None."""
    probe = report_dir / f".wschaos-write-test-{os.getpid()}"
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"certify\n")
        probe.unlink()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(report_dir) else ""
        return f"cannot write the report directory {report_dir}: {exc.strerror or exc}{where}"
    return None


def certify_main(args: Any) -> int:
    from harness.report import write_report

    # No hard wrapping: paths and commands in messages must stay copyable and greppable.
    console = Console(soft_wrap=True)
    cmd = args.balancer_cmd or os.environ.get("WSCHAOS_BALANCER_CMD") or "python -m balancer {config}"
    if "{config}" not in cmd:
        console.print(f"certify: --balancer-cmd must contain {{config}} (got {cmd!r})", highlight=False)
        return EXIT_BUILD
    try:
        shlex.split(cmd)
    except ValueError as exc:
        console.print(f"certify: --balancer-cmd cannot be parsed: {exc}", highlight=False)
        return EXIT_BUILD
    profile = PROFILES[args.profile]
    report_dir = Path(args.report or f"reports/certify-{time.strftime('%Y%m%d-%H%M%S')}")
    problem = report_dir_problem(report_dir)
    if problem:
        console.print(f"certify: {problem}", highlight=False)
        return EXIT_BUILD
    extra = []
    if args.scenario_file:
        from harness.catalog import load_scenario_file
        from harness.scenario import ScenarioError

        try:
            extra = [load_scenario_file(p) for p in args.scenario_file]
        except ScenarioError as exc:
            console.print(f"certify: {exc}", highlight=False)
            return EXIT_BUILD
    examples = args.generated if args.generated is not None else args.hypothesis_examples
    if examples is None and args.scenario:
        examples = 0  # --scenario runs only what it names, unless --generated N asks for plans too
    certifier = Certifier(
        balancer_cmd=cmd,
        profile=profile,
        report_dir=report_dir,
        toxiproxy_url=args.toxiproxy_url or os.environ.get("TOXIPROXY_URL") or None,
        only=args.scenario or None,
        extra=extra,
        hypothesis_examples=examples,
        ready_timeout_s=args.ready_timeout,
        smoke_timeout_s=args.smoke_timeout or SMOKE_TIMEOUT_S,
        console=console,
        fail_fast=args.fail_fast,
        seed=args.seed,
        parallel=args.parallel or default_parallel(),
    )
    console.print(f"certifying [bold]{cmd}[/] (profile {profile.name}) → {report_dir}", highlight=False)
    try:
        certifier.scenarios()
    except ValueError as exc:
        console.print(f"certify: {exc}", highlight=False)
        return EXIT_BUILD
    if certifier.not_run:
        console.print(
            f"not run in profile {profile.name}: {', '.join(certifier.not_run)} "
            f"(tagged {', '.join(profile.skip_tags)}; --profile ci runs them)",
            highlight=False,
        )
    cert = certifier.certify()
    try:
        paths: dict[str, Path] | None = write_report(report_dir, cert)
    except OSError as exc:
        # Checked writable at the start; a disk that filled up during the run ends here.
        paths = None
        unwritten = f"certify: the report could not be written to {report_dir}: {exc.strerror or exc}"
    verdict = cert.verdict
    if verdict == REFUSED:
        console.print(f"[red bold]REFUSED[/]: {cert.error}", highlight=False)
    elif verdict == INTERRUPTED:
        console.print(f"[yellow bold]INTERRUPTED[/]: {cert.error}; every process was stopped", highlight=False)
    elif verdict == ERROR:
        console.print(f"[red bold]ERROR[/]: {cert.error}", highlight=False)
        if (cert.error or "").startswith("harness error"):
            console.print("this is a wschaos problem, not the build's; please report it", highlight=False)
    else:
        blackbox = [k for k, v in cert.capabilities.items() if not v]
        note = f" (black-box: no {', no '.join(blackbox)})" if blackbox else ""
        color = {CERTIFIED: "green", REJECTED: "red"}.get(verdict, "yellow")
        if cert.build.get("died"):
            console.print(cert.build["died"], highlight=False)
        if verdict == "inconclusive":
            undecided = [e.name for e in cert.scenarios if e.effective_outcome == INCONCLUSIVE]
            note += f" ({', '.join(undecided)} could not be judged twice; never certified)"
        console.print(f"verdict: [{color} bold]{verdict.upper()}[/]{note}", highlight=False)
    if certifier.time_in_runs:
        spent = time_spent_line(certifier.startup_s, certifier.time_in_runs, certifier.lanes_run)
        console.print(spent, highlight=False)
    if certifier.first_failure_s is not None:
        console.print(f"first failure after {certifier.first_failure_s:.1f} s", highlight=False)
    code = EXIT_CODES.get(verdict, EXIT_BUILD)
    if verdict == INTERRUPTED:
        code = int(cert.extra[INTERRUPTED_KEY]["exit_code"])
    if paths is None:
        # The verdict above stands, but without its report nothing downstream can use it.
        console.print(unwritten, highlight=False)
        for entry in cert.scenarios:
            for reason in entry.reasons[:3]:
                console.print(f"  {entry.name}: {clip(reason, 300)}", highlight=False)
        sys.stdout.flush()
        return code if verdict == INTERRUPTED else EXIT_BUILD
    console.print(f"report:      {paths['html']}", highlight=False, soft_wrap=True)
    console.print(f"certificate: {paths['certificate']}", highlight=False, soft_wrap=True)
    console.print(f"junit:       {paths['junit']}", highlight=False, soft_wrap=True)
    sys.stdout.flush()
    return code
