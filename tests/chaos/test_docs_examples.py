"""The examples in the docs run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parents[2]


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)


def test_the_writing_scenarios_example_is_under_20_lines_and_runs(tmp_path: Path) -> None:
    module = next(b for b in python_blocks(ROOT / "docs" / "writing-scenarios.md") if "SCENARIO = Scenario(" in b)
    assert len(module.strip().splitlines()) < 20
    path = tmp_path / "my_scenario.py"
    path.write_text(module)
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "replay", str(path), "--runs-dir", str(tmp_path / "runs")],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "scenario partition_secondary_after_kill: PASS" in proc.stdout
