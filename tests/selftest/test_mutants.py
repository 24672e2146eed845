"""The harness catches the seed's bugs: every mutant build is rejected for the right reason.

In ``make test`` each mutant runs only the scenarios aimed at it; the full
``certify --profile quick`` of every mutant is marked slow and runs in ``make test-all``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from harness.catalog import named_scenarios
from harness.certify import PROFILES, Certifier, default_parallel, estimated_s
from tests.selftest.mutants import MUTANTS, NO_DRAIN_CMD

pytestmark = pytest.mark.chaos

DEFECTIVE = sorted(name for name, m in MUTANTS.items() if m["expected_invariant"])
AIMED = sorted({s for m in MUTANTS.values() for s in m["scenarios"]})


def shared_lanes() -> int:
    """Certify's lanes for one certification here: the machine's (``default_parallel``) shared
    among pytest's workers. A scenario's time is mostly waiting, so lanes shorten the longer lists
    (the reference's and the control's); but each worker taking all of them beside the others
    overloads the cores, and the harness then rightly refuses to judge (inconclusive)."""
    return max(1, default_parallel() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def certify(cmd: str, scenarios: list[str], report: Path, *, fail_fast: bool = False) -> dict:
    certifier = Certifier(
        balancer_cmd=cmd,
        profile=PROFILES["quick"],
        report_dir=report,
        only=scenarios,
        hypothesis_examples=0,
        console=Console(file=open(report.parent / f"{report.name}.log", "w"), width=120),
        parallel=shared_lanes(),
        fail_fast=fail_fast,
    )
    return certifier.run()


def failed_invariants(cert: dict) -> set[str]:
    return {inv for s in cert["scenarios"] for inv, r in s["results"].items() if r["status"] == "fail"}


@pytest.mark.parametrize("mutant", DEFECTIVE)
def test_mutant_is_rejected_with_its_invariant(mutant: str, tmp_path: Path) -> None:
    spec = MUTANTS[mutant]
    # Stopped at its first failing scenario: each of a mutant's aimed scenarios is meant to show its
    # invariant broken, and the rest of its list would only repeat that (the full certification of
    # every mutant without --fail-fast, test_full_quick_certification_rejects_mutant in
    # `make test-all`, runs them all).
    cert = certify(spec["cmd_str"], spec["scenarios"], tmp_path / "report", fail_fast=True)
    assert cert["verdict"] == "rejected", json.dumps(cert, indent=1, default=str)[:4000]
    failed = failed_invariants(cert)
    assert spec["expected_invariant"] in failed, (
        f"{mutant}: expected {spec['expected_invariant']} to be violated, got {sorted(failed)}"
    )


CORRECT_PARTS = 4


def _parts(names: list[str], count: int) -> list[list[str]]:
    """``names`` in ``count`` parts of about equal estimated length (the longest first, each into the
    part with the least so far), so that no test is left running a long list alone at the end."""
    catalog = named_scenarios()
    parts: list[list[str]] = [[] for _ in range(count)]
    totals = [0.0] * count
    for name in sorted(names, key=lambda n: estimated_s(catalog[n]), reverse=True):
        least = totals.index(min(totals))
        parts[least].append(name)
        totals[least] += estimated_s(catalog[name])
    return [sorted(part) for part in parts if part]


# Each correct build in parts of its scenarios, so that pytest's workers can share them out.
CORRECT = [
    pytest.param(build, part, id=f"{build}-{i}")
    for build, scenarios in (("reference", AIMED), ("control", MUTANTS["control"]["scenarios"]))
    for i, part in enumerate(_parts(scenarios, CORRECT_PARTS), start=1)
]


@pytest.mark.parametrize(("build", "scenarios"), CORRECT)
def test_correct_builds_are_certified_on_the_aimed_scenarios(build: str, scenarios: list[str], tmp_path: Path) -> None:
    cmd = "python -m balancer {config}" if build == "reference" else MUTANTS["control"]["cmd_str"]
    cert = certify(cmd, scenarios, tmp_path / "report")
    failures = {
        s["name"]: sorted(i for i, r in s["results"].items() if r["status"] == "fail") for s in cert["scenarios"]
    }
    assert cert["verdict"] == "certified", failures


def test_a_build_without_drain_is_not_checked_for_it_never_rejected_or_passed(tmp_path: Path) -> None:
    cert = certify(NO_DRAIN_CMD, ["balancer_drain"], tmp_path / "report")
    (scenario,) = cert["scenarios"]
    drain = scenario["results"]["drain_graceful"]
    assert drain["status"] == "not_checked", drain
    assert "does not declare SIGHUP drain" in drain["note"]
    assert cert["build"]["capabilities"]["drain"] is False
    # Restarted with SIGTERM instead, which the contract does require of it: judged, and it holds.
    assert cert["verdict"] == "certified", json.dumps(cert, indent=1, default=str)[:4000]


@pytest.mark.slow
@pytest.mark.parametrize("mutant", DEFECTIVE)
def test_full_quick_certification_rejects_mutant(mutant: str, tmp_path: Path) -> None:
    spec = MUTANTS[mutant]
    report = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "certify", "--balancer-cmd", spec["cmd_str"], "--profile", "quick",
         "--report", str(report), "--parallel", str(shared_lanes())],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    cert = json.loads((report / "certificate.json").read_text())
    assert cert["verdict"] == "rejected"
    assert spec["expected_invariant"] in failed_invariants(cert)
