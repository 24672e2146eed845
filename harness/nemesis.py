"""The nemesis: applies and heals faults on a live cluster, and records each in the history.

How each kind acts lives with the kind (:mod:`harness.faults.kinds`); this is the bookkeeping:
fault ids, what is still active, and the history record of every attempt.

Every apply and heal is recorded twice: ``invoke`` before it acts and ``ok`` (or ``fail``) when it
is done, each with the evidence the kind gives: for process faults the pid signalled (on invoke
and completion), how it exited and the pid started again; for toxics, at heal, what each toxic did
(``evidence``, or null with ``evidence_reason``). :func:`harness.analysis.fault_evidence` reads them.

A step with a failover trigger is waited for first (:meth:`Nemesis.apply_when`): ``invoke``
``trigger`` when the wait starts, then ``ok`` with what fired it, or ``fail`` when it never fired
within its bound (and the step is not applied).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.cluster import Cluster
from harness.faults import Applied, Fault
from harness.history import HistoryWriter
from harness.waiting import wait_until

#: How often a waiting trigger looks at the clients' progress again.
TRIGGER_POLL_S = 0.05


@dataclass
class ActiveFault:
    fault_id: str
    fault: Fault
    applied: Applied = field(default_factory=Applied)


class Nemesis:
    def __init__(self, cluster: Cluster, history: HistoryWriter | None = None) -> None:
        self.cluster = cluster
        self.history = history
        self.active: dict[str, ActiveFault] = {}
        self._ids = itertools.count(1)

    def _record(self, type_: str, f: str, active: ActiveFault, **extra: Any) -> None:
        if self.history is not None:
            self.history.record(type_, f, process="nemesis", fault=active.fault.to_dict(),
                                fault_id=active.fault_id, **extra)  # fmt: skip

    def apply_when(
        self, fault: Fault, fired: Callable[[], dict[str, Any] | None], within_s: float
    ) -> ActiveFault | None:
        """Wait (at most ``within_s``) until ``fired()`` returns what fired the trigger, then apply.

        None when it never fired: the step is recorded as triggered-but-never-applied, which the
        run's outcome reads as a fault that did not land.
        """
        active = ActiveFault(fault_id=f"f{next(self._ids)}", fault=fault)
        trigger = fault.to_dict().get("trigger")
        self._record("invoke", "trigger", active, trigger=trigger)
        started = time.monotonic()
        facts: dict[str, Any] = {}

        def has_fired() -> bool:
            found = fired()
            if found is not None:
                facts.update(found)
            return found is not None

        try:
            wait_until(has_fired, timeout=within_s, interval=TRIGGER_POLL_S, what="the trigger")
        except TimeoutError:
            self._record("fail", "trigger", active, trigger=trigger,
                         error=f"never fired within {within_s:g} s: {fault.describe()}")  # fmt: skip
            return None
        self._record("ok", "trigger", active, trigger=trigger, waited_s=round(time.monotonic() - started, 3), **facts)
        return self.apply(fault, active)

    def apply(self, fault: Fault, active: ActiveFault | None = None) -> ActiveFault:
        if active is None:
            active = ActiveFault(fault_id=f"f{next(self._ids)}", fault=fault)
        self._record("invoke", "apply", active, **fault.spec.invoked(self.cluster, fault))
        try:
            active.applied = fault.spec.apply(self.cluster, fault, active.fault_id)
        except Exception as exc:
            self._record("fail", "apply", active, error=f"{type(exc).__name__}: {exc}")
            raise
        self._record("ok", "apply", active, **active.applied.outcome)
        if fault.spec.healable:
            self.active[active.fault_id] = active
        return active

    def heal(self, fault_id: str) -> None:
        active = self.active.pop(fault_id, None)
        if active is None:
            return
        self._record("invoke", "heal", active)
        try:
            outcome = active.fault.spec.heal(self.cluster, active.fault, active.applied)
        except Exception as exc:
            self._record("fail", "heal", active, error=f"{type(exc).__name__}: {exc}")
            raise
        self._record("ok", "heal", active, **(outcome or {}))

    def heal_all(self) -> None:
        """Heals every active fault, newest first; one failing heal does not stop the others."""
        errors: list[str] = []
        for fault_id in reversed(list(self.active)):
            try:
                self.heal(fault_id)
            except Exception as exc:
                errors.append(f"{fault_id}: {type(exc).__name__}: {exc}")
        if errors:
            raise RuntimeError("could not heal every fault: " + "; ".join(errors))
