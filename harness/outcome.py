"""A scenario's outcome: pass, fail or inconclusive, with the reasons (docs/verdicts.md).

Pure: a recorded run and its invariants' results in, an outcome out. The checkers say whether each
invariant held; this says whether the run could say anything at all. A run is inconclusive when
- a harness process (backend, proxy, client swarm) ended without the nemesis having stopped it:
  whatever failed after that is not the build's doing, so this outranks even a violation;
- a client swarm gave up mid-run (NOT READY after the runner had moved on) and stopped its clients:
  the harness ended their games, so this outranks a violation too; one that gave up before the run
  began may have had the build's reason (too few welcomes), so there a violation outranks it;
- no client completed a game exchange during warm-up: nothing was under way to disturb;
- a disruptive fault demonstrably touched nothing (:func:`harness.analysis.step_evidence`);
- a check the scenario asked for could not run (its checker raised), or none could judge anything;
- a check set findings aside as inconclusive (its note says "inconclusive: ..."): on a machine too
  slow, around a starved swarm, or a stall that only the slowness stretch would have passed.
Apart from a harness process' exit, a violation outranks these: a failure seen is proof of a bug.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness import analysis
from harness.records import (
    FAIL,
    FAILED,
    INCONCLUSIVE,
    NOT_CHECKED,
    PASSED,
    CheckResult,
    Outcome,
    could_not_run,
    num,
    set_aside_as_inconclusive,
)

if TYPE_CHECKING:
    from harness.history import Run


def _disruptive(fault: dict[str, object], run: Run) -> bool:
    from harness.faults import Fault, FaultError
    from harness.scenario import Keepalive

    try:
        parsed = Fault.from_dict(fault)
    except FaultError:
        return False  # a record we cannot read proves nothing either way
    config = run.run_meta.balancer_config
    defaults = Keepalive()
    interval = num(config.get("ping_interval_s"))
    timeout = num(config.get("ping_timeout_s"))
    keepalive = Keepalive(
        ping_interval_s=interval if interval is not None else defaults.ping_interval_s,
        ping_timeout_s=timeout if timeout is not None else defaults.ping_timeout_s,
    )
    return parsed.spec.is_disruptive(parsed, keepalive)


def inconclusive_reasons(run: Run, results: Sequence[CheckResult]) -> tuple[list[str], list[str]]:
    """(reasons that outrank a violation, reasons that only outrank a pass)."""
    overriding = [e.describe() for e in analysis.unexpected_exits(run)]
    weak: list[str] = []
    for gave_up in analysis.swarm_give_ups(run.history):
        (weak if gave_up.during_setup else overriding).append(gave_up.describe(run.run_meta.started))
    warmup_end = run.run_meta.phase("warmup_end")
    if warmup_end is not None and not analysis.clients_played_by(run.history, warmup_end):
        seen = len(analysis.client_ids(run.history))
        weak.append(
            f"no client completed a game exchange during warm-up ({seen} client(s) recorded, "
            "none had a move acknowledged)"
        )
    for step in analysis.step_evidence(run):
        if step.touched is False and _disruptive(step.fault, run):
            weak.append(f"fault {step.fault_id} ({step.kind} on {','.join(step.targets)}) touched nothing: {step.why}")
    for r in results:
        if could_not_run(r):
            weak.append(f"check {r.invariant} could not run: {r.note}")
        elif set_aside_as_inconclusive(r):
            weak.append(f"check {r.invariant} set findings aside: {r.note}")
    if results and all(r.status == NOT_CHECKED for r in results):
        weak.append("no invariant had anything to judge")
    return overriding, weak


def decide(run: Run, results: Sequence[CheckResult]) -> tuple[Outcome, list[str]]:
    overriding, weak = inconclusive_reasons(run, results)
    if overriding:
        return INCONCLUSIVE, overriding + weak
    if any(r.status == FAIL for r in results):
        return FAILED, []
    if weak:
        return INCONCLUSIVE, weak
    return PASSED, []
