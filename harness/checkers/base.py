"""What every checker shares: turning findings into a status, making a checker total, evidence.

A run directory may come from a process that was SIGKILLed mid-write, from an older runner, or
from a build that only supports black-box certification. So nothing trusts a field's presence or
type: the defensive readers (``num``, ``integer``, ``mapping``, ``time_of``; from
:mod:`harness.records`) return ``None`` for anything unreadable and the checkers decide whether
that means "not checked" or a violation. Facts about the run (clients, fault windows, the end of
the run) come from :mod:`harness.analysis`; run.json is read through ``run.run_meta``.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from harness.history import Run
from harness.records import (
    FAIL,
    NOT_CHECKED,
    PASS,
    RECORDED,
    CheckResult,
    Status,
    Violation,
    integer,
    mapping,
    num,
    time_of,
)

__all__ = [
    "FAIL",
    "NOT_CHECKED",
    "PASS",
    "CheckResult",
    "Checker",
    "Status",
    "Violation",
    "evidence",
    "finish",
    "fmt_t",
    "guarded",
    "integer",
    "mapping",
    "num",
    "records",
    "time_of",
    "trim",
]

Checker = Callable[[Run], CheckResult]

# Evidence is for a human reading a report: enough to find the record, never a whole /status dump.
_MAX_LIST = 10
_MAX_DEPTH = 4


def guarded(name: str) -> Callable[[Checker], Checker]:
    """Makes a checker total: a bug in the checker (or a record shape nobody foresaw) becomes a
    "not_checked" result that says so, instead of an exception that hides every other verdict."""

    def wrap(fn: Checker) -> Checker:
        @functools.wraps(fn)
        def run_checker(run: Run) -> CheckResult:
            token = _TIME_ORIGIN.set(run.run_meta.started)
            try:
                return fn(run)
            except Exception as exc:  # the whole point: judge() must always return a verdict
                last = traceback.extract_tb(exc.__traceback__)[-1:]
                where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
                return CheckResult(name, NOT_CHECKED, [], f"checker error: {type(exc).__name__}: {exc}{where}")
            finally:
                _TIME_ORIGIN.reset(token)

        return run_checker

    return wrap


def finish(name: str, violations: list[Violation], checked: bool, notes: Iterable[str] = ()) -> CheckResult:
    """The one place that turns findings into a status, so every checker follows the same rule:
    any violation fails; otherwise pass only if something was actually judged."""
    note_parts = [n for n in notes if n]
    if len(violations) > RECORDED.violations:
        note_parts.append(f"{len(violations) - RECORDED.violations} further violations not shown")
        violations = violations[: RECORDED.violations]
    if violations:
        status: Status = FAIL
    elif checked:
        status = PASS
    else:
        status = NOT_CHECKED
    return CheckResult(name, status, violations, "; ".join(note_parts))


# ---------------------------------------------------------------------------------------------
# Evidence


def records(items: Iterable[Any]) -> list[dict[str, Any]]:
    return [r for r in items if isinstance(r, Mapping)]  # type: ignore[misc]


def trim(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= RECORDED.chars else value[: RECORDED.chars] + "…"
    if isinstance(value, Mapping):
        if depth >= _MAX_DEPTH:
            return "{…}"
        return {str(k): trim(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if depth >= _MAX_DEPTH:
            return "[…]"
        items = [trim(v, depth + 1) for v in value[:_MAX_LIST]]
        if len(value) > _MAX_LIST:
            items.append(f"… {len(value) - _MAX_LIST} more")
        return items
    if value is None or isinstance(value, bool | int | float):
        return value
    return repr(value)[: RECORDED.chars]


def evidence(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if i >= RECORDED.evidence:
            out.append({"omitted": "further evidence records not shown"})
            break
        trimmed = trim(item)
        out.append(trimmed if isinstance(trimmed, dict) else {"value": trimmed})
    return out


#: The run's start while a checker judges it (set by :func:`guarded`): messages give times relative
#: to it, which a person can place on the run's timeline; epoch seconds they cannot.
_TIME_ORIGIN: ContextVar[float | None] = ContextVar("time_origin", default=None)


def fmt_t(t: float | None) -> str:
    if t is None:
        return "?"
    origin = _TIME_ORIGIN.get()
    return f"{t:.3f}" if origin is None else f"t+{t - origin:.3f}s"
