"""The fault phase's agenda and the prediction made from it: pure, no clock."""

from __future__ import annotations

from hypothesis import given, settings

from harness.faults import Fault, fault
from harness.scenario import Scenario, Step
from harness.schedule import BLOCKING_SLACK_S, Action, agenda, latest_times
from harness.strategies import fault_plans


def test_applies_then_timed_heals_in_time_order() -> None:
    steps = [
        Step(0.0, fault("kill", "primary"), 1.0),
        Step(0.5, fault("partition", "secondary")),
        Step(1.0, fault("down", "lb"), 0.5),
    ]
    assert agenda(steps) == [
        Action(0.0, "apply", 0),
        Action(0.5, "apply", 1),
        Action(1.0, "apply", 2),  # an apply comes before a heal planned for the same time
        Action(1.0, "heal", 0),
        Action(1.5, "heal", 2),
    ]


def test_a_restart_has_no_heal_whatever_its_duration() -> None:
    assert agenda([Step(0.0, fault("restart", "primary"), 2.0)]) == [Action(0.0, "apply", 0)]


def test_blocking_actions_delay_what_follows() -> None:
    steps = [
        Step(0.0, fault("restart", "secondary")),
        Step(1.0, fault("down", "primary"), 0.1),
        Step(2.0, fault("kill", "primary"), 0.1),
        Step(5.0, fault("latency", "lb")),
    ]
    w = latest_times(steps, fault_phase_s=6.0)
    assert (w[0].applied, w[0].healed) == (0.0, BLOCKING_SLACK_S)  # over once it is back
    assert (w[1].applied, w[1].healed) == (3.0, 3.0)  # held up by the restart
    assert (w[2].applied, w[2].healed) == (3.0, 3.0)  # the kill's heal blocks once more...
    assert w[3].applied == 6.0  # ...so the latency planned at 5.0 comes after it
    assert w[3].healed == 6.0  # held until the heal phase: the end of the phase and the agenda


def test_untimed_faults_last_until_the_phase_ends() -> None:
    (w,) = latest_times([Step(1.0, fault("partition", "lb"))], fault_phase_s=4.0)
    assert (w.applied, w.healed) == (1.0, 4.0)


@settings(max_examples=100, deadline=None, database=None)
@given(fault_plans(include_balancer=True))
def test_every_generated_step_is_applied_once_and_healed_at_most_once(s: Scenario) -> None:
    actions = agenda(s.steps)
    assert [a.at_s for a in actions] == sorted(a.at_s for a in actions)
    for i, step in enumerate(s.steps):
        verbs = [a.verb for a in actions if a.step == i]
        healed = step.duration_s is not None and step.fault.spec.healable
        assert verbs == (["apply", "heal"] if healed else ["apply"])
    for w in latest_times(s.steps, s.fault_phase_s):
        assert w.step.at_s <= w.applied <= w.healed


def test_a_step_waiting_for_failovers_slides_everything_after_it() -> None:
    waits = Fault.from_dict(
        {"kind": "kill", "target": "secondary", "trigger": {"after": "failovers", "failovers": 1, "within_s": 4.0}}
    )
    steps = [
        Step(0.5, fault("kill", "primary"), 2.0),
        Step(0.5, waits),
        Step(1.0, fault("latency", "lb"), 1.0),
    ]
    w = latest_times(steps, fault_phase_s=3.0)
    assert w[1].applied == 4.5  # as late as its bound
    assert w[2].applied == 5.0 and w[2].healed == 6.0  # the later step keeps its spacing
    assert w[0].healed == 6.5  # the primary's heal slid too (and blocks while it restarts)
    assert w[1].healed == 6.5 + BLOCKING_SLACK_S  # untimed: after the slid phase and that restart
