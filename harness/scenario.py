"""The scenario model: a whole chaos run, as JSON-serialisable data.

A run has six phases: warm-up, faults, heal, a liveness deadline, quiesce, judge. The schema is
documented in docs/writing-scenarios.md; ``Scenario.from_dict`` names the field of any mistake.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.checkers import NAMES as CHECKER_NAMES
from harness.checkers.recovery import RECOVERY_GOALS
from harness.faults import Fault, FaultError
from harness.probes import PROBE_KINDS
from harness.reconnect import BACKOFF, POLICIES, PolicyError, ReconnectPolicy
from harness.recovery import GoalError, RecoveryGoals

SCHEMA_VERSION = 1

#: Every invariant a scenario may ask for, in the order the checkers judge them.
INVARIANTS: tuple[str, ...] = tuple(CHECKER_NAMES)


class ScenarioError(ValueError):
    """A scenario that is not valid; the message names the field."""


def _check_fields(obj: Any, where: str) -> None:
    """The rules every numeric field follows, however the scenario was built (Python or JSON):
    the type of its default, finite, and not negative."""
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        default = getattr(type(obj), name, None)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ScenarioError(f"{where}.{name}: expected true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ScenarioError(f"{where}.{name}: expected an integer, got {value!r}")
            if value < 0:
                raise ScenarioError(f"{where}.{name}: must be >= 0, got {value!r}")
        elif isinstance(default, float):
            _number(value, f"{where}.{name}", minimum=0.0)


#: See Scenario.needs_machine_alone.
MACHINE_ALONE_CLIENTS = 1000


@dataclass(frozen=True)
class Workload:
    clients: int = 4
    rate_hz: float = 10.0
    #: Seconds over which the clients' first connections are spread (0 = all at once).
    connect_spread_s: float = 0.0
    #: Fresh clients started after the heal, to show that new sessions work again.
    probe_clients: int = 2
    #: How clients come back after a drop or a failed attempt (harness.reconnect): "immediate", or
    #: "backoff" (base doubling up to the cap, each wait jittered down by up to `backoff_jitter` of
    #: itself, from a generator seeded by `reconnect_seed` and the client id, so runs replay).
    reconnect: str = BACKOFF
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 1.0
    backoff_jitter: float = 0.0
    reconnect_seed: int = 0
    #: How long a client waits for its opening handshake before it gives up and tries again: a
    #: herd queues its handshakes, and one abandoned late is work the build did for nothing.
    open_timeout_s: float = 5.0
    #: Whether clients offer permessage-deflate (websockets' default). A frame fault that drops or
    #: duplicates a data frame needs it off: on a compressed stream with context takeover the loss
    #: desynchronises the receiver's decompressor, a fault of the fault rather than the balancer's
    #: (docs/toxiproxy-extensions.md). The balancer's upstream leg mirrors the client's choice.
    compression: bool = True
    #: Whether a client answers a ``gap`` (expected M) by re-sending its unacknowledged moves from
    #: M, once per M. Off, a move lost on the way leaves the backend answering ``gap`` to every later
    #: move until the next ``welcome``; on, the game recovers from the loss end to end.
    resend_on_gap: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.reconnect, str):
            raise ScenarioError(f"workload.reconnect: expected one of {', '.join(POLICIES)}, got {self.reconnect!r}")
        _check_fields(self, "workload")
        if self.clients < 1:
            raise ScenarioError(f"workload.clients: must be >= 1, got {self.clients!r}")
        if self.rate_hz <= 0:
            raise ScenarioError(f"workload.rate_hz: must be > 0, got {self.rate_hz!r}")
        if self.open_timeout_s <= 0:
            raise ScenarioError(f"workload.open_timeout_s: must be > 0, got {self.open_timeout_s!r}")
        try:
            _ = self.reconnect_policy
        except PolicyError as exc:
            raise ScenarioError(f"workload.{_POLICY_FIELDS[exc.field]}: {exc.problem}") from None

    @property
    def reconnect_policy(self) -> ReconnectPolicy:
        return ReconnectPolicy(
            kind=self.reconnect,
            base_s=self.backoff_base_s,
            cap_s=self.backoff_cap_s,
            jitter=self.backoff_jitter,
            seed=self.reconnect_seed,
        )


def workload_for(steps: Sequence[Step], base: Workload | None = None) -> Workload:
    """``base`` (the default workload) with the switches the steps' kinds need to be fair
    (``FaultKind.workload_needs``), as a generated plan must set them."""
    needs: dict[str, Any] = {
        name: value for step in steps for name, (value, _) in step.fault.spec.workload_needs.items()
    }
    base = base or Workload()
    return replace(base, **needs) if needs else base


#: ReconnectPolicy's fields as the workload names them.
_POLICY_FIELDS = {
    "kind": "reconnect",
    "base_s": "backoff_base_s",
    "cap_s": "backoff_cap_s",
    "jitter": "backoff_jitter",
    "seed": "reconnect_seed",
}


@dataclass(frozen=True)
class Limits:
    """The failover limits given to the build; harness runs keep them short."""

    max_attempts: int = 3
    window_s: float = 6.0
    min_interval_s: float = 0.5
    #: Largest client message in bytes (contract `max_size`); 0: not given, the build's own default.
    max_size: int = 0
    #: Open client connections (contract `max_connections`); 0: not given, the build's own default.
    max_connections: int = 0
    #: How long a SIGHUP drain lets live sessions go on (contract `drain_timeout_s`); always sent.
    drain_timeout_s: float = 2.0
    #: Opening-handshake timeout in seconds (contract `open_timeout_s`); 0: not given, the build's
    #: own default. The upgrade-fault scenarios set it, so `upgrade_failover` knows the bound.
    open_timeout_s: float = 0.0

    def __post_init__(self) -> None:
        _check_fields(self, "limits")


@dataclass(frozen=True)
class Keepalive:
    ping_interval_s: float = 0.5
    ping_timeout_s: float = 0.5

    def __post_init__(self) -> None:
        _check_fields(self, "keepalive")


@dataclass(frozen=True)
class Step:
    """Apply ``fault`` at ``at_s`` seconds into the fault phase; heal it after ``duration_s``.

    ``duration_s`` None leaves the fault in place until the heal phase.
    """

    at_s: float
    fault: Fault
    duration_s: float | None = None

    def __post_init__(self) -> None:
        _number(self.at_s, "step.at_s", minimum=0.0)
        if self.duration_s is not None:
            _number(self.duration_s, "step.duration_s", minimum=0.0)
        if not isinstance(self.fault, Fault):
            raise ScenarioError(f"step.fault: expected a Fault, got {type(self.fault).__name__}")


@dataclass(frozen=True)
class Phases:
    warmup_s: float = 1.0
    #: Minimum length of the fault phase; it also lasts until every step has been applied.
    faults_s: float = 0.0
    #: The fault phase ends, ``faults_s`` at the latest, as soon as every client has had a move
    #: acknowledged by another backend than the one the steps fault, after the last was applied:
    #: the failover the phase waits for has happened. A build that never fails over still gets
    #: the whole ``faults_s``. Only for steps that all fault one backend and have no duration.
    faults_end_on_failover: bool = False
    #: After the last heal, how long clients have to make progress again.
    deadline_s: float = 10.0
    #: How long cleanup may take once clients leave.
    quiesce_s: float = 5.0

    def __post_init__(self) -> None:
        _check_fields(self, "phases")


@dataclass(frozen=True)
class Expect:
    """What a correct build does under this scenario."""

    #: Close codes a client may see from the remote side (e.g. 1013 when failover is refused).
    close_codes: tuple[int, ...] = ()
    #: Longest a connected client with outstanding moves may wait for an acknowledgement.
    failover_deadline_s: float = 10.0
    #: After the heal, every client must play again within this.
    recovery_deadline_s: float = 10.0
    #: Some backend is reachable throughout, so every 1013 a client sees must be a refusal the
    #: failover limits call for (`refusals_justified` judges the clients' side only then).
    backends_reachable: bool = False
    #: Upper bounds on the recovery figures (harness.recovery), judged as `recovery_goals`.
    recovery: RecoveryGoals = field(default_factory=RecoveryGoals)

    def __post_init__(self) -> None:
        if not isinstance(self.recovery, RecoveryGoals):
            raise ScenarioError(f"expect.recovery: expected RecoveryGoals, got {type(self.recovery).__name__}")
        codes = self.close_codes
        if not isinstance(codes, tuple) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1000 <= c <= 4999 for c in codes
        ):
            raise ScenarioError(f"expect.close_codes: expected close codes (1000-4999), got {codes!r}")
        _check_fields(self, "expect")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    workload: Workload = field(default_factory=Workload)
    limits: Limits = field(default_factory=Limits)
    keepalive: Keepalive = field(default_factory=Keepalive)
    steps: tuple[Step, ...] = ()
    phases: Phases = field(default_factory=Phases)
    expect: Expect = field(default_factory=Expect)
    #: Invariants judged; default all. A scenario may drop one that does not apply to it.
    invariants: tuple[str, ...] = INVARIANTS
    tags: tuple[str, ...] = ()
    seed: int | None = None
    #: Limit probes run at the start of the fault phase (harness.probes.PROBE_KINDS).
    probes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The same rules as a JSON scenario's (from_dict builds through here), so a scenario built
        # in Python cannot run with what a JSON file would be refused for.
        if not isinstance(self.name, str) or not self.name.strip():
            raise ScenarioError("name: required, a non-empty string")
        if not isinstance(self.description, str):
            raise ScenarioError("description: expected a string")
        for key, cls in (("workload", Workload), ("limits", Limits), ("keepalive", Keepalive),
                         ("phases", Phases), ("expect", Expect)):  # fmt: skip
            if not isinstance(getattr(self, key), cls):
                raise ScenarioError(f"{key}: expected a {cls.__name__}, got {type(getattr(self, key)).__name__}")
        if not isinstance(self.steps, tuple) or not all(isinstance(st, Step) for st in self.steps):
            raise ScenarioError("steps: expected a tuple of Step")
        if not isinstance(self.invariants, tuple) or not all(isinstance(x, str) for x in self.invariants):
            raise ScenarioError("invariants: expected a tuple of names")
        for inv in self.invariants:
            if inv not in INVARIANTS:
                raise ScenarioError(f"invariants: unknown invariant {inv!r} (known: {', '.join(INVARIANTS)})")
        if self.expect.recovery.set_goals() and RECOVERY_GOALS not in self.invariants:
            # Goals that nothing judges would read as if they held.
            raise ScenarioError(
                f"expect.recovery sets goals, but invariants leaves out {RECOVERY_GOALS!r}, which judges them"
            )
        for i, step in enumerate(self.steps):
            for field_name, (needed, why) in step.fault.spec.workload_needs.items():
                if getattr(self.workload, field_name) != needed:
                    raise ScenarioError(
                        f"workload.{field_name}: steps[{i}] ({step.fault.kind}) needs "
                        f"{field_name} {str(needed).lower()}: {why}"
                    )
        if self.phases.faults_end_on_failover:
            targets = {st.fault.target for st in self.steps}
            if len(targets) != 1 or not targets <= {"primary", "secondary"} or any(st.duration_s for st in self.steps):
                raise ScenarioError(
                    "phases.faults_end_on_failover: needs steps that all fault one backend (primary or "
                    f"secondary) without a duration_s; got targets {sorted(targets) or 'none'}"
                )
        if not isinstance(self.tags, tuple) or not all(isinstance(x, str) for x in self.tags):
            raise ScenarioError("tags: expected a tuple of strings")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ScenarioError("seed: expected an integer or null")
        if not isinstance(self.probes, tuple) or not all(isinstance(x, str) for x in self.probes):
            raise ScenarioError("probes: expected a tuple of names")
        for probe in self.probes:
            if probe not in PROBE_KINDS:
                raise ScenarioError(f"probes: unknown probe {probe!r} (known: {', '.join(PROBE_KINDS)})")
            if probe in ("max_connections", "max_size") and getattr(self.limits, probe) < 1:
                raise ScenarioError(f"probes: {probe} needs limits.{probe} >= 1 (the limit it probes)")

    # -- derived ------------------------------------------------------------------------------
    @property
    def needs_machine_alone(self) -> bool:
        """A scenario of MACHINE_ALONE_CLIENTS clients or more (a herd, a mass failover) loads a
        2-core machine by itself: beside other scenarios its swarm starves (slowness x4 and more in
        flake-check runs with four lanes) and its timing can only be set aside. Certify's lanes run
        it with no other scenario under way."""
        return self.workload.clients >= MACHINE_ALONE_CLIENTS

    @property
    def fault_phase_s(self) -> float:
        ends = [s.at_s + (s.duration_s or 0.0) for s in self.steps]
        return max([self.phases.faults_s, *ends]) if ends else self.phases.faults_s

    def with_(self, **changes: Any) -> Scenario:
        return replace(self, **changes)

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "description": self.description,
            "workload": asdict(self.workload),
            "limits": asdict(self.limits),
            "keepalive": asdict(self.keepalive),
            "steps": [{"at_s": s.at_s, "fault": s.fault.to_dict(), "duration_s": s.duration_s} for s in self.steps],
            "phases": asdict(self.phases),
            "expect": self._expect_dict(),
            "invariants": list(self.invariants),
            "tags": list(self.tags),
            "seed": self.seed,
            "probes": list(self.probes),
        }

    def _expect_dict(self) -> dict[str, Any]:
        out = {**asdict(self.expect), "close_codes": list(self.expect.close_codes)}
        # Only goals that are set, and no key at all without one: a scenario without goals
        # serialises as it did before goals existed.
        goals = self.expect.recovery.to_dict()
        if goals:
            out["recovery"] = goals
        else:
            del out["recovery"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> Scenario:
        if not isinstance(data, dict):
            raise ScenarioError(f"scenario: expected a JSON object, got {type(data).__name__}")
        _no_unknown_keys(data, TOP_LEVEL_KEYS, "scenario")
        schema = data.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise ScenarioError(f"schema: unsupported version {schema!r} (this harness reads {SCHEMA_VERSION})")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ScenarioError("name: required, a non-empty string")
        steps_raw = data.get("steps", [])
        if not isinstance(steps_raw, list):
            raise ScenarioError("steps: expected a list")
        steps: list[Step] = []
        for i, raw in enumerate(steps_raw):
            where = f"steps[{i}]"
            if not isinstance(raw, dict):
                raise ScenarioError(f"{where}: expected an object")
            _no_unknown_keys(raw, STEP_KEYS, where)
            try:
                fault = Fault.from_dict(raw.get("fault"), where=f"{where}.fault")
            except FaultError as exc:
                raise ScenarioError(str(exc)) from None
            at = _number(raw.get("at_s", 0.0), f"{where}.at_s", minimum=0.0)
            dur_raw = raw.get("duration_s")
            dur = None if dur_raw is None else _number(dur_raw, f"{where}.duration_s", minimum=0.0)
            steps.append(Step(at_s=at, fault=fault, duration_s=dur))
        steps.sort(key=lambda s: s.at_s)
        invariants = data.get("invariants", list(INVARIANTS))
        if not isinstance(invariants, list) or not all(isinstance(x, str) for x in invariants):
            raise ScenarioError("invariants: expected a list of names")
        for inv in invariants:
            if inv not in INVARIANTS:
                raise ScenarioError(f"invariants: unknown invariant {inv!r} (known: {', '.join(INVARIANTS)})")
        tags = data.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
            raise ScenarioError("tags: expected a list of strings")
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ScenarioError("seed: expected an integer or null")
        probes = data.get("probes", [])
        if not isinstance(probes, list) or not all(isinstance(x, str) for x in probes):
            raise ScenarioError("probes: expected a list of names")
        for probe in probes:
            if probe not in PROBE_KINDS:
                raise ScenarioError(f"probes: unknown probe {probe!r} (known: {', '.join(PROBE_KINDS)})")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise ScenarioError("description: expected a string")
        expect_raw = _section(data, "expect")
        codes = expect_raw.pop("close_codes", [])
        if not isinstance(codes, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1000 <= c <= 4999 for c in codes
        ):
            raise ScenarioError("expect.close_codes: expected a list of close codes (1000-4999)")
        try:
            goals = RecoveryGoals.from_dict(expect_raw.pop("recovery", None))
        except GoalError as exc:
            raise ScenarioError(str(exc)) from None
        expect = _build(Expect, expect_raw, "expect", extra={"close_codes": tuple(codes), "recovery": goals})
        workload = _build(Workload, _section(data, "workload"), "workload")
        limits = _build(Limits, _section(data, "limits"), "limits")
        return cls(
            name=name,
            description=description,
            workload=workload,
            limits=limits,
            keepalive=_build(Keepalive, _section(data, "keepalive"), "keepalive"),
            steps=tuple(steps),
            phases=_build(Phases, _section(data, "phases"), "phases"),
            expect=expect,
            invariants=tuple(invariants),
            tags=tuple(tags),
            seed=seed,
            probes=tuple(probes),
        )

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{p}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ScenarioError(f"{p}: not UTF-8 text") from None
        try:
            return cls.from_json(text)
        except ScenarioError as exc:
            raise ScenarioError(f"{p}: {exc}") from None

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_json() + "\n", encoding="utf-8")
        return p


TOP_LEVEL_KEYS = frozenset(
    {"schema", "name", "description", "workload", "limits", "keepalive", "steps", "phases", "expect",
     "invariants", "tags", "seed", "probes"}
)  # fmt: skip
STEP_KEYS = frozenset({"at_s", "fault", "duration_s"})


def _no_unknown_keys(data: dict[str, Any], known: frozenset[str], where: str) -> None:
    # A misspelt key ("stepz") silently dropped would run a different scenario than was written.
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    raw = data.get(key, {})
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{key}: expected an object")
    return dict(raw)


def _number(value: Any, where: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(f"{where}: expected a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ScenarioError(f"{where}: must be >= {minimum:g}, got {value!r}")
    return float(value)


def _build(cls: Any, raw: dict[str, Any], where: str, extra: dict[str, Any] | None = None) -> Any:
    known = {f for f in cls.__dataclass_fields__}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ScenarioError(f"{where}.{key}: unknown field (known: {', '.join(sorted(known))})")
        default = getattr(cls, key, None)
        if isinstance(default, float) and not isinstance(default, bool):
            value = _number(value, f"{where}.{key}", minimum=0.0)
        kwargs[key] = value  # the dataclass checks the rest as it is built
    kwargs.update(extra or {})
    return cls(**kwargs)
