"""`no_concurrent_recv`: the balancer never had two readers on one socket, and nothing crashed.

A second concurrent ``recv()`` is the signature bug of a racing failover. websockets reports it
with an exception whose text differs between its implementations (see the field notes), and a
relay task that dies of it may only show up as "Task exception was never retrieved". The build's
own counter, ``errors.concurrent_recv`` in /status, is judged too because a build may catch and
count the error without printing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.history import Run

from .base import CheckResult, Violation, evidence, finish, guarded, integer, mapping, records, time_of

NAME = "no_concurrent_recv"


@dataclass(frozen=True)
class _Pattern:
    key: str
    regex: re.Pattern[str]
    what: str


_PATTERNS = (
    _Pattern(
        "concurrent_recv",
        # The prefix is shared by the new asyncio message ("…is already running recv or
        # recv_streaming") and the legacy one ("…is already waiting for the next message"); both
        # suffixes are listed too so a reworded prefix in a future release still matches.
        re.compile(
            r"cannot call recv while another coroutine"
            r"|is already running recv or recv_streaming"
            r"|is already waiting for the next message"
            r"|ConcurrencyError"
        ),
        "a second concurrent recv() on one connection",
    ),
    _Pattern(
        "unretrieved_task_exception",
        re.compile(r"Task exception was never retrieved"),
        "a task died with an exception nobody awaited",
    ),
    _Pattern("traceback", re.compile(r"Traceback"), "an exception traceback"),
)

# A traceback's last unindented line names the exception; it is the useful part of the evidence.
_TRACEBACK_SCAN_LINES = 200


def _exception_line(lines: list[str], start: int) -> str | None:
    for line in lines[start + 1 : start + 1 + _TRACEBACK_SCAN_LINES]:
        if line and not line[0].isspace():
            return line.strip()
    return None


def _scan_output(stream: str, text: str) -> dict[str, list[dict[str, Any]]]:
    hits: dict[str, list[dict[str, Any]]] = {p.key: [] for p in _PATTERNS}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        for pattern in _PATTERNS:
            if pattern.regex.search(line):
                hit: dict[str, Any] = {"stream": stream, "line": index + 1, "text": line.strip()}
                if pattern.key == "traceback":
                    hit["exception"] = _exception_line(lines, index)
                hits[pattern.key].append(hit)
    return hits


def _concurrent_recv_count(status: Any) -> tuple[bool, int | None]:
    """(readable, value). A status without the counter cannot vouch for anything."""
    errors = mapping(mapping(status).get("errors"))
    if "concurrent_recv" not in errors:
        return False, None
    return True, integer(errors["concurrent_recv"])


@guarded(NAME)
def check_no_concurrent_recv(run: Run) -> CheckResult:
    violations: list[Violation] = []
    notes: list[str] = []

    stdout = run.balancer_stdout if isinstance(run.balancer_stdout, str) else ""
    stderr = run.balancer_stderr if isinstance(run.balancer_stderr, str) else ""
    has_output = bool(stdout.strip() or stderr.strip())
    if has_output:
        merged: dict[str, list[dict[str, Any]]] = {p.key: [] for p in _PATTERNS}
        for stream, text in (("stdout", stdout), ("stderr", stderr)):
            for key, hits in _scan_output(stream, text).items():
                merged[key].extend(hits)
        for pattern in _PATTERNS:
            hits = merged[pattern.key]
            if hits:
                violations.append(
                    Violation(
                        NAME,
                        f"balancer output shows {pattern.what}: {len(hits)} matching line(s), "
                        f"first: {hits[0]['text'][:160]!r}",
                        evidence(hits),
                    )
                )
    else:
        notes.append("no balancer output to scan")

    samples: list[tuple[str, float | None, Any]] = [
        ("monitor", time_of(r), r.get("status")) for r in records(run.statuses())
    ]
    final_status = run.run_meta.final.get("status")
    if final_status is not None:
        samples.append(("final", None, final_status))

    readable = 0
    bad_samples: list[dict[str, Any]] = []
    for source, t, status in samples:
        ok, value = _concurrent_recv_count(status)
        if not ok:
            continue
        readable += 1
        if value != 0:
            bad_samples.append({"source": source, "t": t, "errors": mapping(mapping(status).get("errors"))})
    if bad_samples:
        first = bad_samples[0]["errors"].get("concurrent_recv")
        violations.append(
            Violation(
                NAME,
                f"/status errors.concurrent_recv is {first!r} (must be 0) in "
                f"{len(bad_samples)} of {readable} sample(s)",
                evidence(bad_samples),
            )
        )
    if samples and readable < len(samples):
        notes.append(f"{len(samples) - readable} status sample(s) without errors.concurrent_recv")
    if not readable:
        notes.append("no /status with errors.concurrent_recv")

    return finish(NAME, violations, checked=has_output or readable > 0, notes=notes)
