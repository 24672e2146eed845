"""The fault-plan strategies and the Hypothesis profiles: pure and fast, no processes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from harness import hypothesis_profiles as hp
from harness.expectations import derive_expect, is_disruptive, latency_effect_s, predicted_untouched
from harness.faults import KINDS, LINK_KINDS, PROCESS_KINDS, fault
from harness.scenario import INVARIANTS, Keepalive, Limits, Scenario, Step
from harness.strategies import (
    BOUNDS,
    DEFAULT_KINDS,
    FaultProfile,
    aims,
    fault_plans,
    fault_profiles,
    note_plan_events,
)
from harness.toxiproxy.extensions import Aim

HORIZON = 6.0
EPS = 1e-9
# Generation is cheap; the property tests share this budget and stay well under a few seconds.
FAST = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FIND = settings(max_examples=2000, database=None, deadline=None, phases=(Phase.generate, Phase.shrink))


def _base(ka: Keepalive) -> float:
    return ka.ping_interval_s + ka.ping_timeout_s + 1.0 + 2.0


def _check_bounds(s: Scenario, horizon: float, include_balancer: bool) -> None:
    for step in s.steps:
        f = step.fault
        p = f.params
        if f.kind == "latency":
            assert 0 <= p["jitter_ms"] <= p["latency_ms"] <= BOUNDS.max_latency_ms
        elif f.kind == "bandwidth":
            assert p["rate_kbps"] >= 32
        elif f.kind == "reset_peer":
            assert 0 <= p["timeout_ms"] <= 500
        elif f.kind == "limit_data":
            assert BOUNDS.min_limit_bytes <= p["bytes"] <= BOUNDS.max_limit_bytes
        elif f.kind == "slicer":
            assert 4 <= p["average_size"] <= 64
            assert 0 <= p["size_variation"] < p["average_size"]
            assert 0 <= p["delay_us"] <= 500
        if f.target == "balancer":
            assert include_balancer, "the balancer is left out by default"
            assert f.kind in ("kill", "terminate", "restart")
        if f.kind == "restart":
            assert step.duration_s is None
        assert 0 <= step.at_s < horizon
        if step.duration_s is not None:
            assert step.duration_s > 0
            assert step.at_s + step.duration_s <= horizon + EPS


def _check_expect(s: Scenario) -> None:
    codes = set(s.expect.close_codes)
    targets = {step.fault.target for step in s.steps}
    if {"primary", "secondary"} <= targets:
        assert 1013 in codes, "a plan touching both backends must allow 1013"
    if any(st.fault.target == "lb" and is_disruptive(st.fault, s.keepalive) for st in s.steps):
        assert {1006, 1011} <= codes
    for step in s.steps:
        if step.fault.target == "balancer":
            assert 1006 in codes
            if step.fault.kind in ("terminate", "restart"):
                assert {1001, 1011, 1012} <= codes
    if not ({"lb", "balancer"} & targets):
        assert not codes - {1013}, "backend faults never reach the client as a close"
    ka = s.keepalive
    assert s.expect.failover_deadline_s >= _base(ka) - EPS
    biggest = max((latency_effect_s(st.fault) for st in s.steps), default=0.0)
    assert s.expect.failover_deadline_s > biggest
    assert s.invariants == INVARIANTS


@FAST
@given(fault_plans())
def test_plans_round_trip_validate_and_respect_bounds(s: Scenario) -> None:
    assert Scenario.from_json(s.to_json()) == s
    assert Scenario.from_dict(s.to_dict()) == s  # validates every field
    assert 1 <= len(s.steps) <= 4
    assert [st.at_s for st in s.steps] == sorted(st.at_s for st in s.steps)
    assert s.phases.faults_s == HORIZON
    _check_bounds(s, HORIZON, include_balancer=False)
    _check_expect(s)
    assert "generated" in s.tags
    note_plan_events(s)  # inside a test: records events without raising


@FAST
@given(st.integers(1, 6), st.sampled_from([0.5, 2.0, 6.0, 10.0]), st.booleans(), st.data())
def test_plans_with_other_shapes(max_steps: int, horizon: float, include_balancer: bool, data: st.DataObject) -> None:
    s = data.draw(fault_plans(max_steps=max_steps, horizon_s=horizon, include_balancer=include_balancer))
    assert Scenario.from_json(s.to_json()) == s
    assert 1 <= len(s.steps) <= max_steps
    _check_bounds(s, horizon, include_balancer)
    _check_expect(s)


@FAST
@given(fault_plans(kinds=["latency", "kill"]))
def test_kinds_restrict_the_vocabulary(s: Scenario) -> None:
    assert {st.fault.kind for st in s.steps} <= {"latency", "kill"}
    assert "swizzle" not in s.tags  # neither kind can cut a link


@FAST
@given(fault_profiles(include_balancer=True))
def test_profiles_are_consistent(p: FaultProfile) -> None:
    assert p.kinds and p.targets and p.pairs
    assert 1 <= p.density <= 4
    assert ("pause", "balancer") not in p.pairs
    for kind, target in p.pairs:
        assert kind in p.kinds and target in p.targets
        assert target in KINDS[kind].targets
    if p.swizzle:
        assert p.density >= 2 and {"partition", "down"} & set(p.kinds)


def test_bad_arguments_fail_at_once() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        fault_plans(kinds=["explode"])
    with pytest.raises(ValueError, match="max_steps"):
        fault_plans(max_steps=0)
    with pytest.raises(ValueError, match="at least one"):
        fault_profiles(kinds=[])


# -- shrinking and reach ----------------------------------------------------------------------


def test_a_partition_plan_shrinks_to_one_step_at_zero() -> None:
    s = find(
        fault_plans(),
        lambda s: any(st.fault.kind == "partition" for st in s.steps),
        settings=FIND,
        random=random.Random(0),
    )
    assert len(s.steps) == 1
    (step,) = s.steps
    assert step.at_s == 0
    assert step.fault.kind == "partition"
    assert step.duration_s is None
    assert "swizzle" not in s.tags


def test_the_swizzle_cuts_both_backends_then_restores_them() -> None:
    s = find(fault_plans(), lambda s: "swizzle" in s.tags, settings=FIND, random=random.Random(0))
    assert len(s.steps) == 2
    first, second = s.steps
    assert {first.fault.kind, second.fault.kind} <= {"partition", "down"}
    assert (first.fault.target, second.fault.target) == ("primary", "secondary")
    assert first.at_s < second.at_s
    # Both restored inside the fault phase, each after both cuts.
    for step in s.steps:
        assert step.duration_s is not None
        assert second.at_s < step.at_s + step.duration_s <= HORIZON + EPS
    assert 1013 in s.expect.close_codes


def test_the_default_vocabulary_is_every_generated_kind() -> None:
    assert set(DEFAULT_KINDS) == {k for k, v in KINDS.items() if v.generated}
    # Upgrade faults cost what the build's open timeout says, which generated plans do not set.
    upgrade = {"backend_upgrade_refused", "backend_upgrade_stalled", "backend_upgrade_slow"}
    # A lost or repeated frame needs its own workload (uncompressed, clients answering a gap).
    frames = {"frame_drop", "frame_duplicate"}
    assert set(KINDS) - set(DEFAULT_KINDS) == {"idle_timeout", "drain", "frame_close"} | upgrade | frames


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_is_reachable(kind: str) -> None:
    # A kind left out of the default vocabulary is reachable when named.
    kinds = None if kind in DEFAULT_KINDS else [kind, *DEFAULT_KINDS]
    s = find(
        fault_plans(include_balancer=True, kinds=kinds),
        lambda s: any(st.fault.kind == kind for st in s.steps),
        settings=settings(FIND, phases=(Phase.generate,)),  # reach only; shrinking is tested above
        random=random.Random(1),
    )
    assert kind in {st.fault.kind for st in s.steps}


@FAST
@given(fault_plans(kinds=["pause", "kill"], include_balancer=True))
def test_the_balancer_never_pauses(s: Scenario) -> None:
    assert ("pause", "balancer") not in {(st.fault.kind, st.fault.target) for st in s.steps}


# -- the expectations, on hand-written plans --------------------------------------------------


def _expect(*steps: Step, limits: Limits | None = None, horizon: float = HORIZON):
    return derive_expect(steps, limits=limits, keepalive=Keepalive(), fault_phase_s=horizon)


def test_one_backend_down_allows_no_close_code() -> None:
    e = _expect(Step(0.0, fault("kill", "primary")))
    assert e.close_codes == ()
    assert e.failover_deadline_s == 4.0


def test_a_partitioned_backend_alone_keeps_the_base_deadline() -> None:
    # Noticing a silent backend within the base is what the no-keepalive mutant must fail.
    e = _expect(Step(0.5, fault("partition", "primary")))
    assert e.close_codes == ()
    assert e.failover_deadline_s == 4.0


def test_both_backends_allow_1013() -> None:
    e = _expect(Step(0.0, fault("kill", "primary"), 1.0), Step(3.0, fault("slicer", "secondary")))
    assert e.close_codes == (1013,)


def test_failovers_closer_than_min_interval_allow_1013() -> None:
    limits = Limits(max_attempts=3, window_s=6.0, min_interval_s=2.0)
    close = _expect(Step(0.0, fault("kill", "primary"), 0.1), Step(1.0, fault("down", "primary")), limits=limits)
    assert 1013 in close.close_codes
    apart = _expect(Step(0.0, fault("down", "primary"), 0.1), Step(3.0, fault("down", "primary")), limits=limits)
    assert apart.close_codes == ()


def test_more_failovers_than_max_attempts_allow_1013() -> None:
    steps = [Step(float(t), fault("down", "primary"), 0.2) for t in (0, 1, 2)]
    assert _expect(*steps, limits=Limits(max_attempts=3, min_interval_s=0.5)).close_codes == ()
    assert _expect(*steps, limits=Limits(max_attempts=2, min_interval_s=0.5)).close_codes == (1013,)
    zero = Limits(max_attempts=0)
    assert _expect(Step(0.0, fault("kill", "secondary")), limits=zero).close_codes == (1013,)


def test_a_restart_holding_the_schedule_can_bring_steps_together() -> None:
    # The restart blocks the runner until the primary is ready; the down planned 1 s later may then
    # be applied right after the kill planned 2 s later.
    limits = Limits(min_interval_s=0.5)
    e = _expect(
        Step(0.0, fault("restart", "secondary")),
        Step(1.0, fault("down", "primary"), 0.1),
        Step(2.0, fault("kill", "primary"), 0.1),
        limits=limits,
    )
    assert 1013 in e.close_codes


def test_lb_faults_drop_the_client_connection() -> None:
    assert _expect(Step(0.0, fault("reset_peer", "lb"))).close_codes == (1006, 1011)
    assert _expect(Step(0.0, fault("bandwidth", "lb", rate_kbps=32))).close_codes == ()
    assert _expect(Step(0.0, fault("slicer", "lb"))).close_codes == ()
    mild = _expect(Step(0.0, fault("latency", "lb", latency_ms=50, stream="upstream")))
    assert mild.close_codes == ()
    harsh = _expect(Step(0.0, fault("latency", "lb", latency_ms=300, jitter_ms=100)))
    assert harsh.close_codes == (1006, 1011)


def test_an_lb_partition_holds_clients_until_it_heals() -> None:
    held = _expect(Step(1.0, fault("partition", "lb")))
    assert held.failover_deadline_s == 4.0 + (HORIZON - 1.0)
    timed = _expect(Step(1.0, fault("partition", "lb"), 2.0))
    assert timed.failover_deadline_s == 6.0


def test_balancer_faults() -> None:
    assert _expect(Step(0.0, fault("kill", "balancer"))).close_codes == (1006,)
    for kind in ("terminate", "restart"):
        assert _expect(Step(0.0, fault(kind, "balancer"))).close_codes == (1001, 1006, 1011, 1012)


def test_latency_raises_the_deadline_above_its_effect() -> None:
    f = fault("latency", "primary", latency_ms=400, jitter_ms=400, stream="both")
    assert latency_effect_s(f) == pytest.approx(1.6)
    e = _expect(Step(0.0, f))
    assert e.failover_deadline_s == pytest.approx(4.0 + 2 * 1.6)
    # Overlapping latency on two links adds up; the two backends also allow 1013.
    both = _expect(Step(0.0, f), Step(1.0, fault("latency", "secondary", latency_ms=100, stream="upstream")))
    assert both.failover_deadline_s == pytest.approx(4.0 + 2 * 1.7)


def test_disruptive_kinds() -> None:
    for kind in PROCESS_KINDS:
        assert is_disruptive(fault(kind, KINDS[kind].targets[0]))  # drain: the balancer only
    cutting = {"partition", "down", "reset_peer", "limit_data", "one_way_partition", "backend_protocol_error",
               "frame_close"}  # fmt: skip
    for kind in LINK_KINDS:
        if kind not in ("latency", "client_protocol_error"):
            assert is_disruptive(fault(kind, "primary")) == (kind in cutting)
    assert not is_disruptive(fault("client_protocol_error", "lb"))  # one allowed close code, not a drop
    assert not is_disruptive(fault("latency", "primary", latency_ms=100, stream="both"))
    assert is_disruptive(fault("latency", "primary", latency_ms=130, stream="both"))


def test_note_plan_events_is_harmless_outside_a_test() -> None:
    s = find(fault_plans(), lambda s: True, settings=FIND)
    note_plan_events(s)


# -- profiles ---------------------------------------------------------------------------------


def test_profiles_register(tmp_path: Path) -> None:
    try:
        hp.register_profiles(root=tmp_path)
        for name, examples in (("dev", 3), ("ci", 6), ("nightly", 200)):
            p = settings.get_profile(name)
            assert p.max_examples == examples
            assert p.deadline is None
            assert p.print_blob is True
            assert p.phases == tuple(Phase)
            assert {HealthCheck.too_slow, HealthCheck.function_scoped_fixture} <= set(p.suppress_health_check)
            assert isinstance(p.database, DirectoryBasedExampleDatabase)
            assert Path(p.database.path) == tmp_path / ".hypothesis" / "examples"
    finally:
        hp.register_profiles()  # leave them pointing at the working directory, as at import


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "dev"),
        ({"CI": "true"}, "ci"),
        ({"CI": "false"}, "dev"),
        ({"CI": "true", "HYPOTHESIS_PROFILE": "nightly"}, "nightly"),
        ({"HYPOTHESIS_PROFILE": "dev", "CI": "1"}, "dev"),
    ],
)
def test_default_profile_name(env: dict[str, str], expected: str) -> None:
    assert hp.default_profile_name(env) == expected


def test_load_default_profile_loads_it() -> None:
    before = settings.get_current_profile_name()
    try:
        assert hp.load_default_profile({"CI": "true"}) == "ci"
        assert settings.get_current_profile_name() == "ci"
        assert settings().max_examples == 6
        with pytest.raises(Exception, match="nosuch"):
            hp.load_default_profile({"HYPOTHESIS_PROFILE": "nosuch"})
    finally:
        settings.load_profile(before)


# -- aimed steps ------------------------------------------------------------------------------


@FAST
@given(aims(("c1", "c2", "c3")))
def test_aims_are_valid_and_round_trip(aim: Aim) -> None:
    assert Aim.from_json(json.loads(json.dumps(aim.to_json()))) == aim
    if aim.clients is not None:
        assert set(aim.clients) <= {"c1", "c2", "c3"}
    if aim.first is not None:
        assert 1 <= aim.first <= 4


@FAST
@given(fault_plans(aimed=True, aim_clients=("c1", "c2")))
def test_aimed_plans_round_trip_and_aim_only_aimable_kinds(s: Scenario) -> None:
    assert Scenario.from_json(s.to_json()) == s
    for step in s.steps:
        if step.fault.aim is not None:
            assert step.fault.spec.aimable


@FAST
@given(fault_plans())
def test_plans_are_unaimed_unless_asked(s: Scenario) -> None:
    assert all(step.fault.aim is None and step.fault.trigger is None for step in s.steps)


def test_aimed_plans_reach_every_shape_of_aim_and_shrink_to_unaimed() -> None:
    def shapes(s: Scenario) -> set[str]:
        return {key for step in s.steps if step.fault.aim is not None for key in step.fault.aim.to_json()}

    for shape in ("first", "fraction", "clients"):
        s = find(
            fault_plans(kinds=["latency"], aimed=True, aim_clients=("c1",)),
            lambda s, shape=shape: shape in shapes(s),
            settings=settings(FIND, phases=(Phase.generate,)),
            random=random.Random(3),
        )
        assert s.steps
    shrunk = find(fault_plans(kinds=["latency"], aimed=True), lambda s: True, settings=FIND)
    assert [(step.fault.aim, step.fault.trigger) for step in shrunk.steps] == [(None, None)]
    triggered = find(
        fault_plans(kinds=["latency"], aimed=True),
        lambda s: any(step.fault.trigger is not None for step in s.steps),
        settings=settings(FIND, phases=(Phase.generate,)),
        random=random.Random(3),
    )
    assert Scenario.from_json(triggered.to_json()) == triggered


def test_aims_reject_a_bad_cap() -> None:
    with pytest.raises(ValueError, match="max_first: must be >= 1, got 0"):
        aims(max_first=0)


# -- the "limits" shape and landable plans ------------------------------------------------------


@FAST
@given(fault_plans())
def test_generated_plans_only_hold_steps_predicted_to_land(s: Scenario) -> None:
    assert predicted_untouched(s.steps, s.keepalive, s.phases.faults_s) == []


def test_the_limits_shape_drives_sessions_to_their_limit_and_past_it() -> None:
    limits = Limits()
    past = find(
        fault_plans(),
        lambda s: "profile:limits" in s.tags and len(s.steps) == limits.max_attempts + 1,
        settings=FIND,
        random=random.Random(0),
    )
    targets = [step.fault.target for step in past.steps]
    assert targets == ["primary", "secondary"] * (len(targets) // 2) + ["primary"] * (len(targets) % 2)
    assert {step.fault.kind for step in past.steps} <= {"down", "reset_peer"}
    assert past.steps[-1].at_s - past.steps[0].at_s < limits.window_s
    for earlier, later in zip(past.steps, past.steps[1:], strict=False):
        assert earlier.duration_s is not None
        assert earlier.at_s + earlier.duration_s < later.at_s, "each cut heals before the next"
    # One cut past max_attempts inside the window: a correct build refuses it with 1013.
    assert 1013 in past.expect.close_codes


def test_the_limits_shape_probes_both_sides_of_the_minimum_interval() -> None:
    interval = Limits().min_interval_s

    def gaps(s: Scenario) -> list[float]:
        return [round(b.at_s - a.at_s, 1) for a, b in zip(s.steps, s.steps[1:], strict=False)]

    under = find(fault_plans(), lambda s: "profile:limits" in s.tags and min(gaps(s)) < interval, settings=FIND)
    over = find(
        fault_plans(), lambda s: "profile:limits" in s.tags and min(gaps(s)) > interval, settings=FIND,
        random=random.Random(1),
    )  # fmt: skip
    assert 1013 in under.expect.close_codes  # too soon: a refusal is allowed
    assert min(gaps(over)) > interval
