"""The mutation table: a full ``certify --profile quick`` of every mutant build, one at a time.

    python tests/selftest/mutation_table.py [--out docs/mutants.md] [--reports reports/mutation]
                                            [--only NAME ...]

For each mutant it prints (and writes to ``--out`` as Markdown): the expected invariant, whether the
certification rejected the build *naming that invariant*, the scenarios in which that invariant
failed, any other invariants that failed, and how long the certification took. The control build
is run too and must be certified. Exit 0 when every mutant is caught and the control certified.

SIGINT or SIGTERM is forwarded to the running ``certify`` (which stops its cluster and writes a
partial report); the table waits for it (bounded), keeps the rows it measured, and exits 128 + N.

Certify runs with ``--fail-fast`` when the CLI has it (it stops at the first rejected scenario, so
"caught by" then lists the first scenario that caught the mutant, not all of them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness.procs import (  # noqa: E402
    install_signal_handlers,
    interrupt_signal,
    run_forwarding_interrupts,
)
from tests.selftest.mutants import MUTANTS  # noqa: E402

CERTIFY_TIMEOUT_S = 900


def run_certify(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Runs one certify to its end; an interrupt of this process is passed on to it."""
    return run_forwarding_interrupts(
        argv, timeout_s=CERTIFY_TIMEOUT_S, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


@dataclass
class Row:
    build: str
    expected: str | None
    verdict: str
    caught_by: list[str] = field(default_factory=list)
    also_failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: From certify's start to its first failing scenario (certificate.json ``first_failure_s``).
    first_failure_s: float | None = None
    #: The --fail-fast run stopped at another invariant; ``caught_by`` comes from a second run of
    #: the build on the scenarios aimed at it (MUTANTS).
    confirmed_by_aimed_run: bool = False

    @property
    def ok(self) -> bool:
        if self.expected is None:
            return self.verdict == "certified"
        return self.verdict == "rejected" and bool(self.caught_by)

    def cells(self) -> list[str]:
        caught = ("yes" if self.ok else "**no**") if self.expected else ("certified" if self.ok else "**no**")
        return [
            f"`{self.build}`",
            f"`{self.expected}`" if self.expected else "none (control)",
            caught,
            ", ".join(self.caught_by) or "—",
            ", ".join(self.also_failed) or "—",
            "—" if self.first_failure_s is None else f"{self.first_failure_s:.0f} s",
            f"{self.seconds:.0f} s",
        ]


HEADER = [
    "build", "expected invariant", "caught", "caught by (scenarios)", "other invariants failed", "first failure after",
    "certify time",
]  # fmt: skip


def has_fail_fast() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "harness", "certify", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    return "--fail-fast" in out.stdout


def certify(build: str, reports: Path, fail_fast: bool) -> Row:
    spec = MUTANTS[build]
    report = reports / build
    argv = [sys.executable, "-m", "harness", "certify", "--balancer-cmd", spec["cmd_str"], "--profile", "quick"]
    argv += ["--report", str(report)] + (["--fail-fast"] if fail_fast else [])
    t0 = time.monotonic()
    proc = run_certify(argv)
    seconds = time.monotonic() - t0
    (reports / f"{build}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    try:
        cert = json.loads((report / "certificate.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Row(build, spec["expected_invariant"], f"no certificate (exit {proc.returncode})", seconds=seconds)
    expected = spec["expected_invariant"]
    caught_by: list[str] = []
    others: set[str] = set()
    for scenario in cert.get("scenarios", []):
        failed = {inv for inv, r in scenario.get("results", {}).items() if r.get("status") == "fail"}
        if expected in failed:
            caught_by.append(scenario["name"])
        others |= failed - {expected}
    verdict = cert.get("verdict", "?")
    if cert.get("error"):
        verdict = f"error: {str(cert['error']).splitlines()[0]}"
    first = cert.get("first_failure_s")
    first_failure_s = float(first) if isinstance(first, (int, float)) else None
    row = Row(build, expected, verdict, caught_by, sorted(others), seconds, first_failure_s)
    if fail_fast and expected and verdict == "rejected" and not caught_by:
        # Stopped at a failure of another invariant (a real catch: the defect shows there too)
        # before the scenario aimed at it ran: confirm the expected invariant on those scenarios.
        row.confirmed_by_aimed_run = True
        aimed = [a for name in spec["scenarios"] for a in ("--scenario", name)]
        confirm = reports / f"{build}-aimed"
        argv = [sys.executable, "-m", "harness", "certify", "--balancer-cmd", spec["cmd_str"], *aimed]
        argv += ["--report", str(confirm)]
        done = run_certify(argv)
        (reports / f"{build}-aimed.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        try:
            aimed_cert = json.loads((confirm / "certificate.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return row
        for scenario in aimed_cert.get("scenarios", []):
            if any(i == expected and r.get("status") == "fail" for i, r in scenario.get("results", {}).items()):
                row.caught_by.append(f"{scenario['name']} (aimed run)")
    return row


def markdown(rows: list[Row], fail_fast: bool, commit: str | None, planned: int) -> str:
    caught = sum(1 for r in rows if r.expected and r.ok)
    mutants = sum(1 for r in rows if r.expected)
    if commit is None:
        head = ["git", "rev-parse", "--short", "HEAD"]
        commit = subprocess.run(head, capture_output=True, text=True, cwd=ROOT).stdout.strip() or "unknown"
    pending = f" ({planned - len(rows)} of {planned} builds not run yet)" if len(rows) < planned else ""
    lines = [
        "# Mutant builds: what the harness catches",
        "",
        "Generated by `make mutation` (`tests/selftest/mutation_table.py`): a full `certify --profile "
        f"quick`{' --fail-fast' if fail_fast else ''} of every build in `tests/selftest/mutants/` (see its "
        "README for each defect and its trigger). A mutant is *caught* when the build is rejected and "
        "its expected invariant is among those violated. The control build must be certified. "
        "*First failure after* is the time from certify's start (build start and smoke gate "
        "included) to the first failing scenario; *certify time* adds the scenarios still under "
        "way in the other lanes, which are finished and judged rather than cut off. When the "
        "fail-fast run stopped at another invariant before the scenario aimed at the mutant ran "
        "(a catch all the same), the expected invariant is confirmed by a second certify of the "
        "build on its aimed scenarios, marked *(aimed run)*.",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC at commit `{commit}` on "
        f"{platform.node()} ({platform.platform()}, Python {platform.python_version()}): "
        f"**{caught} of {mutants} mutants caught**{pending}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "mutants.md"), help="Markdown table to write")
    parser.add_argument("--reports", default=str(ROOT / "reports" / "mutation"), help="certify reports go here")
    parser.add_argument("--only", nargs="*", choices=sorted(MUTANTS), help="these builds only")
    parser.add_argument("--commit", help="the commit the table is for (default: git rev-parse HEAD)")
    args = parser.parse_args(argv)
    builds = args.only or ["control", *sorted(n for n, m in MUTANTS.items() if m["expected_invariant"])]
    reports = Path(args.reports)
    reports.mkdir(parents=True, exist_ok=True)
    install_signal_handlers()  # SIGTERM raises like Ctrl-C, so run_certify can pass it on
    rows: list[Row] = []
    under_way = "the --fail-fast probe"
    try:
        fail_fast = has_fail_fast()
        print(" | ".join(HEADER), flush=True)
        for build in builds:
            under_way = f"certifying {build}"
            row = certify(build, reports, fail_fast)
            rows.append(row)
            print(" | ".join(row.cells()), flush=True)
            # Rewritten after every row: a long run that is cut short still leaves what it measured.
            Path(args.out).write_text(markdown(rows, fail_fast, args.commit, len(builds)), encoding="utf-8")
    except KeyboardInterrupt as exc:
        sig = interrupt_signal(exc)
        kept = f"{len(rows)} row(s) kept in {args.out}" if rows else "no row measured"
        print(f"INTERRUPTED by {sig.name} during {under_way}: its certify was stopped; {kept}", flush=True)
        return 128 + sig
    print()
    print(markdown(rows, fail_fast, args.commit, len(builds)))
    print(f"written to {args.out}")
    missed = [r.build for r in rows if not r.ok]
    if missed:
        print(f"NOT OK: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
