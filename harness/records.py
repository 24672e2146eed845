"""The typed records a run leaves behind, each with one writer and one reader.

- :class:`RunMeta` is ``run.json``: written by the runner, read by :func:`harness.history.load_run`
  (as ``Run.run_meta``); checkers read it through the run.
- :class:`Violation` and :class:`CheckResult` are what a checker finds; :class:`Verdict` is
  ``verdict.json``, the runner's judged result.
- :class:`Certificate` and :class:`ScenarioEntry` are ``certificate.json``: built by ``certify``,
  read by the report.

The JSON formats are those of docs/architecture.md. Every reader here is tolerant, because a run
directory may come from a SIGKILLed process, an older runner or a black-box build: a field that is
missing or of the wrong type reads as absent, and the checker that needed it answers "not checked".

:func:`render_violations` is the one way a violation is shown to a person, with one limit policy
(:data:`SHOWN`); what is *recorded* is capped once, by the checkers (:data:`RECORDED`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Record = dict[str, Any]

RUN_META_FILE = "run.json"
VERDICT_FILE = "verdict.json"


class RecordError(ValueError):
    """A record file that cannot be read at all; the message names the file and the problem."""


# -- defensive readers ----------------------------------------------------------------------------


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


def listing(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def text(value: Any) -> str | None:
    return None if value is None else str(value)


def is_op(rec: Mapping[str, Any], type_: str, f: str) -> bool:
    """Whether a history record is this operation's record: its ``type`` (invoke, ok, fail, info,
    event) and its ``f`` (move, welcome, conn_close, ...)."""
    return rec.get("type") == type_ and rec.get("f") == f


#: The runner's phase marks in the order it reaches them, each named after the part that ends at
#: it: ``reset`` (the checked reset before a run: heal, reconfigure, backends healthy) ends at
#: ``started``, the warm-up at ``warmup_end``, and so on.
PHASE_PARTS: tuple[tuple[str, str], ...] = (
    ("reset", "started"),
    ("warmup", "warmup_end"),
    ("faults", "faults_end"),
    ("heal", "heal_end"),
    ("deadline", "deadline_end"),
    ("stop_clients", "clients_stopped"),
    ("quiesce", "quiesce_end"),
)


def phase_durations(reset_start: float | None, phases: Mapping[str, Any]) -> dict[str, float]:
    """Seconds each part of a run took, from its phase marks (``run.json`` ``phases``): a part
    whose start or end was not reached (a run cut short) is left out, never guessed."""
    out: dict[str, float] = {}
    previous = num(reset_start)
    for part, mark in PHASE_PARTS:
        end = num(phases.get(mark))
        if previous is not None and end is not None:
            out[part] = round(end - previous, 3)
        previous = end
    return out


def time_of(rec: Mapping[str, Any]) -> float | None:
    """History and journal records carry `t`; balancer event lines carry `ts`."""
    t = num(rec.get("t"))
    return t if t is not None else num(rec.get("ts"))


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file, or :class:`RecordError` saying in one line what is wrong."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: missing") from exc
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).splitlines() or ["?"])[0]
        raise RecordError(f"{path}: not a readable JSON file ({why})") from exc
    if not isinstance(loaded, dict):
        raise RecordError(f"{path}: expected a JSON object, got {type(loaded).__name__}")
    return loaded


def write_atomic(path: Path, data: bytes) -> Path:
    # Written whole then renamed: a reader (a re-judge, CI uploading artifacts) never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        # A full disk: leave no half-written .tmp behind, and let the caller say why.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any, *, sort_keys: bool = False) -> Path:
    return write_atomic(path, (json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n").encode("utf-8"))


# -- run.json -------------------------------------------------------------------------------------


@dataclass
class RunMeta:
    """``run.json``. Sections are plain dicts because their contents come from the build (status,
    config); their known numeric fields are read through the accessors below."""

    run_id: str | None = None
    scenario: str | None = None
    started: float | None = None
    ended: float | None = None
    balancer_cmd: str | None = None
    balancer_config: dict[str, Any] = field(default_factory=dict)
    failover: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    faults: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Seconds each part of the run took (:func:`phase_durations`): where a slow suite's time went.
    durations: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Any) -> RunMeta:
        m = mapping(raw)
        return cls(
            run_id=text(m.get("run_id")),
            scenario=text(m.get("scenario")),
            started=num(m.get("started")),
            ended=num(m.get("ended")),
            balancer_cmd=text(m.get("balancer_cmd")),
            balancer_config=mapping(m.get("balancer_config")),
            failover=mapping(m.get("failover")),
            capabilities=mapping(m.get("capabilities")),
            phases=mapping(m.get("phases")),
            expect=mapping(m.get("expect")),
            baseline=mapping(m.get("baseline")),
            final=mapping(m.get("final")),
            faults=listing(m.get("faults")),
            notes=[str(n) for n in listing(m.get("notes"))],
            durations=mapping(m.get("durations")),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, run_dir: Path) -> Path:
        return write_json(Path(run_dir) / RUN_META_FILE, self.to_json(), sort_keys=True)

    def phase(self, name: str) -> float | None:
        return num(self.phases.get(name))

    def phase_times(self) -> dict[str, float]:
        return {k: v for k, v in ((k, num(v)) for k, v in self.phases.items()) if v is not None}

    def expect_number(self, key: str, default: float) -> float:
        value = num(self.expect.get(key))
        return value if value is not None and value >= 0 else default


# -- what a checker finds -------------------------------------------------------------------------

Status = Literal["pass", "fail", "not_checked"]
PASS: Status = "pass"
FAIL: Status = "fail"
NOT_CHECKED: Status = "not_checked"
STATUSES: tuple[Status, ...] = (PASS, FAIL, NOT_CHECKED)


@dataclass
class Violation:
    invariant: str
    message: str
    evidence: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "message": self.message, "evidence": self.evidence}

    @classmethod
    def from_json(cls, raw: Any, invariant: str = "") -> Violation:
        m = mapping(raw)
        return cls(str(m.get("invariant") or invariant), str(m.get("message") or ""), listing(m.get("evidence")))


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
        return "\n".join([head, *render_violations(self.violations, indent="  ")])


@dataclass(frozen=True)
class Limits:
    violations: int
    evidence: int
    chars: int


#: What a checker records (the certificate and verdict.json keep all of it).
RECORDED = Limits(violations=50, evidence=20, chars=300)
#: What any person-facing rendering shows: the runner's summary, `judge`, JUnit and report.html.
SHOWN = Limits(violations=10, evidence=6, chars=600)


def compact(item: Any) -> str:
    if isinstance(item, str):
        return item
    return json.dumps(item, default=str, ensure_ascii=False, separators=(", ", ": "))


def clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(frozen=True)
class ShownViolation:
    """A violation cut down to :data:`SHOWN`, for any renderer (text, JUnit, HTML)."""

    message: str
    evidence: list[str]
    more_evidence: int


def shown_violations(violations: Iterable[Violation], limits: Limits = SHOWN) -> tuple[list[ShownViolation], int]:
    """The violations a person sees and how many more were left out."""
    items = list(violations)
    shown = []
    for v in items[: limits.violations]:
        ev = v.evidence[: limits.evidence]
        texts = fold_repeats([clip(compact(e), limits.chars) for e in ev])
        shown.append(ShownViolation(v.message, texts, len(v.evidence) - len(ev)))
    return shown, max(0, len(items) - limits.violations)


def fold_repeats(lines: list[str]) -> list[str]:
    """Runs of the same line shown once, with how many there were: repeated evidence is noise."""
    out: list[str] = []
    counts: list[int] = []
    for line in lines:
        if out and out[-1] == line:
            counts[-1] += 1
        else:
            out.append(line)
            counts.append(1)
    return [line if n == 1 else f"{line}  ({n} times)" for line, n in zip(out, counts, strict=True)]


def render_violations(violations: Iterable[Violation], *, indent: str = "", limits: Limits = SHOWN) -> list[str]:
    """The one text rendering of violations: a line per message, its evidence indented below."""
    shown, more = shown_violations(violations, limits)
    lines: list[str] = []
    for v in shown:
        lines.append(f"{indent}- {v.message}")
        lines.extend(f"{indent}    {e}" for e in v.evidence)
        if v.more_evidence:
            lines.append(f"{indent}    … {v.more_evidence} more evidence record(s)")
    if more:
        lines.append(f"{indent}… {more} more violation(s)")
    return lines


# -- outcomes -------------------------------------------------------------------------------------

#: How a scenario ended (docs/verdicts.md). "inconclusive": the run could not say (a harness
#: process died on its own, nobody played during warm-up, a disruptive fault touched nothing, a
#: required check could not run). "flaky": it failed, then passed when run again; a failure seen
#: once is still a failure, so it is never shown or counted as a pass.
Outcome = Literal["pass", "fail", "inconclusive", "flaky"]
PASSED: Outcome = "pass"
FAILED: Outcome = "fail"
INCONCLUSIVE: Outcome = "inconclusive"
FLAKY: Outcome = "flaky"
OUTCOMES: tuple[Outcome, ...] = (PASSED, FAILED, INCONCLUSIVE, FLAKY)
#: When outcomes are merged the higher rank wins: as in Jepsen, unknown outranks valid, and a
#: violation outranks unknown (a failure seen is proof; an unknown is only the lack of one).
_RANK: dict[Outcome, int] = {PASSED: 0, INCONCLUSIVE: 1, FLAKY: 2, FAILED: 3}


def merge_outcomes(outcomes: Iterable[Outcome]) -> Outcome:
    """The outcome of several: fail > flaky > inconclusive > pass. Nothing merged is inconclusive:
    no run is not a pass."""
    items = list(outcomes)
    return max(items, key=lambda o: _RANK[o]) if items else INCONCLUSIVE


def outcome_of(value: Any) -> Outcome | None:
    return value if value in OUTCOMES else None


#: A result whose checker raised (``checkers.base.guarded``) could not run; its note starts so.
CHECK_ERROR_PREFIX = "checker error:"


def could_not_run(result: CheckResult) -> bool:
    return result.status == NOT_CHECKED and result.note.startswith(CHECK_ERROR_PREFIX)


#: A checker that set findings aside because the run cannot judge them (a slow machine, a starved
#: swarm, a stall only the slowness stretch would pass) says so in a note starting with this.
INCONCLUSIVE_NOTE = "inconclusive:"


def set_aside_as_inconclusive(result: CheckResult) -> bool:
    """The check found something it could not judge and said "inconclusive: ..." in one of its
    notes: not a pass, whatever else it saw."""
    return result.status == NOT_CHECKED and any(
        part.strip().startswith(INCONCLUSIVE_NOTE) for part in result.note.split("; ")
    )


# -- verdict.json ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    """``verdict.json``: the invariants' results, and the scenario's outcome with the reasons it is
    not a plain pass or fail (why it is inconclusive)."""

    scenario: str
    results: list[CheckResult]
    #: None: decided from the results alone (a failure fails, otherwise a pass), as before outcomes.
    decided: Outcome | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> Outcome:
        if self.decided is not None:
            return self.decided
        return FAILED if any(r.status == FAIL for r in self.results) else PASSED

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "outcome": self.outcome,
            "reasons": self.reasons,
            "passed": self.passed,
            "results": [r.to_dict() for r in self.results],
        }

    def write(self, run_dir: Path) -> Path:
        return write_json(Path(run_dir) / VERDICT_FILE, self.to_json())

    @classmethod
    def load(cls, run_dir: Path) -> Verdict:
        raw = read_json_object(Path(run_dir) / VERDICT_FILE)
        results = [_result_from_json(r) for r in listing(raw.get("results"))]
        outcome = outcome_of(raw.get("outcome"))  # None in an older verdict.json: from the results
        return cls(str(raw.get("scenario") or ""), results, outcome, [str(x) for x in listing(raw.get("reasons"))])


def _status(value: Any) -> Status | None:
    return value if value in STATUSES else None


def _result_from_json(raw: Any, invariant: str = "") -> CheckResult:
    m = mapping(raw)
    name = str(m.get("invariant") or invariant)
    return CheckResult(
        name,
        _status(m.get("status")) or NOT_CHECKED,
        [Violation.from_json(v, name) for v in listing(m.get("violations"))],
        str(m.get("note") or ""),
    )


# -- certificate.json -----------------------------------------------------------------------------


@dataclass
class ResultEntry:
    """One invariant's result in a certificate. ``status`` is None when the certificate holds none
    or an unknown one: the report shows that as "no result", never as a pass."""

    status: Status | None
    note: str = ""
    violations: list[Violation] = field(default_factory=list)
    raw_status: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.raw_status,
            "note": self.note,
            "violations": [{"message": v.message, "evidence": v.evidence} for v in self.violations],
        }

    @classmethod
    def from_check(cls, result: CheckResult) -> ResultEntry:
        return cls(result.status, result.note, list(result.violations), result.status)

    @classmethod
    def from_json(cls, raw: Any, invariant: str) -> ResultEntry:
        m = mapping(raw)
        return cls(
            _status(m.get("status")),
            str(m.get("note") or ""),
            [Violation.from_json(v, invariant) for v in listing(m.get("violations")) if isinstance(v, dict)],
            m.get("status"),
        )


@dataclass
class RecoveryFigures:
    """How a scenario's clients recovered (harness.recovery defines each figure): what
    certificate.json records per scenario and the report plots. Times in seconds; ``*_at_s`` are
    relative to the run's start. None where there was nothing to measure (no client disrupted,
    no two acks)."""

    clients: int = 0
    disrupted_clients: int = 0
    episodes: int = 0
    unrecovered: int = 0
    p50_recover_s: float | None = None
    p99_recover_s: float | None = None
    max_recover_s: float | None = None
    max_recover_client: str | None = None
    longest_gap_s: float | None = None
    longest_gap_client: str | None = None
    longest_gap_at_s: float | None = None
    reconnects: int = 0
    peak_reconnects_per_s: int = 0
    peak_reconnects_at_s: float | None = None
    upstream_connects: int = 0
    peak_upstream_connects_per_s: int = 0
    peak_upstream_connects_at_s: float | None = None
    resent: int = 0
    lost: int = 0
    #: Some lost moves as ``client#seq``; ``lost`` is the complete count.
    lost_examples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> RecoveryFigures:
        m = mapping(raw)
        out = cls()
        for name, default in asdict(out).items():
            value = m.get(name)
            if isinstance(default, int):
                setattr(out, name, integer(value) if integer(value) is not None else default)
            elif isinstance(default, list):
                setattr(out, name, [str(x) for x in listing(value)])
            elif name.endswith("_client"):
                setattr(out, name, text(value))
            else:
                setattr(out, name, num(value))
        return out


@dataclass
class ScenarioEntry:
    name: str
    description: str = ""
    kind: str = "named"
    run_dir: str | None = None
    duration_s: float | None = None
    passed: bool | None = None
    results: dict[str, ResultEntry] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    replay: str | None = None
    #: None only in a certificate written before outcomes existed; see :attr:`effective_outcome`.
    outcome: Outcome | None = None
    #: Why the outcome is what it is, when it is not a plain pass (inconclusive, flaky).
    reasons: list[str] = field(default_factory=list)
    #: The other runs of this scenario in the same certification: an inconclusive scenario's
    #: first run (``run_dir`` is its rerun), a flaky plan's passing rerun (``run_dir`` failed).
    earlier_runs: list[str] = field(default_factory=list)
    #: How the clients recovered (None: not measured, e.g. a summary of generated plans).
    recovery: RecoveryFigures | None = None

    @property
    def effective_outcome(self) -> Outcome:
        if self.outcome is not None:
            return self.outcome
        if self.passed is False or any(r.status == FAIL for r in self.results.values()):
            return FAILED
        return PASSED if self.passed else INCONCLUSIVE

    @property
    def failing(self) -> bool:
        """Failed, or flaky (it failed once): either rejects the build."""
        return self.effective_outcome in (FAILED, FLAKY) or any(r.status == FAIL for r in self.results.values())

    @property
    def first_violation(self) -> str | None:
        """The first violation's message, in words: what a console line names."""
        for result in self.results.values():
            if result.status == FAIL and result.violations:
                return result.violations[0].message
        return None

    def status(self, invariant: str) -> Status | None:
        result = self.results.get(invariant)
        return result.status if result is not None else None

    def note(self, invariant: str) -> str:
        result = self.results.get(invariant)
        return result.note if result is not None else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "run_dir": self.run_dir,
            "duration_s": self.duration_s,
            "passed": self.passed,
            "results": {k: r.to_json() for k, r in self.results.items()},
            "notes": self.notes,
            "replay": self.replay,
            # Only what is known: an older certificate read and written back stays as it was.
            **({"outcome": self.outcome} if self.outcome is not None else {}),
            **({"reasons": self.reasons} if self.reasons else {}),
            **({"earlier_runs": self.earlier_runs} if self.earlier_runs else {}),
            **({"recovery": self.recovery.to_json()} if self.recovery is not None else {}),
        }

    @classmethod
    def from_json(cls, raw: Any) -> ScenarioEntry:
        m = mapping(raw)
        passed = m.get("passed")
        return cls(
            name=str(m.get("name", "?")),
            description=str(m.get("description") or ""),
            kind=str(m.get("kind") or ""),
            run_dir=text(m.get("run_dir")) or None,
            duration_s=num(m.get("duration_s")),
            passed=passed if isinstance(passed, bool) else None,
            results={str(k): ResultEntry.from_json(v, str(k)) for k, v in mapping(m.get("results")).items()},
            notes=[str(n) for n in listing(m.get("notes"))],
            replay=text(m.get("replay")) or None,
            outcome=outcome_of(m.get("outcome")),
            reasons=[str(r) for r in listing(m.get("reasons"))],
            earlier_runs=[str(r) for r in listing(m.get("earlier_runs"))],
            recovery=RecoveryFigures.from_json(m["recovery"]) if isinstance(m.get("recovery"), dict) else None,
        )


