"""The nemesis: applies and heals faults on a live cluster, and records each in the history."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from harness.cluster import Cluster
from harness.faults import Fault
from harness.history import HistoryWriter

_STREAMS = {"both": ("upstream", "downstream"), "upstream": ("upstream",), "downstream": ("downstream",)}


@dataclass
class ActiveFault:
    fault_id: str
    fault: Fault
    toxics: tuple[str, ...] = ()


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

    def apply(self, fault: Fault) -> ActiveFault:
        active = ActiveFault(fault_id=f"f{next(self._ids)}", fault=fault)
        self._record("invoke", "apply", active)
        try:
            active.toxics, outcome = self._apply(fault, active.fault_id)
        except Exception as exc:
            self._record("fail", "apply", active, error=f"{type(exc).__name__}: {exc}")
            raise
        self._record("ok", "apply", active, **outcome)
        # A restart is over once applied; there is nothing to heal.
        if fault.kind != "restart":
            self.active[active.fault_id] = active
        return active

    def heal(self, fault_id: str) -> None:
        active = self.active.pop(fault_id, None)
        if active is None:
            return
        self._record("invoke", "heal", active)
        try:
            self._heal(active)
        except Exception as exc:
            self._record("fail", "heal", active, error=f"{type(exc).__name__}: {exc}")
            raise
        self._record("ok", "heal", active)

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

    # -- the vocabulary -----------------------------------------------------------------------
    def _apply(self, fault: Fault, fault_id: str) -> tuple[tuple[str, ...], dict[str, Any]]:
        """Applies a fault; returns the toxics it added and what is worth recording about it."""
        c = self.cluster
        p = fault.params
        if fault.is_process_fault:
            proc = c.process(fault.target)
            outcome: dict[str, Any] = {}
            if fault.kind == "kill":
                proc.kill()
            elif fault.kind == "terminate":
                # How a process answers SIGTERM is evidence (the contract wants exit 0 after 1001s).
                outcome["exit_code"] = proc.terminate()
            elif fault.kind == "pause":
                proc.pause()
            elif fault.kind == "restart":
                outcome["exit_code"] = proc.restart(
                    graceful=bool(p.get("graceful")), ready_timeout=c.spec.ready_timeout_s
                )
            return (), outcome
        assert c.toxiproxy is not None
        proxy = c.proxy_name(fault.target)
        if fault.kind == "down":
            c.toxiproxy.set_enabled(proxy, False)
            return (), {}
        toxic_type, attributes, streams = self._toxic(fault)
        names = []
        for stream in streams:
            name = f"{fault_id}_{fault.kind}_{stream}"
            c.toxiproxy.add_toxic(proxy, name=name, type=toxic_type, stream=stream, attributes=attributes)
            names.append(name)
        return tuple(names), {}

    @staticmethod
    def _toxic(fault: Fault) -> tuple[str, dict[str, Any], tuple[str, ...]]:
        p = fault.params
        streams = _STREAMS[p.get("stream", "both")]
        if fault.kind == "latency":
            return "latency", {"latency": p["latency_ms"], "jitter": p["jitter_ms"]}, streams
        if fault.kind == "bandwidth":
            return "bandwidth", {"rate": p["rate_kbps"]}, streams
        if fault.kind == "partition":
            # Toxiproxy's blackhole: timeout 0 drops everything and never closes.
            return "timeout", {"timeout": 0}, _STREAMS["both"]
        if fault.kind == "reset_peer":
            return "reset_peer", {"timeout": p["timeout_ms"]}, streams
        if fault.kind == "slicer":
            attrs = {"average_size": p["average_size"], "size_variation": p["size_variation"], "delay": p["delay_us"]}
            return "slicer", attrs, streams
        if fault.kind == "limit_data":
            return "limit_data", {"bytes": p["bytes"]}, streams
        raise ValueError(f"no toxic for fault kind {fault.kind!r}")

    def _heal(self, active: ActiveFault) -> None:
        c = self.cluster
        fault = active.fault
        if fault.is_process_fault:
            proc = c.process(fault.target)
            if fault.kind == "pause":
                proc.resume()
            elif not proc.running:
                proc.start()
                proc.wait_ready(c.spec.ready_timeout_s)
            return
        assert c.toxiproxy is not None
        proxy = c.proxy_name(fault.target)
        if fault.kind == "down":
            c.toxiproxy.set_enabled(proxy, True)
            return
        present = set(c.toxiproxy.toxics(proxy))
        for name in active.toxics:
            if name in present:
                c.toxiproxy.remove_toxic(proxy, name)
