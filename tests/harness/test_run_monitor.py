"""The runner's monitor records how each watched harness process ended (harness.runner._Monitor)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness.history import HistoryWriter
from harness.procs import ManagedProcess
from harness.runner import _Monitor
from harness.swarm import EXIT_NOT_READY
from harness.waiting import wait_until


def _exited_swarm(tmp_path: Path, code: int) -> ManagedProcess:
    proc = ManagedProcess("swarm-c-run", [sys.executable, "-c", f"import sys; sys.exit({code})"], tmp_path / "logs")
    proc.start()
    wait_until(lambda: proc.poll() is not None, timeout=30, what="the stand-in swarm to exit")
    return proc


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _monitor(tmp_path: Path) -> tuple[_Monitor, HistoryWriter, Path]:
    path = tmp_path / "monitor.jsonl"
    writer = HistoryWriter(path, "monitor")
    # Not started: no poll runs, which is the window this guards (a give-up between the last
    # poll and the runner's unwatch). The monitor reads only the cluster's supervisor here.
    return _Monitor(SimpleNamespace(supervisor={}), writer), writer, path  # type: ignore[arg-type]


def test_a_swarm_that_gave_up_after_the_last_poll_is_recorded_when_unwatched(tmp_path: Path) -> None:
    # Seen under load: the swarm said NOT READY 0.3 s before the runner stopped it, no poll fell
    # in between, and the run was judged without the reason it was inconclusive.
    swarm = _exited_swarm(tmp_path, EXIT_NOT_READY)
    monitor, writer, path = _monitor(tmp_path)
    monitor.watch("swarm-c-run", swarm, frozenset({EXIT_NOT_READY}))
    monitor.unwatch("swarm-c-run")
    monitor._check_processes()  # a poll after the unwatch must not write it again
    writer.close()
    assert [(r["f"], r["name"], r["exit_code"], r["during_setup"]) for r in _records(path)] == [
        ("swarm_gave_up", "swarm-c-run", EXIT_NOT_READY, False)
    ]


def test_an_exit_recorded_by_a_poll_is_not_recorded_again_when_unwatched(tmp_path: Path) -> None:
    swarm = _exited_swarm(tmp_path, 1)
    monitor, writer, path = _monitor(tmp_path)
    monitor.watch("swarm-c-run", swarm, frozenset({EXIT_NOT_READY}))
    monitor._check_processes()
    monitor.unwatch("swarm-c-run")
    writer.close()
    assert [(r["f"], r["exit_code"]) for r in _records(path)] == [("process_exit", 1)]


def test_a_swarm_still_running_when_unwatched_leaves_no_exit_record(tmp_path: Path) -> None:
    # The runner unwatches a swarm before stopping it: that exit is its own doing.
    swarm = ManagedProcess("swarm-c-run", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "logs")
    swarm.start()
    try:
        monitor, writer, path = _monitor(tmp_path)
        monitor.watch("swarm-c-run", swarm, frozenset({EXIT_NOT_READY}))
        monitor.unwatch("swarm-c-run")
        swarm.terminate(timeout=10)
        monitor._check_processes()
        writer.close()
        assert _records(path) == []
    finally:
        swarm.kill()
