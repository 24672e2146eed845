"""Invariant checkers: pure functions from a recorded :class:`~harness.history.Run` to a verdict.

Each ``check_<name>(run)`` returns a :class:`CheckResult` whose status is "pass", "fail" or
"not_checked" (the data it needs is absent: never "pass" in that case), with violations that carry
the offending records as evidence. No checker does I/O, reads a clock or raises on a malformed run.
The input format is docs/architecture.md ("The run directory").
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.history import Run

from .balancer_output import check_no_concurrent_recv
from .base import Checker, CheckResult, Status, Violation
from .cleanup import check_cleanup_complete
from .delivery import check_failover_delivery
from .drain import check_drain_graceful
from .edges import check_close_passthrough, check_connection_limit, check_size_limit
from .failover_limits import check_reconnect_limits
from .game_state import RULE_SOURCE as EXPECTED_STATE_SOURCE
from .herd import check_herd_recovered
from .isolation import check_others_unaffected
from .liveness import check_clean_failover, check_recovers_after_heal
from .paths import check_path_forwarded
from .recovery import check_recovery_goals
from .refusals import check_refusals_justified
from .replies import check_no_crosstalk, check_ordered, check_state_continuity
from .upgrade import check_upgrade_failover
from .upstream import check_single_upstream

# The report order: safety first, cheapest explanation of a failure first.
ALL: list[tuple[str, Checker]] = [
    ("no_concurrent_recv", check_no_concurrent_recv),
    ("reconnect_limits", check_reconnect_limits),
    ("cleanup_complete", check_cleanup_complete),
    ("single_upstream", check_single_upstream),
    ("no_crosstalk", check_no_crosstalk),
    ("ordered", check_ordered),
    ("clean_failover", check_clean_failover),
    ("others_unaffected", check_others_unaffected),
    ("state_continuity", check_state_continuity),
    ("recovers_after_heal", check_recovers_after_heal),
    # The other side of each limit, delivery during a failover, and the limit probes' verdicts.
    ("refusals_justified", check_refusals_justified),
    ("path_forwarded", check_path_forwarded),
    ("failover_delivery", check_failover_delivery),
    ("connection_limit", check_connection_limit),
    ("size_limit", check_size_limit),
    ("close_passthrough", check_close_passthrough),
    # The scenario's own goals on its recovery figures (harness.recovery).
    ("recovery_goals", check_recovery_goals),
    ("drain_graceful", check_drain_graceful),
    ("upgrade_failover", check_upgrade_failover),
    ("herd_recovered", check_herd_recovered),
]
NAMES = [name for name, _ in ALL]


def judge(run: Run, only: Iterable[str] | None = None) -> list[CheckResult]:
    """Runs the checkers (all, or those named in `only`) in :data:`ALL` order."""
    if only is not None:
        wanted = set(only)
        unknown = wanted.difference(NAMES)
        if unknown:
            raise ValueError(f"unknown invariant(s): {', '.join(sorted(unknown))} (known: {', '.join(NAMES)})")
    else:
        wanted = set(NAMES)
    return [check(run) for name, check in ALL if name in wanted]


__all__ = [
    "ALL",
    "EXPECTED_STATE_SOURCE",
    "NAMES",
    "CheckResult",
    "Checker",
    "Status",
    "Violation",
    "check_clean_failover",
    "check_cleanup_complete",
    "check_herd_recovered",
    "check_no_concurrent_recv",
    "check_no_crosstalk",
    "check_ordered",
    "check_others_unaffected",
    "check_reconnect_limits",
    "check_recovers_after_heal",
    "check_recovery_goals",
    "check_single_upstream",
    "check_state_continuity",
    "check_upgrade_failover",
    "judge",
]
