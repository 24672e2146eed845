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

from harness.records import Certificate, RecordError, read_json_object

CERTIFIED_EXIT = 0
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

    @property
    def passed(self) -> bool:
        return self.exit_code == CERTIFIED_EXIT

    def line(self, total: int) -> str:
        mark = "PASS" if self.passed else "FAIL"
        head = f"run {self.index:>2}/{total}: {mark} {self.verdict:<10} {self.duration_s:6.1f}s"
        if self.passed:
            return head
        where = "; ".join(self.failing) or f"exit {self.exit_code}, report {self.report}"
        return f"{head}  {where}"


def outcome_of(index: int, report: Path, exit_code: int | None, duration_s: float) -> RunOutcome:
    """Reads what one certify run left behind (pure apart from reading its certificate)."""
    verdict, failing = "no certificate", tuple[str, ...]()
    try:
        cert = Certificate.from_json(read_json_object(report / "certificate.json"))
    except (OSError, RecordError):
        pass
    else:
        verdict = cert.verdict
        failing = tuple(f"{s.name}: {s.run_dir}" for s in cert.scenarios if s.failing)
    if exit_code is None:
        verdict = "timed out"
    return RunOutcome(index, report, exit_code, duration_s, verdict, failing)


def summary(outcomes: list[RunOutcome]) -> list[str]:
    failed = [o for o in outcomes if not o.passed]
    lines = [f"flake-check: {len(outcomes) - len(failed)} passed, {len(failed)} failed of {len(outcomes)} runs"]
    for o in failed:
        lines.append(f"  run {o.index}: {o.verdict}, report {o.report}")
        lines.extend(f"    {f}" for f in o.failing)
    return lines


def _certify(report: Path, balancer_cmd: str | None) -> int | None:
    argv = [sys.executable, "-m", "harness", "certify", "--profile", "ci", "--report", str(report)]
    if balancer_cmd:
        argv += ["--balancer-cmd", balancer_cmd]
    with open(report.with_suffix(".log"), "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            return proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()  # certify reaps its cluster on SIGTERM
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return None
        except BaseException:
            proc.terminate()
            proc.wait(timeout=60)
            raise


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
    outcomes: list[RunOutcome] = []
    for i in range(1, args.runs + 1):
        report = root / f"run-{i:02d}"
        t0 = time.monotonic()
        code = _certify(report, args.balancer_cmd)
        outcome = outcome_of(i, report, code, time.monotonic() - t0)
        outcomes.append(outcome)
        print(outcome.line(args.runs), flush=True)
    for line in summary(outcomes):
        print(line, flush=True)
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
