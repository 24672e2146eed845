"""Named scenarios' hand-written ``expect`` against the expectation derived from their steps.

Every named scenario must be at least as strict as :func:`harness.expectations.expect_for`: its
close codes a subset of the derived ones, its deadlines no longer. Where a scenario is looser, the
table below says why, field by field; a documented looseness that is no longer there fails too,
so the table cannot go stale.
"""

from __future__ import annotations

import pytest

from harness.catalog import named_scenarios
from harness.expectations import derive_expect, expect_for, predicted_untouched, recovery_goals_for
from harness.faults import Fault, fault
from harness.scenario import Expect, Keepalive, Limits, Scenario, Step

DEADLINES = ("failover_deadline_s", "recovery_deadline_s")

#: scenario -> {field: why its hand-written value may be looser than the derived one}.
LOOSER: dict[str, dict[str, str]] = {
    "kill_primary": {
        "failover_deadline_s": "5.0 s, set by hand before derivation: a kill is seen at once (the TCP close), "
        "so the derived 4.0 s base, sized for silent faults, would do; kept until re-tuned on a loaded CI.",
    },
    "terminate_primary": {
        "failover_deadline_s": "5.0 s, as kill_primary: SIGTERM closes with 1001 at once; the derived 4.0 s "
        "would do and the hand-written value is slack for a loaded machine.",
    },
    "pause_primary": {
        "failover_deadline_s": "4.5 s against the derived 4.0 s: the scenario's arithmetic (keepalive 0.5 + "
        "0.5 s, 1 s close timeout, about 2 s to notice) plus 2.5 s slack. What matters is that the fault "
        "outlasts it at the largest slowness stretch (15 s against 3 x 4.5 s), so the no-keepalive mutant "
        "stalls past it even on a loaded machine; it does.",
    },
    "partition_primary": {
        "failover_deadline_s": "4.5 s, as pause_primary: the blackhole outlasts the deadline at the largest "
        "slowness stretch, so a build without keepalive still fails it.",
    },
    "latency_spike": {
        "failover_deadline_s": "5.0 s against the derived 4.8 s (4.0 s base + 2 x 0.4 s round trip of "
        "150 +/- 50 ms each way): the hand-written value rounds up to the whole second.",
    },
    "flapping_primary": {
        "failover_deadline_s": "6.0 s against 4.0 s: the timed heal restarts the primary and blocks the "
        "runner until it is ready, and the hand-written value leaves room for that on a loaded machine; "
        "what the scenario judges is the 1013 refusal, not the deadline.",
    },
    "both_down": {
        "failover_deadline_s": "6.0 s against 4.0 s: both backends die at once, so clients wait for the "
        "1013 close rather than a failover; slack chosen by hand, the close code is what is judged.",
    },
    "rolling_restart": {
        "failover_deadline_s": "6.0 s against 4.0 s: each graceful restart makes the backend close with "
        "1001 and then waits until it is ready; the hand-written value covers a slow restart. (Its close "
        "codes are stricter than derived: a rolling restart must never refuse a failover.)",
    },
    "reconnect_storm": {
        "failover_deadline_s": "10.0 s: 200 clients fail over at once; the derivation models a small swarm "
        "(its margin is 2 s for one failover), not a 200-client reconnect burst on a shared 2-core box.",
        "recovery_deadline_s": "15.0 s: the same 200-client burst after the heal, plus the probe clients.",
    },
    "slow_consumer": {
        "failover_deadline_s": "8.0 s: 8 KB/s towards 8 clients at 10 moves/s backlogs the acks. The "
        "derivation treats bandwidth as harmless and adds no queueing delay for it (a gap in the model: "
        "it has no latency effect for a throttled link), so the hand-written value covers the backlog.",
    },
    "balancer_restart": {
        "failover_deadline_s": "6.0 s against 4.0 s: every client reconnects to a balancer that is starting "
        "again; the derivation does not model balancer start-up time. (Its close codes are stricter "
        "than derived: a graceful restart must close with 1001 only.)",
    },
    "balancer_drain": {
        "failover_deadline_s": "6.0 s against 4.0 s: as balancer_restart, every drained client reconnects to a "
        "balancer that is starting again, which the derivation does not model. (Its close codes are stricter "
        "than derived: 1001 or 1012 only.)",
    },
    "reset_peer": {
        "failover_deadline_s": "6.0 s against 4.0 s: slack by hand; the reset lands on the next chunk "
        "through the primary link, after which the failover is a kill's, noticed at once.",
    },
    "slicer": {
        "failover_deadline_s": "6.0 s against 4.0 s: 8-byte slices with 100 us between them stretch every "
        "frame on the client link; the derivation gives slicer no latency effect.",
    },
    "limit_data": {
        "failover_deadline_s": "6.0 s against 4.0 s: the byte budget runs out at a time that depends on the "
        "traffic, and the failover may land on a freshly limited connection; slack by hand.",
    },
    "thundering_herd": {
        "failover_deadline_s": "8.0 s against the derived 7.0 s (2 s + 2 s keepalive, 1 s close, 2 s margin): "
        "1,000 clients re-admitted at once queue their first moves behind each other's handshakes.",
        "recovery_deadline_s": "20 s: the derivation models one failover, not 1,000 re-admissions after a "
        "restart; measured 50-100 welcomes a second on the shared 2-core machine (p50 8 s, max 18 s back).",
    },
    "mass_failover": {
        "recovery_deadline_s": "30 s: the heal comes while the last of the 2,000 sessions are still being "
        "re-homed (up to 24 s measured), and each client sends a move only every 20 s.",
    },
}


