"""The pytest plugin as a user meets it: installed by entry point, used from their own test file."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.selftest.mutants import MUTANTS

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parents[2]

USER_TEST = textwrap.dedent(
    """
    import pytest
    from harness.faults import fault

    @pytest.mark.chaos
    def test_primary_dies(chaos_run, toxiproxy, backends, balancer, nemesis):
        assert set(backends) == {"primary", "secondary"} and balancer.running
        assert toxiproxy.version()
        chaos_run([fault("kill", "primary")]).assert_ok()
    """
)


def run_user_test(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(tmp_path / "test_user.py"), "--rootdir", str(tmp_path), "--chaos-runs-dir", str(tmp_path / "runs"),
         *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_a_user_chaos_test_passes_against_the_reference(tmp_path: Path) -> None:
    proc = run_user_test(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "runs").is_dir() and any((tmp_path / "runs").glob("*/verdict.json"))


def test_a_failing_chaos_test_names_invariant_evidence_and_run_dir(tmp_path: Path) -> None:
    proc = run_user_test(tmp_path, "--balancer-cmd", MUTANTS["second_reader"]["cmd_str"])
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    assert re.search(r"fail\s+no_concurrent_recv", out), out[-3000:]
    assert "cannot call recv while another coroutine" in out  # the evidence itself
    assert f"run dir {tmp_path / 'runs'}" in out
    # The interpreter that ran the test, so the command works when pasted.
    assert f"replay: {shlex.quote(sys.executable)} -m harness replay" in out


HISTORY_LOST_TEST = textwrap.dedent(
    """
    import os

    def _on_the_full_disk(tmp_path):
        # The fixture writes the history under tmp_path/history: there, a disk with no room left.
        os.symlink(os.environ["FULL_DISK"], tmp_path / "history")

    def test_stopped(clients, tmp_path):
        _on_the_full_disk(tmp_path)
        swarm = clients(2)
        swarm.stop()

    def test_never_stopped(clients, tmp_path):
        _on_the_full_disk(tmp_path)
        clients(2)
    """
)


def test_a_swarm_whose_history_lost_records_never_lets_a_test_pass(tmp_path: Path) -> None:
    from tests.chaos import cli_support

    (tmp_path / "test_user.py").write_text(HISTORY_LOST_TEST)
    with cli_support.tmpfs(tmp_path / "full", "size=16k") as full:
        # Filled to the last block before the clients start: their first record already fails.
        with pytest.raises(OSError), open(full / "filler", "wb") as filler:
            while True:
                filler.write(b"x" * 4096)
                filler.flush()
        token = cli_support.new_token("plugin-history-lost")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly",
             str(tmp_path / "test_user.py"), "--rootdir", str(tmp_path), "-rfE"],
            cwd=tmp_path, capture_output=True, text=True, timeout=240,
            env=cli_support.run_env(token, FULL_DISK=str(full)),
        )  # fmt: skip
    cli_support.assert_no_survivors(token, "a user test whose history was lost")
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    # The test that stopped its swarm fails; the one that never did errors at teardown (pytest
    # still counts its call phase as passed, but the session fails).
    assert "FAILED test_user.py::test_stopped - harness.plugin.HistoryLost: HISTORY" in out, out[-3000:]
    assert "ERROR test_user.py::test_never_stopped - harness.plugin.HistoryLost: HISTORY" in out, out[-3000:]
    assert re.search(r"1 failed, 1 passed, 1 error", out), out[-1000:]
    assert out.count("HISTORY LOST: client swarm swarm-c-0 could not record its whole history") >= 2, out[-3000:]
    assert "disk full (No space left on device) writing" in out, out[-3000:]
