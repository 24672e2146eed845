"""The fault vocabulary, as data.

A fault is (kind, target, params). It is pure data so scenarios can be generated, shrunk, saved
and replayed; :mod:`harness.nemesis` is what applies and heals one against a live cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROCESS_TARGETS = ("primary", "secondary", "balancer")
LINK_TARGETS = ("lb", "primary", "secondary")
STREAMS = ("upstream", "downstream", "both")

# kind -> (targets it applies to, {param: (type, default, minimum)})
_ParamSpec = dict[str, tuple[type, Any, float | None]]
FAULT_KINDS: dict[str, tuple[tuple[str, ...], _ParamSpec]] = {
    # Process faults: on a backend or the balancer under test.
    "kill": (PROCESS_TARGETS, {}),
    "terminate": (PROCESS_TARGETS, {}),
    "pause": (PROCESS_TARGETS, {}),
    "restart": (PROCESS_TARGETS, {"graceful": (bool, False, None)}),
    # Link faults: Toxiproxy toxics on the proxy in front of the target.
    "latency": (
        LINK_TARGETS,
        {"latency_ms": (int, 200, 0), "jitter_ms": (int, 0, 0), "stream": (str, "both", None)},
    ),
    "bandwidth": (LINK_TARGETS, {"rate_kbps": (int, 64, 1), "stream": (str, "downstream", None)}),
    "partition": (LINK_TARGETS, {}),
    "reset_peer": (LINK_TARGETS, {"timeout_ms": (int, 0, 0), "stream": (str, "upstream", None)}),
    "down": (LINK_TARGETS, {}),
    "slicer": (
        LINK_TARGETS,
        {
            "average_size": (int, 8, 1),
            "size_variation": (int, 4, 0),
            "delay_us": (int, 100, 0),
            "stream": (str, "both", None),
        },
    ),
    "limit_data": (LINK_TARGETS, {"bytes": (int, 2048, 0), "stream": (str, "downstream", None)}),
}
PROCESS_KINDS = ("kill", "terminate", "pause", "restart")
LINK_KINDS = tuple(k for k in FAULT_KINDS if k not in PROCESS_KINDS)


class FaultError(ValueError):
    """A fault description that cannot be applied; the message names the field."""


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_process_fault(self) -> bool:
        return self.kind in PROCESS_KINDS

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "fault") -> Fault:
        if not isinstance(data, dict):
            raise FaultError(f"{where}: expected an object, got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in FAULT_KINDS:
            raise FaultError(f"{where}.kind: unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")
        targets, spec = FAULT_KINDS[kind]
        target = data.get("target")
        if target not in targets:
            raise FaultError(f"{where}.target: {kind} cannot target {target!r} (it targets: {', '.join(targets)})")
        raw = data.get("params", {})
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise FaultError(f"{where}.params: expected an object")
        params: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in spec:
                known = ", ".join(spec) or "none"
                raise FaultError(f"{where}.params.{name}: unknown parameter for {kind} (known: {known})")
            typ, _default, minimum = spec[name]
            if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise FaultError(f"{where}.params.{name}: expected an integer, got {value!r}")
            if typ is bool and not isinstance(value, bool):
                raise FaultError(f"{where}.params.{name}: expected true or false, got {value!r}")
            if typ is str and not isinstance(value, str):
                raise FaultError(f"{where}.params.{name}: expected a string, got {value!r}")
            if minimum is not None and value < minimum:
                raise FaultError(f"{where}.params.{name}: must be >= {minimum:g}, got {value!r}")
            if name == "stream" and value not in STREAMS:
                raise FaultError(f"{where}.params.stream: must be one of {', '.join(STREAMS)}")
            params[name] = value
        for name, (_typ, default, _min) in spec.items():
            params.setdefault(name, default)
        if kind == "slicer" and params["size_variation"] >= params["average_size"]:
            raise FaultError(f"{where}.params.size_variation: must be smaller than average_size")
        return cls(kind=kind, target=target, params=params)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind}({self.target}{', ' + shown if shown else ''})"


def fault(kind: str, target: str, **params: Any) -> Fault:
    """Builds and validates a fault: ``fault("latency", "primary", latency_ms=300)``."""
    return Fault.from_dict({"kind": kind, "target": target, "params": params})
