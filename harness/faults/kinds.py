"""The fault vocabulary: one registered object per kind. Adding a kind is adding one object here."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from hypothesis import strategies as st

from harness.faults.model import (
    LINK_TARGETS,
    PROCESS_TARGETS,
    STREAM_DIRECTIONS,
    STREAMS,
    Applied,
    Fault,
    FaultError,
    FaultKind,
    Param,
    keepalive_detect_s,
    register,
    stream_param,
)
from harness.faults.proxy_ext import NO_COUNTERS, require, toxic_evidence
from harness.faults.proxy_ext import add_toxic as add_extended_toxic

if TYPE_CHECKING:
    from harness.cluster import Cluster
    from harness.scenario import Keepalive
    from harness.strategies import Bounds, Intensity


#: The streams a one-way fault may take: one direction, never both.
ONE_WAY = ("upstream", "downstream")


def _streams() -> st.SearchStrategy[str]:
    return st.sampled_from(STREAMS)


# -- process faults: a signal to a backend or to the balancer under test ----------------------


class ProcessKind(FaultKind):
    """A signal to a process. Its records carry the evidence: the pid signalled, how it exited,
    and the pid a heal started (a step that found no process says pid null)."""

    family = "process"
    targets = PROCESS_TARGETS
    on_balancer_in_plans = True

    def invoked(self, cluster: Cluster, fault: Fault) -> dict[str, Any]:
        proc = cluster.process(fault.target)
        return {"pid": proc.pid if proc.running else None}

    def apply(self, cluster: Cluster, fault: Fault, fault_id: str) -> Applied:
        proc = cluster.process(fault.target)
        pid = proc.pid if proc.running else None
        return Applied(outcome={"pid": pid, **self.signal(cluster, fault)})

    def signal(self, cluster: Cluster, fault: Fault) -> dict[str, Any]:
        raise NotImplementedError

    def heal(self, cluster: Cluster, fault: Fault, applied: Applied) -> dict[str, Any] | None:
        proc = cluster.process(fault.target)
        if not proc.running:
            proc.start()
            proc.wait_ready(cluster.spec.ready_timeout_s)
            return {"started_pid": proc.pid}
        return {"started_pid": None}

    def balancer_close_codes(self, fault: Fault) -> tuple[int, ...]:
        return (1006,)  # an aborted balancer drops every client without a close frame


@register
class Kill(ProcessKind):
    name = "kill"
    blocks_on_heal = True  # the heal starts the process again and waits until it is ready

    def signal(self, cluster: Cluster, fault: Fault) -> dict[str, Any]:
        return {"exit_code": cluster.process(fault.target).kill()}


@register
class Terminate(ProcessKind):
    name = "terminate"
    blocks_on_heal = True

    def signal(self, cluster: Cluster, fault: Fault) -> dict[str, Any]:
        # How a process answers SIGTERM is evidence (the contract wants exit 0 after 1001s).
        return {"exit_code": cluster.process(fault.target).terminate()}

    def balancer_close_codes(self, fault: Fault) -> tuple[int, ...]:
        # Graceful says 1001 or 1012, aborted drops with 1006, sessions failing meanwhile may say 1011.
        return (1001, 1006, 1011, 1012)


@register
class Pause(ProcessKind):
    name = "pause"
    blackhole = True
    on_balancer_in_plans = False  # a paused balancer hangs every client: expected, not a finding

    def signal(self, cluster: Cluster, fault: Fault) -> dict[str, Any]:
        cluster.process(fault.target).pause()
        return {}

    def heal(self, cluster: Cluster, fault: Fault, applied: Applied) -> dict[str, Any] | None:
        cluster.process(fault.target).resume()
        return None

    def detect_s(self, fault: Fault, keepalive: Keepalive) -> float:
        return keepalive_detect_s(keepalive)


@register
class Restart(ProcessKind):
    name = "restart"
    params: ClassVar = {"graceful": Param(bool, False)}
    healable = False  # over once applied: the process is back
    blocks_on_apply = True

    def signal(self, cluster: Cluster, fault: Fault) -> dict[str, Any]:
        proc = cluster.process(fault.target)
        graceful = bool(fault.params["graceful"])
        code = proc.restart(graceful=graceful, ready_timeout=cluster.spec.ready_timeout_s)
        return {"exit_code": code, "started_pid": proc.pid}

    def heal(self, cluster: Cluster, fault: Fault, applied: Applied) -> dict[str, Any] | None:
        return None

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.builds(lambda graceful: {"graceful": graceful}, st.booleans())

    def balancer_close_codes(self, fault: Fault) -> tuple[int, ...]:
        return (1001, 1006, 1011, 1012)


# -- link faults: the Toxiproxy proxy in front of the target ----------------------------------


class LinkKind(FaultKind):
    family = "link"
    targets = LINK_TARGETS


class ToxicKind(LinkKind):
    """A link fault made of one Toxiproxy toxic per stream it is on.

    An aimed or triggered fault sends the toxic's ``aim`` / ``trigger`` extension (refused up front
    by a server without it).
    The heal first asks the embedded proxy what each toxic did and records it as the step's
    evidence (``evidence: null`` and the reason with a server that keeps no counters).
    """

    toxic_type: ClassVar[str]
    aimable = True

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The toxic's attributes and the streams it goes on."""
        raise NotImplementedError

    def apply(self, cluster: Cluster, fault: Fault, fault_id: str) -> Applied:
        assert cluster.toxiproxy is not None
        proxy = cluster.proxy_name(fault.target)
        attributes, streams = self.toxic(fault.params)
        extensions = fault.extensions()
        if fault.aim is not None:
            require(cluster.toxiproxy.url, "aim", f"a step aimed at {fault.aim.describe()}")
        if fault.trigger is not None:
            require(cluster.toxiproxy.url, "trigger", f"a step triggered {fault.trigger.describe()}")
        names = []
        for stream in streams:
            name = f"{fault_id}_{fault.kind}_{stream}"
            body: dict[str, Any] = {"name": name, "type": self.toxic_type, "stream": stream, "attributes": attributes}
            if not extensions:
                cluster.toxiproxy.add_toxic(proxy, **body)
            else:
                add_extended_toxic(cluster.toxiproxy.url, proxy, {**body, **extensions})
            names.append(name)
        return Applied(toxics=tuple(names))

    def heal(self, cluster: Cluster, fault: Fault, applied: Applied) -> dict[str, Any] | None:
        assert cluster.toxiproxy is not None
        proxy = cluster.proxy_name(fault.target)
        present = set(cluster.toxiproxy.toxics(proxy))
        evidence: dict[str, Any] | None = {}
        reason = None
        for name in applied.toxics:
            if name not in present:
                continue
            # Before the removal: the counters go with the toxic.
            counts = toxic_evidence(cluster.toxiproxy.url, proxy, name) if evidence is not None else None
            if counts is None:
                evidence, reason = None, NO_COUNTERS
            elif evidence is not None:
                evidence[name] = counts
        for name in applied.toxics:
            if name in present:
                cluster.toxiproxy.remove_toxic(proxy, name)
        if evidence is not None and not evidence and applied.toxics:
            reason = "missing: the toxics were gone before the heal"
            evidence = None
        return {"evidence": evidence, "evidence_reason": reason}


