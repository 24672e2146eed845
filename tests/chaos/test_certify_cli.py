"""certify from the command line: exit codes, black-box builds, and the report a person reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.selftest.mutants import BLACK_BOX_CMD

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parents[2]


def certify(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "certify", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_a_build_that_exits_at_once_is_exit_2_with_its_output(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import sys\nprint('cannot parse config: boom', file=sys.stderr)\nsys.exit(3)\n")
    proc = certify("--balancer-cmd", f"python {script} {{config}}", "--report", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "did not start or never became ready" in proc.stdout
    assert "cannot parse config: boom" in proc.stdout  # its last log lines are shown
    assert "Traceback" not in proc.stdout + proc.stderr
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    assert cert["verdict"] == "error"


def test_a_build_that_never_listens_is_exit_2(tmp_path: Path) -> None:
    script = tmp_path / "silent.py"
    script.write_text("import time\ntime.sleep(600)\n")
    proc = certify(
        "--balancer-cmd", f"python {script} {{config}}", "--ready-timeout", "3", "--report", str(tmp_path / "r"),
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "did not accept within 3.0s" in proc.stdout


def test_a_missing_program_is_exit_2(tmp_path: Path) -> None:
    proc = certify("--balancer-cmd", "/nonexistent/balancer {config}", "--report", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "cannot start" in proc.stdout


def test_a_command_without_config_placeholder_is_refused(tmp_path: Path) -> None:
    proc = certify("--balancer-cmd", "python -m balancer", "--report", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "{config}" in proc.stdout


def test_an_unknown_scenario_is_refused(tmp_path: Path) -> None:
    proc = certify("--scenario", "no_such_thing", "--report", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "unknown scenario(s): no_such_thing" in proc.stdout


def test_black_box_build_is_certified_with_not_checked_cells(tmp_path: Path) -> None:
    report = tmp_path / "r"
    proc = certify(
        "--balancer-cmd", BLACK_BOX_CMD, "--scenario", "kill_primary", "--hypothesis-examples", "0",
        "--report", str(report),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "black-box" in proc.stdout
    cert = json.loads((report / "certificate.json").read_text())
    assert cert["verdict"] == "certified"
    assert cert["build"]["capabilities"] == {"status": False, "events": False, "drain": False}
    results = cert["scenarios"][0]["results"]
    # Judged from the clients' and backends' side, so still checked:
    for invariant in ("single_upstream", "no_crosstalk", "ordered", "clean_failover", "state_continuity"):
        assert results[invariant]["status"] == "pass", (invariant, results[invariant])
    # Whatever needed /status or event lines says so instead of passing silently.
    notes = " ".join(r["note"] for r in results.values())
    assert "status" in notes
    html = (report / "report.html").read_text()
    assert "CERTIFIED" in html
    # The page says it was black-box and lists what was not judged (docs/contract.md section 7).
    assert 'id="black-box"' in html and "no_concurrent_recv" in html.split('id="black-box"')[1].split("</div>")[0]