#: certificate.json's verdicts and the exit code each gives (docs/verdicts.md).
CERTIFIED, REJECTED, ERROR, REFUSED, UNDECIDED = "certified", "rejected", "error", "refused", "inconclusive"
#: A certification stopped by SIGINT/SIGTERM: a partial report, never certified.
INTERRUPTED = "interrupted"
#: An interrupted certify exits 128 + the signal's number, as a shell reports a process killed by
#: it (130 for SIGINT, 143 for SIGTERM): CI treats it as aborted, not as a verdict on the build.
EXIT_CODES = {CERTIFIED: 0, REJECTED: 1, ERROR: 2, REFUSED: 2, UNDECIDED: 3, INTERRUPTED: 130}
#: certificate.json's ``interrupted`` section: which signal, and during what.
INTERRUPTED_KEY = "interrupted"


def interrupted_exit_code(signum: int) -> int:
    return 128 + signum


def certificate_verdict(entries: Iterable[ScenarioEntry]) -> str:
    """certified only if every scenario passed; any failure (or flaky plan) rejects; otherwise an
    inconclusive scenario leaves the build undecided. No scenario at all certifies nothing."""
    outcome = merge_outcomes(e.effective_outcome for e in entries)
    return {PASSED: CERTIFIED, FAILED: REJECTED, FLAKY: REJECTED, INCONCLUSIVE: UNDECIDED}[outcome]


