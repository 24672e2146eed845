"""`python -m harness judge RUN_DIR` as a user runs it: a subprocess on a stored run directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from checker_runs import T0, RunBuilder, write_run_dir

from harness.scenario import Scenario

REPO = Path(__file__).resolve().parents[3]


def judge_cli(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "judge", str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def double_attached_after_heal(rb: RunBuilder) -> RunBuilder:
    """A healthy run in which the old primary upstream of c1 stays open for 4 s after the heal."""
    rb.healthy()
    rb.fault(T0 + 6.0, "pause", "primary", "f9", heal_at=T0 + 7.0)
    rb.conn_open("c9", T0 + 5.5)
    old = rb.welcome("c9", T0 + 5.51, "primary")
    rb.welcome("c9", T0 + 6.5, "secondary")
    rb.journal("primary", T0 + 11.0, "close", conn=old, client="c9", code=1006, reason="")
    rb.conn_close("c9", T0 + 11.5)
    rb.stopped("c9", T0 + 11.6)
    return rb


def test_a_passing_run_exits_0(tmp_path: Path, rb: RunBuilder) -> None:
    write_run_dir(tmp_path, rb.healthy())
    proc = judge_cli(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pass        single_upstream" in proc.stdout
    assert "Traceback" not in proc.stderr
    # The recovery figures, measured from the stored run (harness.recovery).
    assert "recovery: 2 client(s) disrupted, recover p50 1.32 s / p99 1.50 s / max 1.50 s;" in proc.stdout


def test_a_failing_run_exits_1(tmp_path: Path, rb: RunBuilder) -> None:
    write_run_dir(tmp_path, double_attached_after_heal(rb))
    proc = judge_cli(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "fail        single_upstream" in proc.stdout
    assert "client c9 conn 1 was attached to primary" in proc.stdout


def test_the_stored_scenario_chooses_the_invariants(tmp_path: Path, rb: RunBuilder) -> None:
    write_run_dir(tmp_path, double_attached_after_heal(rb))
    Scenario(name="no-upstream-check", invariants=("ordered", "no_crosstalk")).save(tmp_path / "scenario.json")
    proc = judge_cli(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    judged = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith(("pass", "fail", "not_"))]
    assert judged == ["no_crosstalk", "ordered"]
    assert "judging the 2 invariant(s) listed in" in proc.stdout


@pytest.mark.parametrize(
    ("file", "text", "expected"),
    [
        ("run.json", '{"run_id": "x", "phases": {', "run.json: not a readable JSON file"),
        ("run.json", "[1, 2]", "run.json: expected a JSON object, got list"),
        ("run.json", b"\xff\xfe{}", "run.json: not a readable JSON file"),
        ("scenario.json", '{"name": "x", "invariants": ["no_such_check"]}', "unknown invariant 'no_such_check'"),
        ("scenario.json", "{torn", "scenario.json: not JSON"),
    ],
)
def test_a_malformed_run_exits_2_with_one_line(
    tmp_path: Path, rb: RunBuilder, file: str, text: str | bytes, expected: str
) -> None:
    write_run_dir(tmp_path, rb.healthy())
    target = tmp_path / file
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_text(text)
    proc = judge_cli(tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]


def test_a_directory_without_run_json_exits_2(tmp_path: Path) -> None:
    proc = judge_cli(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {tmp_path} is not a run directory (no run.json)"]
