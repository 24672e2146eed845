"""The fault phase's schedule, as pure data: what the runner does when, and what that implies.

:func:`agenda` turns a scenario's steps into timed actions (apply, and the timed heal of a step
with a duration). The runner executes exactly this list; :func:`latest_times` predicts from the
same list how late each action can happen, which is what the expectations are derived from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from harness.scenario import Step

#: How long one blocking nemesis action may hold up the schedule: the runner applies steps in one
#: thread, and a restart (or the timed heal of a kill/terminate) waits for the process to be ready.
BLOCKING_SLACK_S = 3.0


@dataclass(frozen=True)
class Action:
    """At ``at_s`` into the fault phase, apply or heal the fault of ``steps[step]``."""

    at_s: float
    verb: Literal["apply", "heal"]
    step: int


def agenda(steps: Sequence[Step]) -> list[Action]:
    """Every action of the fault phase, in the order the runner takes them.

    By planned time; at equal times applies come before heals, and each verb in step order. A
    step whose kind is over once applied (restart) has no heal, whatever its duration says.
    """
    actions = [Action(s.at_s, "apply", i) for i, s in enumerate(steps)]
    actions += [
        Action(s.at_s + s.duration_s, "heal", i)
        for i, s in enumerate(steps)
        if s.duration_s is not None and s.fault.spec.healable
    ]
    return sorted(actions, key=lambda a: (a.at_s, a.verb == "heal", a.step))


@dataclass(frozen=True)
class Window:
    """When one step is in force at the latest: applied by ``applied``, healed by ``healed``."""

    step: Step
    applied: float
    healed: float


def latest_times(steps: Sequence[Step], fault_phase_s: float) -> list[Window]:
    """For each step, the latest it can be applied and the latest its fault can be over.

    The runner takes the agenda's actions in one thread: an action that blocks (a restart, the heal
    of a kill or terminate, which start a process and wait until it is ready) holds up everything
    planned meanwhile, for at most :data:`BLOCKING_SLACK_S` each; a step waiting for failovers holds
    it up for at most its ``within_s``, and slides the rest of the schedule by as much. Faults without a timed heal are
    healed once the fault phase and the whole agenda are over; a restart is over once its process
    is back.
    """
    clock = 0.0
    # A step waiting for failovers holds the thread up to its bound, and the runner slides the rest
    # of the schedule by the wait, so every later action is due that much later too.
    slide = 0.0
    applied: dict[int, float] = {}
    healed: dict[int, float] = {}
    for action in agenda(steps):
        now = max(action.at_s + slide, clock)
        fault = steps[action.step].fault
        kind = fault.spec
        if action.verb == "apply":
            if fault.after_failovers is not None:
                slide += fault.after_failovers.within_s
                now += fault.after_failovers.within_s
                clock = now
            applied[action.step] = now
            blocking = kind.blocks_on_apply
        else:
            healed[action.step] = now
            blocking = kind.blocks_on_heal
        if blocking:
            clock = now + BLOCKING_SLACK_S
    phase_end = max(fault_phase_s + slide, clock)
    out = []
    for i, s in enumerate(steps):
        if s.fault.spec.healable:
            end = healed.get(i, phase_end)
        else:
            end = applied[i] + BLOCKING_SLACK_S
        out.append(Window(s, applied[i], end))
    return out
