"""``make flake-check`` stopped in the middle of a run: the signal reaches its certify, nothing survives.

Found while stopping a flake-check by hand: its certify child finished the run under way and the
next one started, with nobody left to stop it. Now SIGTERM (or Ctrl-C) is passed on to the running
certify, which stops its cluster; flake-check prints what it measured and exits 128 + N.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.cli_support import ROOT, assert_no_survivors, default_sigint, interrupt_when, new_token, run_env

pytestmark = pytest.mark.chaos


def _a_scenario_runs(reports: Path) -> bool:
    return any(reports.glob("*/run-01/runs/*/history/monitor.jsonl"))


def test_an_interrupted_flake_check_stops_its_certify(tmp_path: Path) -> None:
    token = new_token("flake-check-SIGTERM")
    reports = tmp_path / "flake"
    out_path = tmp_path / "flake.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.flakecheck", "--runs", "3", "--report-dir", str(reports)],
            cwd=ROOT, env=run_env(token), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=default_sigint,
        )  # fmt: skip
    code, took = interrupt_when(proc, lambda: _a_scenario_runs(reports), signal.SIGTERM, "the first scenario", out_path)
    assert_no_survivors(token, "flake-check interrupted by SIGTERM")
    output = out_path.read_text(errors="replace")
    print(f"exit {code} {took:.1f} s after SIGTERM", output[-1500:], sep="\n")
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert "Traceback" not in output
    assert "flake-check: INTERRUPTED by SIGTERM during run 1; its certify was stopped" in output
    # No second run was started after the first was stopped.
    assert not list(reports.glob("*/run-02*")), sorted(p.name for p in reports.glob("*/*"))
    # The certify got the signal itself (it was not killed): its partial report says so.
    (log,) = reports.glob("*/run-01.log")
    assert "INTERRUPTED: interrupted by SIGTERM" in log.read_text(errors="replace")