@register
class Latency(ToxicKind):
    name = "latency"
    toxic_type = "latency"
    params: ClassVar = {
        "latency_ms": Param(int, 200, minimum=0),
        "jitter_ms": Param(int, 0, minimum=0),
        "stream": stream_param("both"),
    }

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {"latency": params["latency_ms"], "jitter": params["jitter_ms"]}, STREAM_DIRECTIONS[params["stream"]]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        @st.composite
        def draw_params(draw: st.DrawFn) -> dict[str, Any]:
            latency = draw(st.integers(10, intensity.max_latency_ms))
            # Jitter never exceeds the latency, so a delay is never negative.
            return {"latency_ms": latency, "jitter_ms": draw(st.integers(0, latency)), "stream": draw(_streams())}

        return draw_params()

    def latency_s(self, fault: Fault) -> float:
        # Toxiproxy delays each chunk by latency ± jitter in each direction the toxic is on; a
        # request and its reply cross both directions.
        one_way = (fault.params["latency_ms"] + fault.params["jitter_ms"]) / 1000.0
        return one_way * (2 if fault.params["stream"] == "both" else 1)

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        # Half the ping timeout, not all of it: jitter, chunk scheduling in the proxy and a loaded CI
        # machine eat into the budget, and a spurious close code allowed is cheaper than a false alarm.
        return self.latency_s(fault) >= keepalive.ping_timeout_s / 2

    def detect_s(self, fault: Fault, keepalive: Keepalive) -> float:
        return keepalive_detect_s(keepalive)


@register
class Bandwidth(ToxicKind):
    name = "bandwidth"
    toxic_type = "bandwidth"
    params: ClassVar = {"rate_kbps": Param(int, 64, minimum=1), "stream": stream_param("downstream")}

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {"rate": params["rate_kbps"]}, STREAM_DIRECTIONS[params["stream"]]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {"rate_kbps": st.integers(intensity.min_rate_kbps, bounds.max_rate_kbps), "stream": _streams()}
        )

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        return False  # it only slows traffic


@register
class Partition(ToxicKind):
    name = "partition"
    # Toxiproxy's blackhole: timeout 0 drops everything and never closes.
    toxic_type = "timeout"
    blackhole = True
    swizzles = True

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {"timeout": 0}, STREAM_DIRECTIONS["both"]

    def detect_s(self, fault: Fault, keepalive: Keepalive) -> float:
        return keepalive_detect_s(keepalive)


