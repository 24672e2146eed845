"""What every checker returns, and the defensive readers they share.

A run directory may come from a process that was SIGKILLed mid-write, from an older runner, or
from a build that only supports black-box certification. So nothing here trusts a field's
presence or type: readers return ``None`` for anything unreadable and the checkers decide whether
that means "not checked" or a violation.
"""

from __future__ import annotations

import functools
import math
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.history import Record, Run

Status = Literal["pass", "fail", "not_checked"]
PASS: Status = "pass"
FAIL: Status = "fail"
NOT_CHECKED: Status = "not_checked"

# Processes in the history that are not game clients (docs/architecture.md, "History records").
NON_CLIENT_PROCESSES = frozenset({"nemesis", "monitor", "runner"})
# Any of these `f` values marks a process as a game client; the runner or a swarm supervisor may
# someday write other records, and those must not be judged as clients.
CLIENT_FUNCTIONS = frozenset({"conn_open", "conn_fail", "welcome", "resume", "move", "reply", "conn_close", "stopped"})

# Evidence is for a human reading a report: enough to find the record, never a whole /status dump.
MAX_EVIDENCE_ITEMS = 20
MAX_VIOLATIONS = 50
_MAX_STRING = 300
_MAX_LIST = 10
_MAX_DEPTH = 4


@dataclass
class Violation:
    invariant: str
    message: str
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "message": self.message, "evidence": self.evidence}


@dataclass
class CheckResult:
    invariant: str
    status: Status
    violations: list[Violation] = field(default_factory=list)
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "status": self.status,
            "violations": [v.to_dict() for v in self.violations],
            "note": self.note,
        }

    def summary(self) -> str:
        head = f"{self.invariant}: {self.status}"
        if self.note:
            head += f" ({self.note})"
        lines = [head]
        lines.extend(f"  - {v.message}" for v in self.violations)
        return "\n".join(lines)


Checker = Callable[[Run], CheckResult]


def guarded(name: str) -> Callable[[Checker], Checker]:
    """Makes a checker total: a bug in the checker (or a record shape nobody foresaw) becomes a
    "not_checked" result that says so, instead of an exception that hides every other verdict."""

    def wrap(fn: Checker) -> Checker:
        @functools.wraps(fn)
        def run_checker(run: Run) -> CheckResult:
            try:
                return fn(run)
            except Exception as exc:  # the whole point: judge() must always return a verdict
                last = traceback.extract_tb(exc.__traceback__)[-1:]
                where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
                return CheckResult(name, NOT_CHECKED, [], f"checker error: {type(exc).__name__}: {exc}{where}")

        return run_checker

    return wrap


def finish(name: str, violations: list[Violation], checked: bool, notes: Iterable[str] = ()) -> CheckResult:
    """The one place that turns findings into a status, so every checker follows the same rule:
    any violation fails; otherwise pass only if something was actually judged."""
    note_parts = [n for n in notes if n]
    if len(violations) > MAX_VIOLATIONS:
        note_parts.append(f"{len(violations) - MAX_VIOLATIONS} further violations not shown")
        violations = violations[:MAX_VIOLATIONS]
    if violations:
        status: Status = FAIL
    elif checked:
        status = PASS
    else:
        status = NOT_CHECKED
    return CheckResult(name, status, violations, "; ".join(note_parts))


# ---------------------------------------------------------------------------------------------
# Defensive readers


def num(value: Any) -> float | None:
    # bool is an int subclass; `true` where a number belongs is a malformed field, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def time_of(rec: Mapping[str, Any]) -> float | None:
    """History and journal records carry `t`; balancer event lines carry `ts`."""
    t = num(rec.get("t"))
    return t if t is not None else num(rec.get("ts"))


def meta_section(run: Run, key: str) -> dict[str, Any]:
    # Run.failover & co. call dict() on whatever is there, which raises on a malformed run.json.
    return mapping(run.meta.get(key)) if isinstance(run.meta, Mapping) else {}


def expect_number(run: Run, key: str, default: float) -> float:
    value = num(meta_section(run, "expect").get(key))
    return value if value is not None and value >= 0 else default


def phase_time(run: Run, key: str) -> float | None:
    return num(meta_section(run, "phases").get(key))


def records(items: Iterable[Any]) -> list[Record]:
    return [r for r in items if isinstance(r, Mapping)]  # type: ignore[misc]


def client_ids(run: Run) -> list[str]:
    ids = {
        r["process"]
        for r in records(run.history)
        if isinstance(r.get("process"), str)
        and r["process"] not in NON_CLIENT_PROCESSES
        and r.get("f") in CLIENT_FUNCTIONS
    }
    return sorted(ids)


def client_histories(run: Run) -> dict[str, list[Record]]:
    """Each client's records in time order; records without a readable time are dropped because
    every client rule is about order in time."""
    wanted = set(client_ids(run))
    out: dict[str, list[Record]] = {c: [] for c in sorted(wanted)}
    for r in records(run.history):
        p = r.get("process")
        if isinstance(p, str) and p in wanted and time_of(r) is not None:
            out[p].append(r)
    for recs in out.values():
        recs.sort(key=lambda r: time_of(r) or 0.0)
    return out


def run_end_time(run: Run) -> float | None:
    """The latest time anything was recorded: where an unfinished interval is cut off."""
    candidates = [num(meta_section(run, "phases").get("quiesce_end")), num(run.meta.get("ended"))]
    candidates += [time_of(r) for r in records(run.history)]
    for journal in run.journals.values():
        candidates += [time_of(r) for r in records(journal)]
    known = [c for c in candidates if c is not None]
    return max(known) if known else None


# ---------------------------------------------------------------------------------------------
# Evidence


def trim(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= _MAX_STRING else value[:_MAX_STRING] + "…"
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
    return repr(value)[:_MAX_STRING]


def evidence(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if i >= MAX_EVIDENCE_ITEMS:
            out.append({"omitted": "further evidence records not shown"})
            break
        trimmed = trim(item)
        out.append(trimmed if isinstance(trimmed, dict) else {"value": trimmed})
    return out


def fmt_t(t: float | None) -> str:
    return "?" if t is None else f"{t:.3f}"
