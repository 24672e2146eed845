"""How certify shares its work out among lanes (pure parts; the real run is in tests/chaos)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.catalog import named_scenarios
from harness.certify import (
    LANES_PER_CORE,
    MAX_LANES,
    PROFILES,
    Certifier,
    _summarise_generated,
    default_parallel,
    generated_chunks,
    time_spent_line,
)
from harness.records import ResultEntry, ScenarioEntry, Status


@pytest.mark.parametrize(
    ("examples", "lanes", "chunks"),
    [
        (0, 4, []),
        (1, 4, [1]),
        (5, 1, [5]),
        (5, 4, [3, 2]),  # at least 2 a chunk: a run of 1 would only ever try the simplest plan
        (20, 4, [5, 5, 5, 5]),
        (21, 4, [6, 5, 5, 5]),
    ],
)
def test_generated_plans_are_shared_evenly_and_all_drawn(examples: int, lanes: int, chunks: list[int]) -> None:
    assert generated_chunks(examples, lanes) == chunks
    assert sum(chunks) == examples


def test_default_parallel_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert default_parallel() == LANES_PER_CORE
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert default_parallel() == MAX_LANES
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert default_parallel() >= 1


REFERENCE = "python -m balancer {config}"


def test_the_quick_profile_leaves_out_large_scenarios_and_says_so(tmp_path: Path) -> None:
    def chosen(profile: str) -> tuple[list[str], list[str]]:
        certifier = Certifier(
            balancer_cmd="python -m balancer {config}", profile=PROFILES[profile], report_dir=tmp_path
        )
        return [s.name for s in certifier.scenarios()], certifier.not_run

    large = [name for name, s in named_scenarios().items() if "large" in s.tags]
    assert "mass_failover" in large
    quick, not_run = chosen("quick")
    assert not set(large) & set(quick) and not_run == large
    ci, not_run = chosen("ci")
    assert set(large) <= set(ci) and not_run == []


def test_jobs_run_longest_first_normally_and_shortest_first_with_fail_fast() -> None:
    from harness.certify import estimated_s, fault_kind_of, job_order

    catalog = list(named_scenarios().values())
    alone = [s.name for s in catalog if s.needs_machine_alone]
    assert "thundering_herd" in alone and "kill_primary" not in alone
    normal = job_order(catalog, chunks=2, fail_fast=False)
    # The machine-alone scenarios first, while no lane has anything under way; then the generated
    # chunks (each runs several plans); then the rest, longest first.
    head = [s.name for _i, s in normal[: len(alone)] if s is not None]
    assert sorted(head) == sorted(alone)
    assert normal[len(alone) : len(alone) + 2] == [(0, None), (1, None)]
    rest = [estimated_s(s) for _i, s in normal[len(alone) + 2 :] if s is not None]
    assert rest == sorted(rest, reverse=True) and len(rest) + len(alone) == len(catalog)
    fast = job_order(catalog, chunks=2, fail_fast=True)
    assert fast[-2:] == [(0, None), (1, None)]
    # Every fault kind once (shortest first) before any kind a second time.
    kinds = [fault_kind_of(s) for _i, s in fast[:-2] if s is not None]
    distinct = len(set(kinds))
    assert len(set(kinds[:distinct])) == distinct
    first_round = [i for i, _s in fast[:distinct]]
    assert first_round == sorted(first_round)  # catalog order
    # Every scenario exactly once, by its catalog index.
    assert sorted(i for i, s in fast if s is not None) == list(range(len(catalog)))


def test_clusters_built_from_one_spec_keep_their_own_limits(tmp_path: Path) -> None:
    # Lanes share one ClusterSpec; a cluster records its build's limits in its spec, so a shared
    # object made one lane skip a restart another lane's limits called for (found by the control
    # build: limit_data ran with max_connections 5 and the probe clients got 503).
    from harness.cluster import Cluster, ClusterSpec
    from harness.scenario import Keepalive, Limits

    spec = ClusterSpec()
    one, two = Cluster(tmp_path / "one", spec), Cluster(tmp_path / "two", spec)
    (tmp_path / "one").mkdir()
    one.ports = {"balancer": 1, "admin": 2, "primary_proxy": 3, "secondary_proxy": 4}
    one.write_config(Limits(max_connections=5), Keepalive())
    assert one.spec.limits == Limits(max_connections=5)
    assert two.spec.limits == Limits() and spec.limits == Limits()


def test_the_time_line_says_where_a_certification_spent_its_time() -> None:
    line = time_spent_line(20.4, {"reset": 2.2, "warmup": 74.0, "judge": 30.0}, 4)
    assert line == (
        "time: start and smoke gate 20 s; in runs, summed over 4 lane(s): reset 2 s, warmup 74 s, judge 30 s"
    )
    # Interrupted before the smoke gate ended: the start is not reported as if it were known.
    assert time_spent_line(None, {"judge": 1.0}, 1) == "time: in runs, summed over 1 lane(s): judge 1 s"


def test_a_scenario_that_needs_the_machine_alone_runs_with_no_other_under_way() -> None:
    import threading

    from harness.certify import MachineGate
    from harness.waiting import wait_until

    gate, stop = MachineGate(), threading.Event()
    log: list[str] = []
    normal_in, normal_out, alone_out = threading.Event(), threading.Event(), threading.Event()

    def normal(name: str, hold: threading.Event | None) -> None:
        with gate.enter(False, stop) as admitted:
            assert admitted
            log.append(f"{name} in")
            normal_in.set()
            if hold is not None:
                assert hold.wait(10)
            log.append(f"{name} out")

    def alone() -> None:
        with gate.enter(True, stop) as admitted:
            assert admitted
            log.append("alone in")
            assert alone_out.wait(10)
            log.append("alone out")

    first = threading.Thread(target=normal, args=("first", normal_out))
    first.start()
    assert normal_in.wait(10)
    heavy = threading.Thread(target=alone)
    heavy.start()
    # The heavy one waits for "first"; a normal one arriving now waits behind the heavy one.
    wait_until(lambda: gate._waiting_alone == 1, timeout=10, what="the heavy scenario to wait")
    second = threading.Thread(target=normal, args=("second", None))
    second.start()
    normal_out.set()
    wait_until(lambda: "alone in" in log, timeout=10, what="the heavy scenario to start")
    assert "second in" not in log
    alone_out.set()
    for t in (first, heavy, second):
        t.join(10)
    assert log == ["first in", "first out", "alone in", "alone out", "second in", "second out"]


def test_a_lane_waiting_at_the_machine_gate_gives_up_when_certify_stops() -> None:
    import threading

    from harness.certify import MachineGate

    gate, stop = MachineGate(), threading.Event()
    with gate.enter(False, stop) as first:
        assert first
        stop.set()
        with gate.enter(True, stop) as admitted:
            assert admitted is False


def test_the_generated_summary_passes_an_invariant_judged_in_some_plans_and_says_in_how_many() -> None:
    def plan(**statuses: Status) -> ScenarioEntry:
        results = {inv: ResultEntry(status, "", [], status) for inv, status in statuses.items()}
        return ScenarioEntry(name="plan", kind="generated", passed=True, results=results, duration_s=1.0)

    summary = _summarise_generated(
        [
            plan(reconnect_limits="pass", drain_graceful="not_checked"),
            plan(reconnect_limits="not_checked", drain_graceful="not_checked"),
            plan(reconnect_limits="pass", drain_graceful="not_checked"),
        ]
    )
    assert summary.results["reconnect_limits"].status == "pass"
    assert summary.results["reconnect_limits"].note == "judged in 2 of 3 generated plans"
    # Judged in none: never a pass.
    assert summary.results["drain_graceful"].status == "not_checked"


def test_a_job_taken_after_a_machine_alone_one_waits_for_it_even_if_its_lane_gets_to_the_gate_first() -> None:
    # Lanes take jobs, then start them: a lane that took a normal job just after another took the
    # herd must not slip in first and make the herd (and every other lane) wait for it.
    import queue
    import threading

    from harness.certify import MachineGate

    gate, stop = MachineGate(), threading.Event()
    jobs: queue.SimpleQueue[str] = queue.SimpleQueue()
    for job in ("herd", "small"):
        jobs.put(job)
    herd = gate.claim(jobs, lambda job: job == "herd")
    small = gate.claim(jobs, lambda job: job == "herd")
    assert (herd, small, gate.claim(jobs, lambda job: False)) == ("herd", "small", None)
    # With ``stop`` already set, ``enter`` answers at once whether the job could start now.
    now = threading.Event()
    now.set()
    with gate.enter(False, now) as admitted:
        assert admitted is False  # the herd was taken first
    with gate.enter(True, stop, claimed=True) as admitted:
        assert admitted
        with gate.enter(False, now) as beside:
            assert beside is False
    with gate.enter(False, stop) as admitted:
        assert admitted


def test_a_fault_phase_that_ends_on_failover_is_estimated_as_a_passing_build_runs_it() -> None:
    from harness.certify import estimated_s

    partition = named_scenarios()["partition_primary"]
    assert partition.phases.faults_end_on_failover and partition.fault_phase_s == 15.0
    # Over by the failover deadline after the step for a build that fails over; a build that does not
    # gets the whole 15 s, but the lanes' order is planned for builds that pass.
    assert estimated_s(partition) == pytest.approx(1.0 + 0.5 + 4.5 + 4 / 50)
    kill = named_scenarios()["kill_primary"]
    assert estimated_s(kill) == pytest.approx(kill.phases.warmup_s + kill.fault_phase_s + 4 / 50)


def test_a_build_that_never_fails_over_stalls_past_any_slowness_stretch() -> None:
    # The keepalive scenarios leave a build that never notices stalled for their whole fault phase:
    # that stall has to break the deadline however slow the machine measured, or it is only ever
    # inconclusive on a loaded machine (a no-keepalive build was, under six lanes).
    from harness.analysis import SLOWNESS_SCALE_LIMIT, inexcusable_stall_s

    ended_on_failover = [s for s in named_scenarios().values() if s.phases.faults_end_on_failover]
    assert {s.name for s in ended_on_failover} >= {"pause_primary", "partition_primary", "one_way_partition"}
    for s in ended_on_failover:
        stalled_s = s.fault_phase_s - max(step.at_s for step in s.steps)
        assert stalled_s > inexcusable_stall_s(s.expect.failover_deadline_s), s.name
        assert inexcusable_stall_s(s.expect.failover_deadline_s) == s.expect.failover_deadline_s * SLOWNESS_SCALE_LIMIT
