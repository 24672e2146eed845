"""The outcome model (docs/verdicts.md): pure parts, judged on small synthetic runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from checker_runs import T0, RunBuilder

from harness import analysis
from harness.checkers import check_clean_failover, judge
from harness.faults import fault
from harness.outcome import decide
from harness.records import (
    FAIL,
    FAILED,
    FLAKY,
    INCONCLUSIVE,
    NOT_CHECKED,
    PASSED,
    CheckResult,
    ScenarioEntry,
    Verdict,
    certificate_verdict,
    merge_outcomes,
)
from harness.scenario import Expect, Phases, Scenario, ScenarioError, Step, Workload


def outcome(rb: RunBuilder) -> tuple[str, list[str]]:
    run = rb.build()
    return decide(run, judge(run))


# -- merging ----------------------------------------------------------------------------------


def test_unknown_outranks_pass_and_a_failure_outranks_unknown() -> None:
    assert merge_outcomes([PASSED, PASSED]) == PASSED
    assert merge_outcomes([PASSED, INCONCLUSIVE]) == INCONCLUSIVE
    assert merge_outcomes([INCONCLUSIVE, FAILED, PASSED]) == FAILED
    assert merge_outcomes([FLAKY, PASSED, INCONCLUSIVE]) == FLAKY
    assert merge_outcomes([]) == INCONCLUSIVE  # nothing run is not a pass


def test_certificate_verdicts() -> None:
    def entry(o: str) -> ScenarioEntry:
        return ScenarioEntry("s", outcome=o)  # type: ignore[arg-type]

    assert certificate_verdict([entry(PASSED)]) == "certified"
    assert certificate_verdict([entry(PASSED), entry(INCONCLUSIVE)]) == "inconclusive"
    assert certificate_verdict([entry(FLAKY), entry(PASSED)]) == "rejected"
    assert certificate_verdict([entry(INCONCLUSIVE), entry(FAILED)]) == "rejected"
    assert certificate_verdict([]) == "inconclusive"


def test_a_flaky_entry_is_failing_and_never_a_pass() -> None:
    e = ScenarioEntry("generated:plan", outcome=FLAKY, passed=False)
    assert e.failing and e.effective_outcome == FLAKY
    assert ScenarioEntry.from_json(e.to_json()).effective_outcome == FLAKY


def test_verdict_json_keeps_outcome_and_reasons(tmp_path: Path) -> None:
    Verdict("s", [CheckResult("ordered", "pass")], INCONCLUSIVE, ["nobody played"]).write(tmp_path)
    loaded = Verdict.load(tmp_path)
    assert loaded.outcome == INCONCLUSIVE and loaded.reasons == ["nobody played"] and not loaded.passed


# -- deciding ---------------------------------------------------------------------------------


def test_a_healthy_run_passes(rb: RunBuilder) -> None:
    assert outcome(rb.healthy()) == (PASSED, [])


def test_a_harness_process_ending_on_its_own_is_inconclusive_even_with_a_violation(rb: RunBuilder) -> None:
    rb.healthy()
    rb.rec(T0 + 1.5, "monitor", "event", "process_exit", name="secondary", pid=4242, exit_code=-9)
    rb.conn_close("c2", T0 + 1.6, code=1011, initiator="remote")  # a drop the checkers fail
    verdict, reasons = outcome(rb)
    assert verdict == INCONCLUSIVE
    assert "harness process secondary (pid 4242) ended (killed by signal 9) and no fault stopped it" in reasons[0]


def test_an_exit_the_nemesis_caused_is_expected(rb: RunBuilder) -> None:
    rb.healthy()  # kills the primary at T0+2
    rb.rec(T0 + 2.2, "monitor", "event", "process_exit", name="primary", pid=7, exit_code=-9)
    assert outcome(rb) == (PASSED, [])


def test_a_swarm_that_gave_up_mid_run_is_inconclusive_never_a_pass(rb: RunBuilder) -> None:
    # Every checker passes (clients gone before the heal are not judged), yet the harness ended
    # the games: the run showed nothing about the build.
    rb.healthy()
    rb.rec(T0 + 2.4, "monitor", "event", analysis.SWARM_GAVE_UP, name="swarm-c-run", pid=99, exit_code=3)
    verdict, reasons = outcome(rb)
    assert verdict == INCONCLUSIVE
    assert reasons[0].startswith("client swarm swarm-c-run (pid 99) gave up mid-run, seen at t+2.4 s (NOT READY")
    assert "the harness ended their games, not the build" in reasons[0]


def test_a_swarm_that_gave_up_mid_run_outranks_a_violation(rb: RunBuilder) -> None:
    rb.healthy()
    rb.rec(T0 + 2.4, "monitor", "event", analysis.SWARM_GAVE_UP, name="swarm-c-run", pid=99, exit_code=3)
    rb.conn_close("c2", T0 + 2.5, code=1011, initiator="remote")  # a drop the checkers fail
    run = rb.build()
    assert any(r.status == FAIL for r in judge(run))
    assert decide(run, judge(run))[0] == INCONCLUSIVE


def test_a_swarm_that_gave_up_before_the_run_is_inconclusive_but_a_violation_outranks_it(rb: RunBuilder) -> None:
    # Too few welcomes before the run began may be the build's doing: a failure seen still fails.
    rb.healthy()
    rb.rec(T0, "monitor", "event", analysis.SWARM_GAVE_UP, name="swarm-c-run", pid=99, exit_code=3, during_setup=True)
    verdict, reasons = outcome(rb)
    assert verdict == INCONCLUSIVE
    assert "gave up before the run began" in reasons[0]
    run = rb.build()
    assert decide(run, [*judge(run), CheckResult("ordered", FAIL)])[0] == FAILED


def test_nobody_playing_during_warmup_is_inconclusive(rb: RunBuilder) -> None:
    rb.healthy()
    rb.meta["phases"]["warmup_end"] = T0 - 0.5
    verdict, reasons = outcome(rb)
    assert verdict == INCONCLUSIVE
    assert any("no client completed a game exchange during warm-up" in r for r in reasons)


def test_a_disruptive_toxic_on_an_idle_link_is_inconclusive(rb: RunBuilder) -> None:
    rb.healthy()
    # Nobody is on the secondary until T0+2.3: a partition of its link before that touched nothing.
    rb.fault(T0 + 1.2, "partition", "secondary", "f7", heal_at=T0 + 1.8)
    verdict, reasons = outcome(rb)
    assert verdict == INCONCLUSIVE
    assert any("fault f7 (partition on secondary) touched nothing" in r for r in reasons)
    steps = {s.fault_id: s for s in analysis.traffic_evidence(rb.build())}
    assert steps["f7"].touched is False and steps["f1"].touched is None


def test_a_toxic_on_a_busy_link_touched_it(rb: RunBuilder) -> None:
    rb.healthy()
    rb.journal("primary", T0 + 0.1, "open", conn="p-1", client="c1", path="/play?client=c1")
    rb.fault(T0 + 1.2, "partition", "primary", "f7", heal_at=T0 + 1.8)
    steps = {s.fault_id: s for s in analysis.traffic_evidence(rb.build())}
    assert steps["f7"].touched is True


def test_a_check_that_could_not_run_is_inconclusive(rb: RunBuilder) -> None:
    run = rb.healthy().build()
    results = [*judge(run), CheckResult("ordered", NOT_CHECKED, [], "checker error: KeyError: 'x'")]
    verdict, reasons = decide(run, results)
    assert verdict == INCONCLUSIVE and "check ordered could not run" in reasons[0]


def test_a_violation_outranks_the_weaker_reasons(rb: RunBuilder) -> None:
    rb.healthy()
    rb.meta["phases"]["warmup_end"] = T0 - 0.5
    run = rb.build()
    assert decide(run, [CheckResult("ordered", FAIL)])[0] == FAILED


def test_clean_failover_with_no_client_attached_is_not_checked(rb: RunBuilder) -> None:
    rb.healthy()
    rb.history = [r for r in rb.history if r["f"] != "welcome"]
    result = check_clean_failover(rb.build())
    assert result.status == NOT_CHECKED, result
    assert "no client was ever attached" in result.note


def test_clean_failover_names_the_backends_rejection(rb: RunBuilder) -> None:
    rb.healthy()
    rb.conn_close("c2", T0 + 1.6, code=1013, initiator="remote")
    rb.journal("secondary", T0 + 1.55, "rejected", path="/", status=400, reason="missing client id")
    result = check_clean_failover(rb.build())
    assert result.status == FAIL
    assert "secondary answered HTTP 400 'missing client id' to path '/'" in result.note


# -- the smoke gate's evidence ----------------------------------------------------------------


def test_smoke_facts_name_what_the_clients_saw(rb: RunBuilder) -> None:
    rb.rec(
        T0, "s1", "event", "conn_fail", conn=1, error="InvalidStatus: server rejected WebSocket connection: HTTP 503"
    )
    rb.rec(
        T0 + 1,
        "s1",
        "event",
        "conn_fail",
        conn=2,
        error="InvalidStatus: server rejected WebSocket connection: HTTP 503",
    )
    rb.rec(T0, "s2", "event", "conn_open", conn=1)
    facts = analysis.smoke_facts(rb.history)
    assert not facts.passed and facts.opened == 1 and facts.welcomed == 0
    assert facts.connect_errors == [("InvalidStatus: server rejected WebSocket connection: HTTP 503", 2)]
    rb.play("s3", T0 + 2, range(1, 2))
    assert analysis.smoke_facts(rb.history).played == ["s3"]


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Step(at_s=0.0, fault=fault("kill", "primary"), duration_s=-1), "step.duration_s: must be >= 0"),
        (lambda: Workload(clients=0), "workload.clients: must be >= 1"),
        (lambda: Expect(close_codes=(999,)), "expect.close_codes"),
        (lambda: Phases(warmup_s=float("nan")), "phases.warmup_s: expected a number"),
        (lambda: Scenario(name="x", invariants=("ordred",)), "unknown invariant 'ordred'"),
        (lambda: Scenario(name=""), "name: required"),
    ],
)
def test_a_scenario_built_in_python_is_validated_like_json(build: object, message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(")):
        build()  # type: ignore[operator]


def test_an_unknown_json_key_is_an_error_naming_it() -> None:
    with pytest.raises(ScenarioError, match="unknown key 'stepz'"):
        Scenario.from_dict({"name": "x", "stepz": []})
    with pytest.raises(ScenarioError, match=r"steps\[0\]: unknown key 'durration_s'"):
        Scenario.from_dict({"name": "x", "steps": [{"fault": {"kind": "kill", "target": "primary"}, "durration_s": 1}]})


def test_every_named_scenario_still_builds_and_round_trips() -> None:
    from harness.catalog import named_scenarios

    for scenario in named_scenarios().values():
        assert Scenario.from_dict(scenario.to_dict()) == scenario


def test_repeated_evidence_is_folded() -> None:
    from harness.records import Violation, render_violations

    lines = render_violations([Violation("ordered", "m", [{"a": 1}, {"a": 1}, {"a": 1}, {"b": 2}])])
    assert lines == ["- m", '    {"a": 1}  (3 times)', '    {"b": 2}']


def test_a_failing_console_line_names_the_first_violation_in_words() -> None:
    from harness.certify import console_line
    from harness.records import ResultEntry, Violation

    failing = ScenarioEntry(
        "kill_primary",
        duration_s=9.5,
        outcome=FAILED,
        results={
            "ordered": ResultEntry("pass"),
            "clean_failover": ResultEntry("fail", "", [Violation("clean_failover", "connection dropped: client c1")]),
        },
    )
    line = console_line(failing)
    assert "FAIL" in line and "violated: clean_failover: connection dropped: client c1" in line
    assert "INCONCLUSIVE" in console_line(ScenarioEntry("s", outcome=INCONCLUSIVE))
    assert "FLAKY" in console_line(ScenarioEntry("generated:p", outcome=FLAKY))


def test_a_rejection_far_from_any_drop_is_not_named(rb: RunBuilder) -> None:
    rb.healthy()
    rb.conn_close("c2", T0 + 4.6, code=1013, initiator="remote")
    rb.journal("secondary", T0 + 0.2, "rejected", path="/", status=400, reason="missing client id")  # a health probe
    result = check_clean_failover(rb.build())
    assert result.status == FAIL and "rejected" not in result.note


def test_a_check_that_set_findings_aside_makes_the_run_inconclusive(rb: RunBuilder) -> None:
    # A stall only the slowness stretch would pass (test_check_clean_failover): not a pass.
    rb.healthy()
    rb.rec(T0 - 1.0, "swarm-1", "event", "swarm_start", clients=["c1"], slowness=4.0)
    rb.meta["expect"]["failover_deadline_s"] = 0.5
    rb.move("c3", T0 + 4.0, 50, latency=0.9)  # c3 is on the restarted primary, healed at T0+3
    rb.fault(T0 + 3.9, "partition", "primary", "f9", heal_at=T0 + 4.85)
    run = rb.build()
    results = judge(run)
    assert next(r for r in results if r.invariant == "clean_failover").status == NOT_CHECKED
    verdict, reasons = decide(run, results)
    assert verdict == INCONCLUSIVE
    aside = "check clean_failover set findings aside: inconclusive: 1 stall(s) with no failover"
    assert any(r.startswith(aside) for r in reasons)
    assert decide(run, [*results, CheckResult("ordered", FAIL)])[0] == FAILED
