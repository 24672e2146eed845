"""Certification: runs the chaos suite against a balancer build and issues a verdict.

Exit codes (docs/verdicts.md): 0 certified; 1 rejected (an invariant was violated, or a generated
plan failed then passed: flaky); 2 the build did not start, never became ready, or relayed no game
at all (the smoke gate), or the command line was wrong; 3 inconclusive (a scenario could not be
judged, twice).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import harness
from harness.catalog import named_scenarios
from harness.cluster import BuildFailed, Cluster, ClusterSpec
from harness.procs import ProcessFailed
from harness.records import (
    CERTIFIED,
    ERROR,
    EXIT_CODES,
    FAILED,
    FLAKY,
    INCONCLUSIVE,
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
)
from harness.runner import JudgedRun, ScenarioRunner
from harness.scenario import INVARIANTS, Scenario
from harness.smoke import SMOKE_CLIENTS, SMOKE_TIMEOUT_S, SmokeFailed, smoke_gate

EXIT_CERTIFIED, EXIT_REJECTED, EXIT_BUILD, EXIT_INCONCLUSIVE = 0, 1, 2, 3


class _FailFast(Exception):
    """--fail-fast: a scenario failed; stop here."""


@dataclass(frozen=True)
class Profile:
    """Every profile runs every named scenario; they differ in the Hypothesis budget."""

    name: str
    hypothesis_examples: int
    shrink: bool


PROFILES = {
    # Within 3 minutes on 2 cores (measured: ~1.5 min of named scenarios, ~8 s a plan):
    # every named scenario and 5 generated plans, not shrunk.
    "quick": Profile("quick", hypothesis_examples=5, shrink=False),
    # Within 10 minutes: every named scenario and 20 generated plans, shrunk on failure.
    "ci": Profile("ci", hypothesis_examples=20, shrink=True),
    # Long: every named scenario and 100 generated plans.
    "nightly": Profile("nightly", hypothesis_examples=100, shrink=True),
}


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
    ) -> None:
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

    def scenarios(self) -> list[Scenario]:
        catalog = named_scenarios()
        if self.only:
            unknown = [n for n in self.only if n not in catalog]
            if unknown:
                raise ValueError(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(catalog)})")
            chosen = [catalog[n] for n in self.only]
        else:
            chosen = list(catalog.values())
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
        started_ok = False
        try:
            cluster.start()
            started_ok = True
            self.console.print(
                f"smoke gate: {SMOKE_CLIENTS} clients must play within {self.smoke_timeout_s:g} s", highlight=False
            )
            smoke_gate(cluster, self.report_dir / "smoke", self.smoke_timeout_s)
            runner = ScenarioRunner(cluster)
            total = len(scenarios) + self.examples
            with Progress(
                TextColumn("[bold]certify[/]"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=self.console,
                transient=True,
            ) as progress:
                task = progress.add_task("", total=total)
                for scenario in scenarios:
                    progress.update(task, description=scenario.name)
                    self._run_one(runner, scenario, runs_dir, "named", progress.console)
                    progress.advance(task)
                if self.examples:
                    self._run_generated(runner, runs_dir, progress.console, lambda: progress.advance(task))
        except _FailFast:
            pass
        except SmokeFailed as exc:
            cert.verdict = REFUSED
            cert.error = str(exc)
        except BuildFailed as exc:
            if started_ok:
                # It started, ran, then died for good: that is the build failing the suite.
                self.build_died = f"the balancer build died mid-run and could not be restarted:\n{exc}"
            else:
                cert.error = f"the balancer build did not start or never became ready:\n{exc}"
        except ProcessFailed as exc:
            cert.error = f"the harness could not start its own processes:\n{exc}"
            cert.verdict = ERROR
        except Exception as exc:
            cert.error = f"harness error: {type(exc).__name__}: {exc}"
        finally:
            cluster.close()
        cert.build["capabilities"] = self.capabilities
        cert.duration_s = round(time.time() - started, 1)
        if self.first_failure_s is not None:
            cert.extra["first_failure_s"] = self.first_failure_s
        if self.seed is not None:
            cert.extra["seed"] = self.seed
        if self.build_died:
            cert.build["died"] = self.build_died
            cert.verdict = REJECTED
        elif cert.error is None:
            cert.verdict = certificate_verdict(self.entries)
        return cert

    def _judged_entry(self, runner: ScenarioRunner, scenario: Scenario, run_dir: Path, kind: str) -> ScenarioEntry:
        t0 = time.monotonic()
        judged = runner.run(scenario, run_dir)
        if judged.results:
            for k, v in judged.meta.capabilities.items():
                self.capabilities[k] = self.capabilities.get(k, True) and bool(v)
        return scenario_entry(judged, kind, time.monotonic() - t0)

    def _run_one(self, runner: ScenarioRunner, scenario: Scenario, runs_dir: Path, kind: str, con: Console) -> bool:
        run_dir = runs_dir / f"{len(self.entries) + 1:02d}-{scenario.name}"
        entry = self._judged_entry(runner, scenario, run_dir, kind)
        if entry.effective_outcome == INCONCLUSIVE:
            # Once more: a harness hiccup should not decide a certification; a second one does.
            self._print_line(entry, con, suffix=" (running it again)")
            first = entry
            entry = self._judged_entry(runner, scenario, run_dir.with_name(run_dir.name + "-rerun"), kind)
            entry.earlier_runs = [str(first.run_dir), *first.earlier_runs]
            entry.duration_s = round((first.duration_s or 0.0) + (entry.duration_s or 0.0), 2)
            if entry.effective_outcome == INCONCLUSIVE:
                entry.reasons = [*entry.reasons, *(f"first run: {r}" for r in first.reasons)]
        self.entries.append(entry)
        self._print_line(entry, con)
        self._after(entry)
        return entry.effective_outcome == PASSED

    def _after(self, entry: ScenarioEntry) -> None:
        if entry.failing and self.first_failure_s is None:
            self.first_failure_s = round(time.monotonic() - self._started_mono, 1)
            if self.fail_fast:
                self.console.print(
                    f"--fail-fast: first failure after {self.first_failure_s:.1f} s; stopping", highlight=False
                )
                raise _FailFast

    def _print_line(self, entry: ScenarioEntry, con: Console, suffix: str = "") -> None:
        con.print(console_line(entry) + suffix, highlight=False)
        for reason in entry.reasons[:3]:
            con.print(f"    {clip(reason, 300)}", highlight=False)

    def _run_generated(self, runner: ScenarioRunner, runs_dir: Path, con: Console, advance: Callable[[], None]) -> None:
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
            max_examples=self.examples,
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
            entry = run_plan(plan)
            if entry.effective_outcome == PASSED:
                # After a failure, Hypothesis only shrinks or replays it: those runs are not
                # further evidence that plans pass, and must not be shown as passes.
                if not last_failure and len(self._generated_passes) < self.examples:
                    self._generated_passes.append(entry)
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

        self._generated_passes: list[ScenarioEntry] = []
        if self.seed is not None:
            generated = seed(self.seed)(generated)
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
        # Passing examples are summarised in one row; a failure (shrunk, when the profile shrinks)
        # and each flaky plan are rows of their own.
        if self._generated_passes:
            self.entries.append(_summarise_generated(self._generated_passes))
            self._print_line(self.entries[-1], con)
        if discarded:
            con.print(
                f"  {len(discarded)} generated plan(s) discarded as inconclusive, e.g. {discarded[0].run_dir}: "
                f"{clip('; '.join(discarded[0].reasons), 300)}",
                highlight=False,
            )
        for entry in flaky:
            entry.name = f"generated:{entry.name}"
            self.entries.append(entry)
            self._print_line(entry, con)
            con.print(f"  failing run: {entry.run_dir}; passing run: {entry.earlier_runs[0]}", highlight=False)
            self._after(entry)
        if last_failure:
            failure = last_failure[0]
            failure.name = f"generated:{failure.name}"
            self.entries.append(failure)
            self._print_line(failure, con)
            shrunk = "shrunk " if self.profile.shrink else ""
            con.print(f"  failing {shrunk}plan: {failure.run_dir}/scenario.json", highlight=False)
            con.print(f"  replay: {failure.replay}", highlight=False)
            self._after(failure)


def _summarise_generated(entries: list[ScenarioEntry]) -> ScenarioEntry:
    results: dict[str, ResultEntry] = {}
    for inv in INVARIANTS:
        statuses = [e.results[inv].status for e in entries if inv in e.results]
        if not statuses:
            continue
        status: Status = PASS if all(s == PASS for s in statuses) else NOT_CHECKED
        results[inv] = ResultEntry(status, f"{len(statuses)} generated plans", [], status)
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
        console=console,
        fail_fast=args.fail_fast,
        seed=args.seed,
    )
    console.print(f"certifying [bold]{cmd}[/] (profile {profile.name}) → {report_dir}", highlight=False)
    try:
        certifier.scenarios()
    except ValueError as exc:
        console.print(f"certify: {exc}", highlight=False)
        return EXIT_BUILD
    cert = certifier.certify()
    paths = write_report(report_dir, cert)
    verdict = cert.verdict
    if verdict == REFUSED:
        console.print(f"[red bold]REFUSED[/]: {cert.error}", highlight=False)
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
    if certifier.first_failure_s is not None:
        console.print(f"first failure after {certifier.first_failure_s:.1f} s", highlight=False)
    code = EXIT_CODES.get(verdict, EXIT_BUILD)
    console.print(f"report:      {paths['html']}", highlight=False, soft_wrap=True)
    console.print(f"certificate: {paths['certificate']}", highlight=False, soft_wrap=True)
    console.print(f"junit:       {paths['junit']}", highlight=False, soft_wrap=True)
    sys.stdout.flush()
    return code
