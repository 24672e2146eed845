"""``make flake-check``: certify the reference balancer with the ``ci`` profile N times.

    python -m harness.flakecheck [--runs 20] [--report-dir reports/flake] [--balancer-cmd CMD]

The ``ci`` chaos suite is ``certify --profile ci`` (every named scenario plus the ci budget of
generated plans): it is what CI gates on, and each run leaves a report directory with one run
directory per scenario, which is where a flake is investigated. Prints one line per run (PASS, or
FAIL with the failing scenarios' run directories), then a summary. Exits 1 if any run failed:
against a correct build, every failure is a bug to find at its root (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.procs import install_signal_handlers, interrupt_signal, run_forwarding_interrupts
from harness.records import INCONCLUSIVE, Certificate, RecordError, read_json_object

CERTIFIED_EXIT = 0
#: certify exits 128 + N when a signal N stopped it (docs/verdicts.md).
INTERRUPT_EXIT_BASE = 128
# One certify --profile ci run is budgeted at 10 minutes; a run past twice that is hung.
RUN_TIMEOUT_S = 1200.0


@dataclass(frozen=True)
class RunOutcome:
    index: int
    report: Path
    exit_code: int | None
    duration_s: float
    verdict: str
    failing: tuple[str, ...]  # "scenario: run_dir"
    #: Scenarios nothing could be said about, with their first reason ("scenario: reason"): not a
    #: failure of the build, and not a pass either (docs/verdicts.md).
    inconclusive: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.exit_code == CERTIFIED_EXIT

    @property
    def only_inconclusive(self) -> bool:
        """Not certified, and nothing failed: the run could not judge everything."""
        return not self.passed and self.verdict == INCONCLUSIVE and not self.failing

    def line(self, total: int) -> str:
        mark = "PASS" if self.passed else "INCONCLUSIVE" if self.only_inconclusive else "FAIL"
        head = f"run {self.index:>2}/{total}: {mark} {self.verdict:<10} {self.duration_s:6.1f}s"
        if self.passed:
            return head
        named = self.failing or self.inconclusive
        where = "; ".join(named) if named else f"exit {self.exit_code}, report {self.report}"
        return f"{head}  {where}"


def outcome_of(index: int, report: Path, exit_code: int | None, duration_s: float) -> RunOutcome:
    """Reads what one certify run left behind (pure apart from reading its certificate)."""
    verdict, failing, inconclusive = "no certificate", tuple[str, ...](), tuple[str, ...]()
    try:
        cert = Certificate.from_json(read_json_object(report / "certificate.json"))
    except (OSError, RecordError):
        pass
    else:
        verdict = cert.verdict
        failing = tuple(f"{s.name}: {s.run_dir}" for s in cert.scenarios if s.failing)
        inconclusive = tuple(
            f"{s.name}: {(s.reasons or ['no reason given'])[0][:300]}"
            for s in cert.scenarios
            if s.effective_outcome == INCONCLUSIVE
        )
    if exit_code is None:
        verdict = "timed out"
    return RunOutcome(index, report, exit_code, duration_s, verdict, failing, inconclusive)


def summary(outcomes: list[RunOutcome]) -> list[str]:
    passed = [o for o in outcomes if o.passed]
    inconclusive = [o for o in outcomes if o.only_inconclusive]
    failed = [o for o in outcomes if not o.passed and not o.only_inconclusive]
    lines = [
        f"flake-check: {len(passed)} passed, {len(inconclusive)} inconclusive, {len(failed)} failed "
        f"of {len(outcomes)} runs"
    ]
    for o in [*failed, *inconclusive]:
        lines.append(f"  run {o.index}: {o.verdict}, report {o.report}")
        lines.extend(f"    {f}" for f in o.failing or o.inconclusive)
    return lines


def _certify(report: Path, balancer_cmd: str | None) -> int | None:
    argv = [sys.executable, "-m", "harness", "certify", "--profile", "ci", "--report", str(report)]
    if balancer_cmd:
        argv += ["--balancer-cmd", balancer_cmd]
    with open(report.with_suffix(".log"), "wb") as log:
        try:
            done = run_forwarding_interrupts(
                argv, timeout_s=RUN_TIMEOUT_S, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            return None
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.flakecheck", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="how many times to certify (default 20)")
    parser.add_argument("--report-dir", default="reports/flake", help="one report directory per run goes here")
    parser.add_argument("--balancer-cmd", default=None, help="the build (default: the reference balancer)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    root = Path(args.report_dir) / time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    install_signal_handlers()  # SIGTERM raises like Ctrl-C, so the running certify is stopped too
    outcomes: list[RunOutcome] = []
    try:
        for i in range(1, args.runs + 1):
            report = root / f"run-{i:02d}"
            t0 = time.monotonic()
            code = _certify(report, args.balancer_cmd)
            outcome = outcome_of(i, report, code, time.monotonic() - t0)
            outcomes.append(outcome)
            print(outcome.line(args.runs), flush=True)
            if code is not None and code > INTERRUPT_EXIT_BASE:
                # The certify itself was interrupted (by someone else): that is no flake, and
                # going on would not be what whoever stopped it wanted.
                print(f"flake-check: run {i} was interrupted (exit {code}); stopping", flush=True)
                return code
    except KeyboardInterrupt as exc:
        sig = interrupt_signal(exc)
        for line in summary(outcomes):
            print(line, flush=True)
        print(f"flake-check: INTERRUPTED by {sig.name} during run {len(outcomes) + 1}; its certify was stopped")
        return INTERRUPT_EXIT_BASE + sig
    for line in summary(outcomes):
        print(line, flush=True)
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
