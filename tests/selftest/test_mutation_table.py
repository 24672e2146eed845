"""The mutation table interrupted while a certify runs: the signal reaches certify, nothing survives.

Killing the table used to leave its certify child (and that one's cluster) running for up to an
hour. Now SIGINT/SIGTERM is passed on to certify, which stops its cluster and writes a partial
report; the table waits for it and exits 128 + N.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.cli_support import ROOT, assert_no_survivors, default_sigint, interrupt_when, new_token, run_env

pytestmark = pytest.mark.chaos


def _a_scenario_runs(reports: Path) -> bool:
    return any((reports / "control" / "runs").glob("*/history/monitor.jsonl"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_an_interrupted_mutation_table_stops_its_certify(tmp_path: Path, sig: signal.Signals) -> None:
    token = new_token(f"mutation-table-{sig.name}")
    reports, table = tmp_path / "reports", tmp_path / "mutants.md"
    out_path = tmp_path / "table.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "selftest" / "mutation_table.py"), "--only", "control",
             "--reports", str(reports), "--out", str(table)],
            cwd=ROOT, env=run_env(token), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=default_sigint,
        )  # fmt: skip
    code, took = interrupt_when(proc, lambda: _a_scenario_runs(reports), sig, "the first scenario", out_path)
    assert_no_survivors(token, f"the mutation table interrupted by {sig.name}")
    output = out_path.read_text(errors="replace")
    print(f"exit {code} {took:.1f} s after {sig.name}", output[-1500:], sep="\n")
    assert code == 128 + sig, output[-3000:]
    assert "Traceback" not in output
    assert f"INTERRUPTED by {sig.name} during certifying control: its certify was stopped" in output
    # certify got the signal itself (it was not killed): its partial report says so.
    cert = json.loads((reports / "control" / "certificate.json").read_text())
    assert cert["verdict"] == "interrupted", cert
    assert cert["interrupted"]["signal"] == sig.name, cert["interrupted"]