def _looser_fields(hand: Expect, derived: Expect) -> set[str]:
    return {f for f in DEADLINES if getattr(hand, f) > getattr(derived, f)}


SCENARIOS = named_scenarios()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_named_close_codes_are_at_most_the_derived_ones(name: str) -> None:
    s: Scenario = SCENARIOS[name]
    derived = expect_for(s)
    extra = set(s.expect.close_codes) - set(derived.close_codes)
    assert not extra, f"{name} allows close codes {sorted(extra)} that its steps do not explain ({derived})"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_named_deadlines_are_as_strict_as_derived_or_say_why(name: str) -> None:
    s = SCENARIOS[name]
    derived = expect_for(s)
    looser = _looser_fields(s.expect, derived)
    documented = set(LOOSER.get(name, {}))
    undocumented = looser - documented
    assert not undocumented, f"{name}: {sorted(undocumented)} looser than derived ({derived}) with no reason in LOOSER"
    stale = documented - looser
    assert not stale, f"{name}: LOOSER documents {sorted(stale)} but it is no longer looser: drop the entry"


def test_every_documented_scenario_exists() -> None:
    assert set(LOOSER) <= set(SCENARIOS)


# -- predicted_untouched: plans whose disruptive steps would touch nothing ---------------------


def _steps(*specs: tuple[float, str, str, float | None, dict[str, object]]) -> list[Step]:
    return [Step(at_s=at, fault=fault(kind, target, **params), duration_s=d) for at, kind, target, d, params in specs]


def _untouched(*specs: tuple[float, str, str, float | None, dict[str, object]]) -> list[int]:
    return [i for i, _why in predicted_untouched(_steps(*specs), Keepalive(), 6.0)]


def test_a_process_fault_on_a_process_held_down_touches_nothing() -> None:
    assert _untouched((1.0, "kill", "primary", None, {}), (2.0, "pause", "primary", 0.5, {})) == [1]
    assert _untouched((1.0, "terminate", "secondary", 3.0, {}), (2.0, "restart", "secondary", None, {})) == [1]


def test_a_process_fault_after_the_process_is_back_lands() -> None:
    # Killed for 0.5 s: back (at the latest) by the heal's blocking slack, before 5.0.
    assert _untouched((0.5, "kill", "primary", 0.5, {}), (5.0, "pause", "primary", 0.5, {})) == []


def test_a_disruptive_toxic_on_the_idle_secondary_touches_nothing() -> None:
    assert _untouched((0.5, "limit_data", "secondary", None, {"bytes": 64})) == [0]