@register
class ResetPeer(ToxicKind):
    name = "reset_peer"
    toxic_type = "reset_peer"
    params: ClassVar = {"timeout_ms": Param(int, 0, minimum=0), "stream": stream_param("upstream")}

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {"timeout": params["timeout_ms"]}, STREAM_DIRECTIONS[params["stream"]]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"timeout_ms": st.integers(0, bounds.max_reset_timeout_ms), "stream": _streams()})

    def detect_s(self, fault: Fault, keepalive: Keepalive) -> float:
        return float(fault.params["timeout_ms"]) / 1000.0


@register
class Down(LinkKind):
    """The proxy disabled: live connections closed, new ones refused."""

    name = "down"
    swizzles = True

    def apply(self, cluster: Cluster, fault: Fault, fault_id: str) -> Applied:
        assert cluster.toxiproxy is not None
        cluster.toxiproxy.set_enabled(cluster.proxy_name(fault.target), False)
        return Applied()

    def heal(self, cluster: Cluster, fault: Fault, applied: Applied) -> dict[str, Any] | None:
        assert cluster.toxiproxy is not None
        cluster.toxiproxy.set_enabled(cluster.proxy_name(fault.target), True)
        return None


@register
class Slicer(ToxicKind):
    name = "slicer"
    toxic_type = "slicer"
    params: ClassVar = {
        "average_size": Param(int, 8, minimum=1),
        "size_variation": Param(int, 4, minimum=0),
        "delay_us": Param(int, 100, minimum=0),
        "stream": stream_param("both"),
    }

    def validate(self, params: dict[str, Any], where: str) -> None:
        if params["size_variation"] >= params["average_size"]:
            raise FaultError(f"{where}.size_variation: must be smaller than average_size")

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        attrs = {"average_size": params["average_size"], "size_variation": params["size_variation"],
                 "delay": params["delay_us"]}  # fmt: skip
        return attrs, STREAM_DIRECTIONS[params["stream"]]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        @st.composite
        def draw_params(draw: st.DrawFn) -> dict[str, Any]:
            average = draw(st.integers(intensity.min_slice_avg, bounds.max_slice_avg))
            return {
                "average_size": average,
                "size_variation": draw(st.integers(0, average - 1)),  # Toxiproxy requires < average
                "delay_us": draw(st.integers(0, bounds.max_slice_delay_us)),
                "stream": draw(_streams()),
            }

        return draw_params()

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        return False  # it only fragments traffic


@register
class LimitData(ToxicKind):
    name = "limit_data"
    toxic_type = "limit_data"
    params: ClassVar = {"bytes": Param(int, 2048, minimum=0), "stream": stream_param("downstream")}

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {"bytes": params["bytes"]}, STREAM_DIRECTIONS[params["stream"]]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {"bytes": st.integers(intensity.min_limit_bytes, bounds.max_limit_bytes), "stream": _streams()}
        )

    def detect_s(self, fault: Fault, keepalive: Keepalive) -> float:
        return math.inf  # it cuts whenever its byte budget runs out


@register
class OneWayPartition(ToxicKind):
    """A blackhole on one stream only: the other direction flows and the TCP connection stays
    ESTABLISHED, so nothing is closed and only a keepalive can notice (a half-open link)."""

    name = "one_way_partition"
    toxic_type = "timeout"  # as partition: timeout 0 drops everything and never closes
    blackhole = True
    params: ClassVar = {"stream": stream_param("upstream", choices=ONE_WAY)}

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {"timeout": 0}, (params["stream"],)

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"stream": st.sampled_from(ONE_WAY)})

    def detect_s(self, fault: Fault, keepalive: Keepalive) -> float:
        return keepalive_detect_s(keepalive)


@register
class IdleTimeout(ToxicKind):
    """A middlebox that forgets idle flows (a NAT gateway, a cloud load balancer after 30-350 s):
    a connection with no byte in either direction for ``timeout_ms`` is silenced for good, no FIN,
    no RST. A build whose keepalive is more frequent than the timeout never notices it."""

    name = "idle_timeout"
    toxic_type = "idle_timeout"  # an extension toxic of the embedded proxy
    blackhole = True
    # Behind a partition on the same link it forgets the flow for good, which outlasts the heal:
    # no expectation derived from the steps' windows can predict that.
    generated = False
    params: ClassVar = {"timeout_ms": Param(int, 2000, minimum=1)}

    def apply(self, cluster: Cluster, fault: Fault, fault_id: str) -> Applied:
        assert cluster.toxiproxy is not None
        require(cluster.toxiproxy.url, "idle_timeout", "an idle_timeout step")
        return super().apply(cluster, fault, fault_id)

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        # On both streams: a flow is idle only when neither direction carries a byte.
        return {"timeout": params["timeout_ms"]}, STREAM_DIRECTIONS["both"]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"timeout_ms": st.integers(1000, 10_000)})

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        # A keepalive sent more often than the timeout keeps every flow busy.
        return keepalive.ping_interval_s * 1000.0 >= fault.params["timeout_ms"]

    def detect_s(self, fault: Fault, keepalive: Keepalive) -> float:
        return fault.params["timeout_ms"] / 1000.0 + keepalive_detect_s(keepalive)
