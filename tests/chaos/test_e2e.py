"""End-to-end chaos runs against the reference balancer and a deliberately broken build."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.catalog import named_scenarios
from harness.cluster import Cluster
from harness.demo import client_transitions
from harness.faults import fault
from harness.history import load_run
from harness.runner import JudgedRun, ScenarioRunner
from harness.scenario import Expect, Phases, Scenario, Step, Workload

pytestmark = pytest.mark.chaos


# Issue 4's plan: 8 clients; kill the primary, restart it, then partition the secondary (where the
# clients now are) so they must fail back to the primary; then heal.
KILL_RESTART_PARTITION = Scenario(
    name="kill_restart_partition",
    description="kill primary, restart it, partition the secondary, heal",
    workload=Workload(clients=8, rate_hz=10.0),
    steps=(
        Step(at_s=0.5, fault=fault("kill", "primary"), duration_s=1.0),
        Step(at_s=3.5, fault=fault("partition", "secondary")),
    ),
    phases=Phases(faults_s=7.0),
    expect=Expect(failover_deadline_s=6.0),
)


def test_reference_fails_over_in_place_under_four_clients(chaos_run: Callable[..., JudgedRun]) -> None:
    judged = chaos_run(named_scenarios()["kill_primary"])
    judged.assert_ok()
    run = load_run(judged.run_dir)
    players = [c for c in run.client_ids() if c.startswith("c")]
    assert len(players) == 4
    for client in players:
        seen = client_transitions(run, client)
        # In place: one connection, primary then secondary, never dropped.
        assert seen["connections"] == 1, seen
        assert seen["servers"][0] == "primary" and seen["servers"][-1] == "secondary", seen
        assert seen["remote_closes"] == [], seen
    final = run.meta["final"]["status"]
    assert final["sessions"] == 0
    assert all(v == 0 for v in final["tables"].values()), final
    assert all(b["connection_count"] == 0 for b in final["backends"]), final
    output = run.balancer_stdout + run.balancer_stderr
    assert not re.search(r"cannot call recv while another coroutine|ConcurrencyError", output)


def test_kill_restart_partition_plan_passes_every_checker(chaos_run: Callable[..., JudgedRun]) -> None:
    judged = chaos_run(KILL_RESTART_PARTITION)
    judged.assert_ok()
    run = load_run(judged.run_dir)
    # The plan really moved clients twice: primary -> secondary -> primary, within one connection.
    moved_back = 0
    for client in run.client_ids():
        if not client.startswith("c"):
            continue
        servers = client_transitions(run, client)["servers"]
        compact = [s for i, s in enumerate(servers) if i == 0 or servers[i - 1] != s]
        moved_back += compact[:3] == ["primary", "secondary", "primary"]
    assert moved_back == 8, f"only {moved_back}/8 clients went primary -> secondary -> primary"
    # This plan has no limit probe, no client protocol error, no recovery goals, no drain, no
    # upgrade fault and no herd: nothing for those to judge, and "not checked" is never "pass".
    # Whether a move is sent while a failover is under way (failover_delivery) depends on timing.
    probes = {
        "connection_limit", "size_limit", "close_passthrough", "others_unaffected", "recovery_goals", "drain_graceful",
        "upgrade_failover", "herd_recovered",
    }  # fmt: skip
    statuses = {r.invariant: r.status for r in judged.results}
    assert statuses.pop("failover_delivery") in ("pass", "not_checked"), judged.summary()
    assert statuses == {inv: "not_checked" if inv in probes else "pass" for inv in statuses}, judged.summary()


def test_second_reader_build_is_caught_by_no_concurrent_recv(broken_cluster: Cluster, tmp_path: Path) -> None:
    judged = ScenarioRunner(broken_cluster).run(KILL_RESTART_PARTITION, tmp_path / "run")
    verdict = judged.result("no_concurrent_recv")
    assert verdict.status == "fail", judged.summary()
    assert any("recv" in v.message for v in verdict.violations), judged.summary()
