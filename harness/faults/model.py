"""What a fault is (kind, target, params) and what a fault *kind* must say about itself.

A :class:`Fault` is pure data so scenarios can be generated, shrunk, saved and replayed. A
:class:`FaultKind` is the one home of everything the harness knows about one kind: its targets and
parameter schema, how to apply and heal it through the cluster, how to draw its parameters, whether
it can end connections and how soon a correct build notices it. The concrete kinds live in
:mod:`harness.faults.kinds`; everything else (nemesis, scenario validation, strategies,
expectations) reads them through :data:`KINDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from hypothesis import strategies as st

from harness.toxiproxy.extensions import TRIGGER_EVENTS, Aim, ExtensionError, Trigger

if TYPE_CHECKING:
    from harness.cluster import Cluster
    from harness.scenario import Keepalive
    from harness.strategies import Bounds, Intensity

PROCESS_TARGETS = ("primary", "secondary", "balancer")
LINK_TARGETS = ("lb", "primary", "secondary")
STREAMS = ("upstream", "downstream", "both")
#: Which Toxiproxy streams a ``stream`` parameter puts a toxic on.
STREAM_DIRECTIONS: dict[str, tuple[str, ...]] = {
    "both": ("upstream", "downstream"),
    "upstream": ("upstream",),
    "downstream": ("downstream",),
}

#: The balancer's close timeout on its upstream leg (the reference's default; the contract's 1 s).
CLOSE_TIMEOUT_S = 1.0


class FaultError(ValueError):
    """A fault description that cannot be applied; the message names the field."""


#: How long a step triggered by failovers waits for them when the scenario does not say.
FAILOVER_WAIT_S = 10.0


@dataclass(frozen=True)
class FailoverTrigger:
    """Apply the step only once sessions have failed over ``count`` times.

    Judged by the harness, not the proxy (the proxy cannot see a failover): from the step's
    ``at_s`` the runner watches the clients' progress (:class:`harness.analysis.Progress`) until
    one client, or each of ``clients``, has failed over ``count`` times, for at most ``within_s``;
    a trigger that never fires leaves the step unapplied, and the run says so.
    """

    count: int
    clients: tuple[str, ...] | None = None
    within_s: float = FAILOVER_WAIT_S

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"after": "failovers", "failovers": self.count}
        if self.clients is not None:
            out["clients"] = list(self.clients)
        out["within_s"] = self.within_s
        return out

    def describe(self) -> str:
        who = "a client has" if self.clients is None else f"{', '.join(self.clients)} have each"
        return f"once {who} failed over {self.count} time(s) (waiting up to {self.within_s:g} s)"

    @classmethod
    def from_json(cls, value: dict[str, Any], where: str) -> FailoverTrigger:
        unknown = sorted(set(value) - {"after", "failovers", "clients", "within_s"})
        if unknown:
            raise FaultError(f"{where}.{unknown[0]}: unknown field (known: after, failovers, clients, within_s)")
        count = value.get("failovers")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise FaultError(f"{where}.failovers: expected an integer >= 1 (how many failovers), got {count!r}")
        clients = value.get("clients")
        if clients is not None:
            if not isinstance(clients, list) or not clients:
                raise FaultError(f"{where}.clients: expected a non-empty list of client ids, got {clients!r}")
            for index, client in enumerate(clients):
                if not isinstance(client, str) or not client:
                    raise FaultError(f"{where}.clients[{index}]: expected a non-empty string, got {client!r}")
        within = value.get("within_s", FAILOVER_WAIT_S)
        if isinstance(within, bool) or not isinstance(within, int | float) or not 0 < within <= 600:
            raise FaultError(f"{where}.within_s: expected seconds in (0, 600], got {within!r}")
        return cls(count=count, clients=None if clients is None else tuple(clients), within_s=float(within))


@dataclass(frozen=True)
class Param:
    """One parameter of a fault kind: its type, default and the values it may take."""

    type: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    def check(self, value: Any, where: str) -> Any:
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise FaultError(f"{where}: expected an integer, got {value!r}")
        if self.type is bool and not isinstance(value, bool):
            raise FaultError(f"{where}: expected true or false, got {value!r}")
        if self.type is str and not isinstance(value, str):
            raise FaultError(f"{where}: expected a string, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise FaultError(f"{where}: must be >= {self.minimum:g}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise FaultError(f"{where}: must be <= {self.maximum:g}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise FaultError(f"{where}: must be one of {', '.join(self.choices)}")
        return value


def stream_param(default: str, choices: tuple[str, ...] = STREAMS) -> Param:
    return Param(str, default, choices=choices)


def keepalive_detect_s(keepalive: Keepalive) -> float:
    """How long a silent hop can go unnoticed: a failed keepalive, then the close handshake given up."""
    return keepalive.ping_interval_s + keepalive.ping_timeout_s + CLOSE_TIMEOUT_S


@dataclass(frozen=True)
class Applied:
    """What applying a fault left behind (the toxics to remove) and what is worth recording."""

    toxics: tuple[str, ...] = ()
    outcome: dict[str, Any] = field(default_factory=dict)


class FaultKind:
    """One kind of fault. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    #: "process" (a signal to a process) or "link" (the Toxiproxy proxy in front of a target).
    family: ClassVar[str]
    targets: ClassVar[tuple[str, ...]]
    params: ClassVar[Mapping[str, Param]] = {}
    #: False when the fault is over once applied (restart): nothing to heal, no duration.
    healable: ClassVar[bool] = True
    #: Whether applying (resp. healing) waits for a process to be ready, holding up the schedule.
    blocks_on_apply: ClassVar[bool] = False
    blocks_on_heal: ClassVar[bool] = False
    #: The process stays down from apply until the heal starts it again (kill, terminate).
    stops_process: ClassVar[bool] = False
    #: A silent blackhole: nothing is closed, and a client waiting on it waits as long as it lasts.
    blackhole: ClassVar[bool] = False
    #: Cuts a backend off entirely; the swizzle of generated plans uses these.
    swizzles: ClassVar[bool] = False
    #: Generated plans may aim it at the balancer process (never pause: a frozen proxy hangs all).
    on_balancer_in_plans: ClassVar[bool] = False
    #: Can act on some client connections only (:class:`Fault` ``aim``, ``trigger``): toxics of the
    #: embedded proxy.
    aimable: ClassVar[bool] = False
    #: Drawn in generated plans by default (fault_plans' vocabulary); kinds whose interplay with
    #: others the expectations cannot predict say False and are only drawn when asked for by name.
    generated: ClassVar[bool] = True
    #: Workload switches the kind is only fair with: field name -> (value it needs, why). A
    #: scenario with a step of this kind and another value is refused, naming the field.
    workload_needs: ClassVar[Mapping[str, tuple[bool, str]]] = {}
    #: Repeats data frames toward the backends, so a move can reach a backend more often than the
    #: client sent it: ``single_upstream`` allows one extra delivery per frame its evidence counts.
    repeats_upstream_frames: ClassVar[bool] = False

    # -- the schema ---------------------------------------------------------------------------
    def validate(self, params: dict[str, Any], where: str) -> None:
        """Checks that span parameters, after each has been checked on its own and defaulted."""

    # -- acting -------------------------------------------------------------------------------
    def invoked(self, cluster: Cluster, fault: Fault) -> dict[str, Any]:
        """Facts worth recording when the step is invoked, before it acts (a process's pid)."""
        return {}

    def apply(self, cluster: Cluster, fault: Fault, fault_id: str) -> Applied:
        raise NotImplementedError

    def heal(self, cluster: Cluster, fault: Fault, applied: Applied) -> dict[str, Any] | None:
        """Undo the fault; what it returns goes into the heal's history record (its evidence)."""
        raise NotImplementedError

    # -- generating ---------------------------------------------------------------------------
    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        """Parameters for generated plans, within ``bounds`` and ``intensity``; each shrinks to its mildest."""
        return st.just({})

    # -- what a correct build does ------------------------------------------------------------
    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        """Whether the fault can end the connections through its target (a failover or a drop)."""
        return True

    def detect_s(self, fault: Fault, keepalive: Keepalive) -> float:
        """How long after it is applied the fault can end a connection at the latest.

        ``math.inf`` means at any time while it is in place (limit_data: whenever its budget runs out).
        """
        return 0.0

    def latency_s(self, fault: Fault) -> float:
        """The worst extra round-trip time the fault adds, in seconds."""
        return 0.0

    def balancer_close_codes(self, fault: Fault) -> tuple[int, ...]:
        """Close codes clients may see from the balancer because of this fault.

        For a process fault, when it hits the balancer process; for a link fault, wherever it is
        (a client's protocol error on ``lb``: the code RFC 6455 gives it).
        """
        return ()