def test_a_toxic_on_the_secondary_lands_when_the_sessions_come_to_it() -> None:
    assert _untouched((0.5, "limit_data", "secondary", None, {"bytes": 64}), (1.0, "kill", "primary", None, {})) == []
    assert _untouched((1.0, "kill", "primary", None, {}), (2.0, "reset_peer", "secondary", None, {})) == []


def test_a_toxic_on_the_primary_after_the_sessions_left_it_touches_nothing() -> None:
    assert _untouched(
        (0.5, "reset_peer", "primary", None, {}), (2.0, "limit_data", "primary", None, {"bytes": 64})
    ) == [1]


def test_after_clients_reconnect_through_the_lb_where_sessions_are_is_unknown() -> None:
    untouched = predicted_untouched(
        _steps((0.5, "reset_peer", "lb", None, {}), (2.0, "limit_data", "primary", None, {"bytes": 64})),
        Keepalive(),
        6.0,
    )
    assert [i for i, _ in untouched] == [1]
    assert "unpredictable" in untouched[0][1]


def test_steps_that_cannot_end_a_connection_are_never_judged_untouched() -> None:
    assert _untouched((0.5, "bandwidth", "secondary", None, {"rate_kbps": 64})) == []


def test_a_toxic_on_a_link_an_earlier_step_cuts_off_touches_nothing() -> None:
    assert _untouched((0.5, "partition", "lb", None, {}), (2.0, "limit_data", "lb", None, {"bytes": 64})) == [1]
    assert _untouched((0.5, "partition", "lb", 1.0, {}), (2.0, "limit_data", "lb", None, {"bytes": 64})) == []


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_named_recovery_goals_are_no_tighter_than_derived(name: str) -> None:
    """A recovery goal is a promise a correct build keeps: never tighter than the derivation."""
    s = SCENARIOS[name]
    derived = recovery_goals_for(s)
    for goal, bound in s.expect.recovery.set_goals():
        floor = getattr(derived, goal)
        assert floor is not None, f"{name}: expect.recovery.{goal} has no derived bound to be checked against"
        assert bound >= floor, f"{name}: expect.recovery.{goal} {bound} is tighter than the derived {floor}"


def test_kill_and_terminate_primary_set_recovery_goals() -> None:
    with_goals = {name for name, s in SCENARIOS.items() if s.expect.recovery.set_goals()}
    assert {"kill_primary", "terminate_primary"} <= with_goals


def test_a_triggered_toxic_may_first_act_as_late_as_its_heal() -> None:
    # Armed from 0 s to 3 s, the reset lands whenever a connection has carried its 5 frames: a kill
    # of the primary at 3.5 s can then come within min_interval of it, and a refused failover (1013)
    # is allowed. Untriggered, the reset lands at 0 s and the kill is far enough behind it.
    reset = {"kind": "reset_peer", "target": "primary", "params": {"timeout_ms": 0}}
    triggered = {**reset, "trigger": {"after": "frames", "frames": 5}}
    limits = Limits(min_interval_s=1.0)
    codes = {}
    for name, data in (("untriggered", reset), ("triggered", triggered)):
        steps = [Step(0.0, Fault.from_dict(data), 3.0), Step(3.5, fault("kill", "primary"), 1.0)]
        codes[name] = derive_expect(steps, limits=limits, fault_phase_s=4.5).close_codes
    assert codes == {"untriggered": (), "triggered": (1013,)}


def test_a_herd_may_be_shed_with_1013() -> None:
    from harness.analysis import HERD_MIN_CLIENTS
    from harness.expectations import HERD_CLIENTS

    assert HERD_CLIENTS == HERD_MIN_CLIENTS  # the derivation and the checker agree on a herd
    restart = [Step(at_s=0.5, fault=fault("restart", "balancer", graceful=True))]
    assert (
        1013
        in derive_expect(restart, limits=Limits(), keepalive=Keepalive(), fault_phase_s=1.0, clients=1000).close_codes
    )
    assert (
        1013
        not in derive_expect(restart, limits=Limits(), keepalive=Keepalive(), fault_phase_s=1.0, clients=4).close_codes
    )