@dataclass
class Certificate:
    """``certificate.json``: the machine-readable record of one certification."""

    verdict: str = "error"
    error: str | None = None
    build: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    started: str | None = None
    duration_s: float | None = None
    harness: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    invariants: list[str] = field(default_factory=list)
    scenarios: list[ScenarioEntry] = field(default_factory=list)
    #: Anything else a certificate carried; written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS = (
        "verdict",
        "error",
        "build",
        "profile",
        "started",
        "duration_s",
        "harness",
        "machine",
        "invariants",
        "scenarios",
    )

    @property
    def command(self) -> str | None:
        return text(self.build.get("command"))

    @property
    def capabilities(self) -> dict[str, Any]:
        return mapping(self.build.get("capabilities"))

    def all_invariants(self) -> list[str]:
        """The listed invariants, then any a scenario reports that the list lacks: it must still
        appear in the report, not vanish."""
        out = list(self.invariants)
        for s in self.scenarios:
            out.extend(k for k in s.results if k not in out)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "verdict": self.verdict,
            "error": self.error,
            "build": self.build,
            "profile": self.profile,
            "started": self.started,
            "duration_s": self.duration_s,
            "harness": self.harness,
            "machine": self.machine,
            "invariants": self.invariants,
            "scenarios": [s.to_json() for s in self.scenarios],
        }

    @classmethod
    def from_json(cls, raw: Any) -> Certificate:
        m = mapping(raw)
        listed = m.get("invariants")
        return cls(
            verdict=str(m.get("verdict") or "error"),
            error=text(m.get("error")) or None,
            build=mapping(m.get("build")),
            profile=text(m.get("profile")),
            started=text(m.get("started")) or None,
            duration_s=num(m.get("duration_s")),
            harness=mapping(m.get("harness")),
            machine=mapping(m.get("machine")),
            invariants=[str(i) for i in listed] if isinstance(listed, list) else [],
            scenarios=[ScenarioEntry.from_json(s) for s in listing(m.get("scenarios")) if isinstance(s, dict)],
            extra={k: v for k, v in m.items() if k not in cls._FIELDS},
        )
