"""Acceptance of docs/verdicts.md on real processes: builds that relay no game are refused fast,
and a run that cannot judge the build says inconclusive instead of blaming or passing it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.faults import fault
from harness.records import INCONCLUSIVE
from harness.runner import ScenarioRunner
from harness.scenario import Phases, Scenario, Step, Workload
from harness.smoke import SMOKE_TIMEOUT_S
from harness.waiting import wait_until

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parents[2]
NOGAME = Path(__file__).with_name("nogame_builds.py")


@pytest.mark.parametrize(
    ("mode", "seen", "smoke_timeout"),
    [
        # The default gate: its clients' own handshake timeout (5 s) runs out inside it.
        ("silent", "timed out during opening handshake", None),
        # These builds answer at once, so a shorter gate (--smoke-timeout) sees the same.
        ("http503", "HTTP 503", 5.0),
        ("echo", "no game message (welcome) ever came back", 5.0),
    ],
)
def test_a_build_that_relays_no_game_is_refused_in_under_a_minute(
    tmp_path: Path, mode: str, seen: str, smoke_timeout: float | None
) -> None:
    report = tmp_path / "r"
    gate = ["--smoke-timeout", f"{smoke_timeout:g}"] if smoke_timeout is not None else []
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "certify", "--profile", "quick", "--scenario", "kill_primary", *gate,
         "--balancer-cmd", f"{sys.executable} {NOGAME} --mode {mode} {{config}}", "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert elapsed < 60, f"took {elapsed:.0f} s\n{out}"
    assert "REFUSED: the build relayed no game" in proc.stdout
    assert f"within {smoke_timeout or SMOKE_TIMEOUT_S:g} s" in proc.stdout
    assert seen in proc.stdout
    assert f"{mode} build on" in proc.stdout  # the build's last output lines
    assert "Traceback" not in out
    cert = json.loads((report / "certificate.json").read_text())
    assert cert["verdict"] == "refused" and cert["scenarios"] == []


def quiet(name: str, steps: tuple[Step, ...] = (), faults_s: float = 3.0) -> Scenario:
    return Scenario(
        name=name,
        workload=Workload(clients=3, rate_hz=10.0, probe_clients=1),
        steps=steps,
        phases=Phases(warmup_s=1.0, faults_s=faults_s, deadline_s=5.0, quiesce_s=3.0),
    )


def test_a_harness_process_killed_from_outside_is_inconclusive(cluster: Cluster, tmp_path: Path) -> None:
    secondary = cluster.process("secondary")
    pid = secondary.pid
    assert pid is not None
    judged_box: list[object] = []
    runner = ScenarioRunner(cluster)
    worker = threading.Thread(target=lambda: judged_box.append(runner.run(quiet("outside_kill"), tmp_path / "run")))
    worker.start()
    # Mid-run, not through the nemesis: someone else's SIGKILL.
    wait_until(lambda: (tmp_path / "run" / "history" / "monitor.jsonl").exists(), timeout=30, what="run under way")
    time.sleep(1.5)  # into the fault phase; the schedule is timed, there is no condition to wait on
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=120)
    assert not worker.is_alive()
    judged = judged_box[0]
    assert judged.outcome == INCONCLUSIVE, judged.summary()  # type: ignore[attr-defined]
    assert any(
        f"harness process secondary (pid {pid}) ended (killed by signal 9) and no fault stopped it" in r
        for r in judged.reasons  # type: ignore[attr-defined]
    ), judged.summary()  # type: ignore[attr-defined]
    verdict = json.loads((tmp_path / "run" / "verdict.json").read_text())
    assert verdict["outcome"] == "inconclusive" and verdict["passed"] is False


def test_a_toxic_on_a_link_with_no_traffic_is_inconclusive(cluster: Cluster, tmp_path: Path) -> None:
    # Every client plays through the primary: the secondary's link carries no game at all.
    idle = quiet("idle_partition", steps=(Step(at_s=0.5, fault=fault("partition", "secondary"), duration_s=2.0),))
    judged = ScenarioRunner(cluster).run(idle, tmp_path / "run")
    assert judged.outcome == INCONCLUSIVE, judged.summary()
    assert any("(partition on secondary) touched nothing" in r for r in judged.reasons), judged.summary()
    assert not judged.failures, judged.summary()  # nothing is blamed on the build


def test_a_swarm_that_gave_up_mid_run_is_inconclusive(cluster: Cluster, tmp_path: Path) -> None:
    # A starved swarm, made for real: stopped (SIGSTOP) once its ready timeout runs, it cannot say
    # READY while the runner waits, so the runner moves on; resumed mid-run, it finds its ready
    # timeout long past, says NOT READY and stops every client. No checker fails on that.
    starved = Scenario(
        name="starved_swarm",
        # Spread connects, so that when it is stopped some clients have not even started.
        workload=Workload(clients=3, rate_hz=10.0, connect_spread_s=6.0),
        steps=(Step(at_s=0.5, fault=fault("partition", "secondary"), duration_s=2.0),),
        phases=Phases(warmup_s=1.0, faults_s=3.0, deadline_s=5.0, quiesce_s=3.0),
    )
    history = tmp_path / "run" / "history"
    judged_box: list[object] = []
    runner = ScenarioRunner(cluster)
    worker = threading.Thread(target=lambda: judged_box.append(runner.run(starved, tmp_path / "run")))
    worker.start()
    pids: list[int] = []
    try:

        def first_client_started() -> bool:
            # The first client connects as the ready timeout starts; the others 2 s and 4 s later.
            for path in history.glob("clients-c-*.jsonl"):
                if "conn_open" in path.read_text():
                    pids.append(int(path.stem.rsplit("-", 1)[1]))
                    return True
            return False

        wait_until(first_client_started, timeout=60, interval=0.01, what="the swarm's first client")
        os.kill(pids[0], signal.SIGSTOP)
        wait_until(
            lambda: '"warmup_end"' in (history / "monitor.jsonl").read_text(),
            timeout=90,
            what="the runner to give up waiting and move on",
        )
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        worker.join(timeout=120)
    assert not worker.is_alive()
    judged = judged_box[0]
    assert judged.outcome == INCONCLUSIVE, judged.summary()  # type: ignore[attr-defined]
    # Nothing was faulted on a workload that never got in whole.
    assert "faults not applied: the client swarm was not ready" in judged.notes  # type: ignore[attr-defined]
    assert '"apply"' not in (history / "nemesis.jsonl").read_text()
    assert any(
        f"client swarm swarm-c-run (pid {pids[0]}) gave up mid-run" in r
        for r in judged.reasons  # type: ignore[attr-defined]
    ), judged.summary()  # type: ignore[attr-defined]
    monitor = [json.loads(line) for line in (history / "monitor.jsonl").read_text().splitlines()]
    gave_up = [r for r in monitor if r["f"] == "swarm_gave_up"]
    assert gave_up and gave_up[0]["exit_code"] == 3 and gave_up[0]["during_setup"] is False