KINDS: dict[str, FaultKind] = {}


_K = TypeVar("_K", bound=type[FaultKind])


def register(cls: _K) -> _K:
    """Class decorator: registers one instance of a fault kind under its name."""
    if cls.name in KINDS:
        raise ValueError(f"fault kind {cls.name!r} is registered twice")
    KINDS[cls.name] = cls()
    return cls


def kind_of(name: str) -> FaultKind:
    try:
        return KINDS[name]
    except KeyError:
        raise FaultError(f"unknown fault kind {name!r} (known: {', '.join(KINDS)})") from None


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    #: Only these client connections (an extension of the embedded Toxiproxy); None: all of them.
    aim: Aim | None = None
    #: On each connection, act only after this event (an extension too); None: at once.
    trigger: Trigger | None = None
    #: Apply only once sessions have failed over (judged by the harness); None: at the step's time.
    after_failovers: FailoverTrigger | None = None

    @property
    def spec(self) -> FaultKind:
        return KINDS[self.kind]

    @property
    def is_process_fault(self) -> bool:
        return self.spec.family == "process"

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "target": self.target, "params": dict(self.params)}
        if self.aim is not None:
            out["aim"] = self.aim.to_json()
        if self.trigger is not None:
            out["trigger"] = self.trigger.to_json()
        if self.after_failovers is not None:
            out["trigger"] = self.after_failovers.to_json()
        return out

    def extensions(self) -> dict[str, Any]:
        """The embedded Toxiproxy's extension fields this fault needs on its toxics, as JSON."""
        out = {}
        if self.aim is not None:
            out["aim"] = self.aim.to_json()
        if self.trigger is not None:
            out["trigger"] = self.trigger.to_json()
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "fault") -> Fault:
        if not isinstance(data, dict):
            raise FaultError(f"{where}: expected an object, got {type(data).__name__}")
        name = data.get("kind")
        if not isinstance(name, str) or name not in KINDS:
            raise FaultError(f"{where}.kind: unknown fault kind {name!r} (known: {', '.join(KINDS)})")
        kind = KINDS[name]
        target = data.get("target")
        if target not in kind.targets:
            raise FaultError(f"{where}.target: {name} cannot target {target!r} (it targets: {', '.join(kind.targets)})")
        aim = trigger = None
        after_failovers = None
        raw_trigger = data.get("trigger")
        if isinstance(raw_trigger, dict) and raw_trigger.get("after") not in (*TRIGGER_EVENTS, "failovers"):
            events = ", ".join((*TRIGGER_EVENTS, "failovers"))
            raise FaultError(f"{where}.trigger.after: must be one of {events}, got {raw_trigger.get('after')!r}")
        if isinstance(raw_trigger, dict) and raw_trigger.get("after") == "failovers":
            # Any kind can wait for failovers: the runner holds the step back, no proxy is involved.
            after_failovers = FailoverTrigger.from_json(raw_trigger, f"{where}.trigger")
            data = {key: value for key, value in data.items() if key != "trigger"}
        for key in ("aim", "trigger"):
            if data.get(key) is not None and not kind.aimable:
                aimable = ", ".join(k for k, v in KINDS.items() if v.aimable)
                raise FaultError(f"{where}.{key}: {name} acts on no single connection (kinds that do: {aimable})")
        try:
            if data.get("aim") is not None:
                aim = Aim.from_json(data["aim"], where=f"{where}.aim")
            if data.get("trigger") is not None:
                trigger = Trigger.from_json(data["trigger"], where=f"{where}.trigger")
        except ExtensionError as exc:
            raise FaultError(str(exc)) from None
        raw = data.get("params", {})
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise FaultError(f"{where}.params: expected an object")
        params: dict[str, Any] = {}
        for pname, value in raw.items():
            if pname not in kind.params:
                known = ", ".join(kind.params) or "none"
                raise FaultError(f"{where}.params.{pname}: unknown parameter for {name} (known: {known})")
            params[pname] = kind.params[pname].check(value, f"{where}.params.{pname}")
        for pname, param in kind.params.items():
            params.setdefault(pname, param.default)
        kind.validate(params, f"{where}.params")
        return cls(kind=name, target=target, params=params, aim=aim, trigger=trigger, after_failovers=after_failovers)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        aimed = f" at {self.aim.describe()}" if self.aim is not None else ""
        triggered = f" {self.trigger.describe()}" if self.trigger is not None else ""
        if self.after_failovers is not None:
            triggered += f" {self.after_failovers.describe()}"
        return f"{self.kind}({self.target}{', ' + shown if shown else ''}){aimed}{triggered}"


def fault(kind: str, target: str, **params: Any) -> Fault:
    """Builds and validates a fault: ``fault("latency", "primary", latency_ms=300)``."""
    return Fault.from_dict({"kind": kind, "target": target, "params": params})
