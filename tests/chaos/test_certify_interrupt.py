"""certify interrupted in the middle of a scenario: prompt exit, no survivors, a partial report.

The harness process gets SIGINT (Ctrl-C) or SIGTERM (a CI runner cancelling a job) while the fault
phase of its first scenario is under way. It must stop every process it started, write a partial
certificate whose verdict is "interrupted" (never certified), and exit 128 + the signal's number.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.waiting import wait_until
from tests.chaos.cli_support import ROOT, assert_no_survivors, default_sigint, interrupt_when, new_token, run_env

pytestmark = pytest.mark.chaos

SCENARIO = "kill_primary"
#: Stopping a run reaps the swarm (up to 20 s for its clients' closes), the balancer, both backends
#: and the proxy; measured 1-2 s at load 1. The bound is generous for a loaded 2-core machine.
EXIT_BOUND_S = 40.0


def _warmup_ended(monitor: Path) -> bool:
    try:
        return '"phase":"warmup_end"' in monitor.read_text()
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_certify_interrupted_mid_scenario(tmp_path: Path, sig: signal.Signals) -> None:
    token = new_token(f"interrupt-{sig.name}")
    report = tmp_path / "report"
    run_dir = report / "runs" / f"01-{SCENARIO}"
    out_path = tmp_path / "certify.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "certify", "--scenario", SCENARIO, "--report", str(report)],
            cwd=ROOT, env=run_env(token), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=default_sigint,
        )  # fmt: skip
    try:
        # In the middle of the scenario: its warm-up is over, its fault phase (1.5 s) has begun.
        monitor = run_dir / "history" / "monitor.jsonl"
        wait_until(
            lambda: _warmup_ended(monitor) or proc.poll() is not None, timeout=120, what=f"{SCENARIO} warm-up to end"
        )
        assert proc.poll() is None, out_path.read_text(errors="replace")[-3000:]
        proc.send_signal(sig)
        t0 = time.monotonic()
        code = proc.wait(timeout=EXIT_BOUND_S)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = out_path.read_text(errors="replace")
    print(f"{sig.name}: certify exited {code} {took:.1f} s after the signal")
    assert code == 128 + sig, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert f"INTERRUPTED: interrupted by {sig.name}" in output
    assert_no_survivors(token, f"certify got {sig.name}")

    # The scenario was cut short: no verdict for its run, and the certificate says why.
    assert not (run_dir / "verdict.json").exists()
    cert = json.loads((report / "certificate.json").read_text())
    assert cert["verdict"] == "interrupted"
    assert cert["interrupted"]["signal"] == sig.name
    assert cert["interrupted"]["exit_code"] == code
    assert SCENARIO in cert["interrupted"]["during"]
    assert cert["error"].startswith(f"interrupted by {sig.name}")
    (entry,) = cert["scenarios"]
    assert entry["name"] == SCENARIO and entry["outcome"] == "inconclusive"
    assert entry["run_dir"] == str(run_dir.resolve())
    assert f"interrupted by {sig.name}" in entry["reasons"][0]
    html = (report / "report.html").read_text()
    assert '<div id="verdict" class="interrupted">INTERRUPTED</div>' in html
    assert 'id="interrupted"' in html and f"interrupted by {sig.name}" in html
    junit = (report / "junit.xml").read_text()
    assert 'name="certification_finishes"' in junit


def test_certify_sigkilled_with_lanes_leaves_no_survivors(tmp_path: Path) -> None:
    """SIGKILL allows no clean-up of one's own. The second lane's cluster is started from that
    lane's thread, where PR_SET_PDEATHSIG cannot be used: the reaper (harness.reaper) kills it."""
    token = new_token("sigkill-lanes")
    report = tmp_path / "report"
    out_path = tmp_path / "certify.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "certify", "--scenario", SCENARIO, "--scenario", "terminate_primary",
             "--parallel", "2", "--report", str(report)],
            cwd=ROOT, env=run_env(token), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    # Both lanes in the middle of a scenario, so both clusters are up.
    monitors = [report / "runs" / f"0{i}-{name}" / "history" / "monitor.jsonl"
                for i, name in ((1, SCENARIO), (2, "terminate_primary"))]  # fmt: skip
    code, _ = interrupt_when(
        proc, lambda: all(_warmup_ended(m) for m in monitors), signal.SIGKILL, "both lanes' warm-ups to end", out_path
    )
    assert code == -signal.SIGKILL and (report / "cluster-2").is_dir()
    assert_no_survivors(token, "certify with two lanes got SIGKILL")
