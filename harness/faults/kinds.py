"""The fault vocabulary: one registered object per kind. Adding a kind is adding one object here."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

from hypothesis import strategies as st
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.sync.client import connect as ws_connect

from harness.faults.model import (
    CLOSE_TIMEOUT_S,
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
from harness.faults.proxy_ext import NO_COUNTERS, remove_toxic_with_evidence, require
from harness.faults.proxy_ext import add_toxic as add_extended_toxic
from harness.toxiproxy.toxic_spec import sendable_close_code
from harness.toxiproxy.ws_toxics import PROTOCOL_ERRORS as WS_PROTOCOL_ERRORS
from harness.toxiproxy.ws_toxics import UPGRADE_MODES
from harness.waiting import wait_until

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
    targets: ClassVar[tuple[str, ...]] = PROCESS_TARGETS
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
    blocks_on_heal = True
    stops_process = True  # the heal starts the process again and waits until it is ready

    def signal(self, cluster: Cluster, fault: Fault) -> dict[str, Any]:
        return {"exit_code": cluster.process(fault.target).kill()}


@register
class Terminate(ProcessKind):
    name = "terminate"
    blocks_on_heal = True
    stops_process = True

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
    targets: ClassVar[tuple[str, ...]] = LINK_TARGETS


class ToxicKind(LinkKind):
    """A link fault made of one Toxiproxy toxic per stream it is on.

    An aimed or triggered fault sends the toxic's ``aim`` / ``trigger`` extension (refused up front
    by a server without it).
    The heal removes each toxic with the embedded proxy's final count of what it did, and records
    that as the step's evidence (``evidence: null`` and the reason with a server that keeps no counters).
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
            # Removed and counted in one request: the counters are read once the toxic can no
            # longer act, so none of what it did goes uncounted.
            counts = remove_toxic_with_evidence(cluster.toxiproxy.url, proxy, name) if evidence is not None else None
            if counts is None:
                cluster.toxiproxy.remove_toxic(proxy, name)
                evidence, reason = None, NO_COUNTERS
            elif evidence is not None:
                evidence[name] = counts
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


# -- frame-aware link faults: WebSocket frames on a link (harness.toxiproxy.ws_toxics) ---------
#
# On every proxy here upstream is client → server (``lb``: client → balancer; a backend link:
# balancer → backend), so a fault *from a client* is on ``lb`` upstream and a fault *from a
# backend* is on the backend link downstream.

#: Each error the ``ws_protocol_error`` toxic injects, and the close code RFC 6455 gives it.
WS_ERROR_CLOSE_CODES: dict[str, int] = {
    "reserved_opcode": 1002,  # protocol error
    "invalid_utf8": 1007,  # invalid payload data
    "oversized": 1009,  # message too big (over the balancer's max_size, 1 MiB by default)
}


@register
class ClientProtocolError(ToxicKind):
    """One client sends a malformed frame: a reserved opcode, a text frame of invalid UTF-8, or a
    frame over the balancer's ``max_size``. Injected on ``lb`` upstream before the ``nth`` data
    frame of at most ``clients`` client connections; the others are left alone.

    A correct balancer closes exactly that client's connection with the code RFC 6455 gives the
    error (1002, 1007 or 1009) and nothing else: the other clients keep playing without a
    disconnect, and the hit client plays again after it reconnects. ``clean_failover`` allows only
    that code; ``others_unaffected`` judges that no client beyond ``clients`` lost its connection
    while the fault was in place.
    """

    name = "client_protocol_error"
    toxic_type = "ws_protocol_error"
    targets = ("lb",)
    params: ClassVar = {
        "error": Param(str, "reserved_opcode", choices=tuple(WS_PROTOCOL_ERRORS)),
        "clients": Param(int, 1, minimum=1),
        "nth": Param(int, 1, minimum=1),
    }

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        kind = WS_PROTOCOL_ERRORS[params["error"]]
        return {"kind": kind, "connections": params["clients"], "nth": params["nth"]}, ("upstream",)

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {"error": st.sampled_from(tuple(WS_PROTOCOL_ERRORS)), "clients": st.integers(1, 2), "nth": st.just(1)}
        )

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        # It ends the hit clients' connections, but only with the one code below: counting it as
        # disruptive would also allow 1006 and 1011, which would hide a balancer that drops the
        # client without a close frame, or drops the wrong clients.
        return False

    def balancer_close_codes(self, fault: Fault) -> tuple[int, ...]:
        return (WS_ERROR_CLOSE_CODES[fault.params["error"]],)


#: What a backend can send that the balancer's upstream leg must reject (its max_size is off:
#: backends are trusted with big messages, so "oversized" is not an error there).
BACKEND_PROTOCOL_ERRORS = ("reserved_opcode", "invalid_utf8")


@register
class BackendProtocolError(ToxicKind):
    """A backend sends a malformed frame (a reserved opcode, or a text frame of invalid UTF-8) on
    every connection through its link, before the ``nth`` data frame from it.

    A correct balancer fails its upstream connection (websockets does, with 1002 or 1007), treats
    that upstream as lost and fails the session over to the other backend without the client
    noticing, as for any lost upstream. It never crashes and never relays the bad frame. A
    balancer that cannot fail over would close the client with 1011 or 1014 (bad gateway), but
    this contract requires the failover, so, as for every backend fault, no close code is
    allowed beyond the 1013 of a refused failover (``clean_failover`` judges both).
    """

    name = "backend_protocol_error"
    toxic_type = "ws_protocol_error"
    targets = ("primary", "secondary")
    params: ClassVar = {
        "error": Param(str, "reserved_opcode", choices=BACKEND_PROTOCOL_ERRORS),
        "nth": Param(int, 1, minimum=1),
    }

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        kind = WS_PROTOCOL_ERRORS[params["error"]]
        return {"kind": kind, "nth": params["nth"]}, ("downstream",)

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"error": st.sampled_from(BACKEND_PROTOCOL_ERRORS), "nth": st.just(1)})


#: Time to read and answer one injected ping, both ends together: a burst of 1000 pings each way
#: took 0.7 s to clear through one websockets pair on a loaded 2-core machine (load average 16).
PING_COST_S = 0.0007


@register
class PingFlood(ToxicKind):
    """``count`` pings injected at once on each connection through the link, toward the side the
    stream leads to (upstream: toward the server end, downstream: toward the client end).

    A correct balancer answers them (a pong each) or ignores them, and keeps every connection:
    no disconnect, no stall beyond the usual deadline. A pong that reaches the other end is
    unsolicited, which RFC 6455 allows. A burst does delay everything behind it, keepalive pongs
    included: like latency, a burst that can take half the ping timeout to clear may end
    connections with 1011 (keepalive ping timeout), and is then counted as disruptive.
    """

    name = "ping_flood"
    toxic_type = "ws_ping"
    params: ClassVar = {
        "count": Param(int, 100, minimum=1, maximum=100_000),
        "size": Param(int, 125, minimum=0, maximum=125),
        "stream": stream_param("upstream"),
    }

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {"count": params["count"], "size": params["size"]}, STREAM_DIRECTIONS[params["stream"]]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"count": st.integers(1, 2000), "size": st.integers(0, 125), "stream": _streams()})

    def clear_s(self, fault: Fault) -> float:
        """How long a burst can hold up the frames behind it."""
        return fault.params["count"] * PING_COST_S * len(STREAM_DIRECTIONS[fault.params["stream"]])

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        return self.clear_s(fault) >= keepalive.ping_timeout_s / 2

    def detect_s(self, fault: Fault, keepalive: Keepalive) -> float:
        return keepalive_detect_s(keepalive)


@register
class SplitFrames(ToxicKind):
    """Every data frame written as ``segments`` TCP pieces, ``delay_us`` apart, while in place.

    Transparent to a correct balancer: it reassembles frames, and clients see every message
    whole, in order and without a disconnect.
    """

    name = "split_frames"
    toxic_type = "ws_split"
    params: ClassVar = {
        "segments": Param(int, 16, minimum=1, maximum=65536),
        "delay_us": Param(int, 200, minimum=0),
        "stream": stream_param("both"),
    }

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        attrs = {"nth": 0, "segments": params["segments"], "delay": params["delay_us"]}
        return attrs, STREAM_DIRECTIONS[params["stream"]]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                "segments": st.integers(2, 64),
                "delay_us": st.integers(0, bounds.max_slice_delay_us),
                "stream": _streams(),
            }
        )

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        return False


# -- a SIGHUP drain of the balancer (docs/contract.md, section 8a) ----------------------------

#: How long after its drain timeout a draining build may take to exit: the shutdown that follows
#: the drain (contract section 8: 2 x close_timeout_s + 2.5 s, with the contract's 1 s).
DRAIN_EXIT_MARGIN_S = 2 * CLOSE_TIMEOUT_S + 2.5
#: How long the harness looks for ``draining: true`` in /status after the SIGHUP.
DRAINING_SEEN_WITHIN_S = 2.0


def declares_drain(status: object) -> bool:
    """Whether a build's /status declares SIGHUP drain support: a boolean ``draining`` (section 8a)."""
    return isinstance(status, dict) and isinstance(status.get("draining"), bool)


def handshake_outcome(url: str, timeout: float = 2.0) -> str:
    """What a new WebSocket connection to ``url`` gets: "accepted", "HTTP <status>", "refused" (no
    listener) or "failed: <why>". Bounded by ``timeout``; an accepted connection is closed at once."""
    try:
        with ws_connect(url, open_timeout=timeout, close_timeout=timeout, proxy=None):
            return "accepted"
    except InvalidStatus as exc:
        return f"HTTP {exc.response.status_code}"
    except ConnectionRefusedError:
        return "refused"
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        return f"failed: {type(exc).__name__}: {exc}"


@register
class Drain(ProcessKind):
    """SIGHUP to the balancer: the build drains (contract section 8a) and exits; then the harness
    starts a new process on the same port.

    The apply records the evidence the ``drain_graceful`` invariant judges: when the signal went
    (``signalled_at``), whether /status said ``draining`` afterwards, what a new connection got
    while the old process drained, how and when that process exited (SIGKILLed if it outlived its
    drain timeout plus :data:`DRAIN_EXIT_MARGIN_S`), and the new pid. A build whose /status does not
    declare drain support (no boolean ``draining``) is not sent SIGHUP, whose default action kills
    a process: it gets the graceful restart the contract does require (SIGTERM), recorded with
    ``drain_declared: false``, and ``drain_graceful`` answers "not checked".
    """

    name = "drain"
    targets: ClassVar[tuple[str, ...]] = ("balancer",)
    healable = False  # over once applied: the new process is up
    blocks_on_apply = True
    # Its timing (a drain timeout, then a restart) is beyond what the expectations model.
    generated = False

    def signal(self, cluster: Cluster, fault: Fault) -> dict[str, Any]:
        from harness.cluster import HOST  # harness.cluster imports the fault vocabulary

        proc = cluster.process(fault.target)
        if not declares_drain(cluster.status()):
            code = proc.restart(graceful=True, ready_timeout=cluster.spec.ready_timeout_s)
            return {"drain_declared": False, "signal": "SIGTERM", "exit_code": code, "started_pid": proc.pid}
        drain_timeout = float(cluster.config.get("drain_timeout_s", 0.0))
        signalled_at = time.time()
        proc.hangup()

        def draining() -> bool:
            now = cluster.status(timeout=0.5)
            return not proc.running or (isinstance(now, dict) and now.get("draining") is True)

        try:
            wait_until(draining, timeout=DRAINING_SEEN_WITHIN_S, what="/status draining")
            draining_seen = proc.running
        except TimeoutError:
            draining_seen = False
        # Straight to the build's listen port, not through the lb proxy, which would accept anyway.
        # Only once the build says it is draining: before that, it may not have handled the signal yet.
        if not proc.running:
            new_connection = "not tried: the process had already exited"
        elif not draining_seen:
            new_connection = f"not tried: /status did not say draining within {DRAINING_SEEN_WITHIN_S:g} s"
        else:
            new_connection = handshake_outcome(f"ws://{HOST}:{cluster.ports['balancer']}/play?client=drain-probe")
        deadline = signalled_at + drain_timeout + DRAIN_EXIT_MARGIN_S
        code = proc.wait_exit(max(0.0, deadline - time.time()))
        exited_at = time.time() if code is not None else None
        killed = code is None
        if killed:
            code = proc.kill()
        proc.start()
        proc.wait_ready(cluster.spec.ready_timeout_s)
        return {
            "drain_declared": True,
            "signal": "SIGHUP",
            "signalled_at": signalled_at,
            "drain_timeout_s": drain_timeout,
            "draining_seen": draining_seen,
            "new_connection": new_connection,
            "exit_code": code,
            "exited_at": exited_at,
            "killed": killed,
            "started_pid": proc.pid,
            "started_at": time.time(),
        }

    def heal(self, cluster: Cluster, fault: Fault, applied: Applied) -> dict[str, Any] | None:
        return None

    def balancer_close_codes(self, fault: Fault) -> tuple[int, ...]:
        # The drain's end, or the SIGTERM a build without drain support gets instead.
        return (1001, 1012)


# -- upgrade faults: a backend that refuses, stalls or slows the opening handshake ---------------
#
# Three kinds on one toxic (``ws_upgrade`` of the embedded proxy, harness.toxiproxy.ws_toxics): a
# kind is the registry's unit of "what a correct build shows", and the three differ exactly there
# (a stall is a blackhole for as long as it lasts, a slow handshake adds latency, a refusal is
# over at once), which the kind-level hooks (``blackhole`` is a class flag) express per kind.
# They act only on handshakes made while they are in place, so a live session never notices
# them; they bite when a session opens an upstream: a new client, or a failover.

#: Statuses a refused upgrade may carry in generated plans and named scenarios.
UPGRADE_STATUSES = (500, 503)


class UpgradeKind(ToxicKind):
    """A backend link's opening handshakes answered badly (a ``ws_upgrade`` toxic on upstream).

    A correct build opening an upstream to that backend fails over to another backend, or, when
    none can be reached, refuses the client with 1013, within its open timeout (contract section
    4): it never retries the faulted backend without end, and never waits on a handshake for
    longer than ``open_timeout_s``. ``upgrade_failover`` judges it.
    """

    toxic_type = "ws_upgrade"
    targets = ("primary", "secondary")
    mode: ClassVar[str]
    # Its cost depends on the build's open timeout (Limits.open_timeout_s), which generated plans
    # do not set: drawn only when asked for by name.
    generated = False

    def apply(self, cluster: Cluster, fault: Fault, fault_id: str) -> Applied:
        assert cluster.toxiproxy is not None
        require(cluster.toxiproxy.url, "ws_upgrade", f"a {self.name} step")
        return super().apply(cluster, fault, fault_id)

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        attributes = {"mode": UPGRADE_MODES[self.mode], **self.attributes(params)}
        return attributes, ("upstream",)  # the request's direction: balancer → backend

    def attributes(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        return False  # a session already open never notices; only new handshakes do

    def handshake_cost_s(self, fault: Fault, open_timeout_s: float) -> float:
        """The longest a correct build can spend on one handshake with the faulted backend."""
        raise NotImplementedError


@register
class BackendUpgradeRefused(UpgradeKind):
    """Every upgrade to the backend answered with HTTP ``status`` (500 or 503), then closed."""

    name = "backend_upgrade_refused"
    mode = "refuse"
    params: ClassVar = {"status": Param(int, 503, minimum=500, maximum=503)}

    def validate(self, params: dict[str, Any], where: str) -> None:
        if params["status"] not in UPGRADE_STATUSES:
            raise FaultError(f"{where}.status: must be one of {', '.join(map(str, UPGRADE_STATUSES))}")

    def attributes(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"status": params["status"]}

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"status": st.sampled_from(UPGRADE_STATUSES)})

    def handshake_cost_s(self, fault: Fault, open_timeout_s: float) -> float:
        return 0.0  # answered at once


@register
class BackendUpgradeStalled(UpgradeKind):
    """Every upgrade to the backend stalled: the TCP connection accepted, no answer ever."""

    name = "backend_upgrade_stalled"
    mode = "stall"
    # A handshake waits on it until the build's open timeout: for a session that finds no other
    # backend, as long as the stall lasts.
    blackhole = True

    def handshake_cost_s(self, fault: Fault, open_timeout_s: float) -> float:
        return open_timeout_s


@register
class BackendUpgradeSlow(UpgradeKind):
    """Every upgrade request to the backend held ``delay_ms`` before it is passed on: a slow
    handshake (the latency is on the first response only; the session is not slowed after it)."""

    name = "backend_upgrade_slow"
    mode = "slow"
    params: ClassVar = {"delay_ms": Param(int, 1000, minimum=0, maximum=3_600_000)}

    def attributes(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"delay": params["delay_ms"]}

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"delay_ms": st.integers(0, intensity.max_latency_ms)})

    def latency_s(self, fault: Fault) -> float:
        # Once per upstream opened: a failover or a new session waits it out (or its open timeout).
        return float(fault.params["delay_ms"]) / 1000.0

    def handshake_cost_s(self, fault: Fault, open_timeout_s: float) -> float:
        return min(self.latency_s(fault), open_timeout_s)


def ends_session(code: int) -> bool:
    """A backend close the contract passes to the client instead of failing over (docs/contract.md)."""
    return code == 1000 or 4000 <= code <= 4999


@register
class FrameClose(ToxicKind):
    """A close frame with ``code`` replaces the ``nth`` data frame toward the connection's client end,
    then the link closes: a middlebox (``lb``: between the clients and the balancer) or a backend
    (``primary`` / ``secondary``: toward the balancer) ending the connection with that code. At most
    ``connections`` connections through the link are hit (0: every one).

    Compression makes no difference: the close frame is sent uncompressed, as RFC 7692 requires,
    and nothing after it is read. What a correct balancer does:

    - on ``lb``, the hit client sees exactly ``code``; the balancer sees its client leg end without
      a close handshake, releases the session and its upstream (``cleanup_complete``), and the
      client plays again after it reconnects; no other client is touched;
    - from a backend, a code that ends the session by contract (1000, 4000-4999) reaches the client
      as it is, with no failover; any other code (1001 going away, 1011, 1012 restart, ...) is a
      lost upstream: the balancer fails over in place and no client sees a close.

    ``clean_failover`` allows exactly the codes this says and no other, so a balancer that passes a
    backend's 1001 to its client (instead of failing over) is caught.
    """

    name = "frame_close"
    toxic_type = "ws_close"
    params: ClassVar = {
        "code": Param(int, 1001, minimum=1000, maximum=4999),
        "nth": Param(int, 1, minimum=1),
        "connections": Param(int, 1, minimum=0),
    }
    generated = False  # the repeated reconnects it causes make other steps' windows unpredictable

    def validate(self, params: dict[str, Any], where: str) -> None:
        if not sendable_close_code(params["code"]):
            raise FaultError(f"{where}.code: {params['code']} may not be sent in a close frame (RFC 6455 section 7.4)")

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        attrs = {"code": params["code"], "nth": params["nth"], "connections": params["connections"]}
        return attrs, ("downstream",)

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        codes = st.sampled_from((1000, 1001, 1011, 1012, 4000, 4999))
        return st.fixed_dictionaries({"code": codes, "nth": st.integers(1, 5), "connections": st.integers(0, 2)})

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        # A backend's close is a lost upstream (a failover); on lb it ends the client's connection,
        # but only with the one code below, so 1006/1011 stay forbidden there.
        return fault.target != "lb"

    def balancer_close_codes(self, fault: Fault) -> tuple[int, ...]:
        code = fault.params["code"]
        if fault.target == "lb" or ends_session(code):
            return (code,)
        return ()


@register
class FrameDelay(ToxicKind):
    """The ``nth`` data frame on each connection through the link (from when the fault met it) is
    held ``delay_ms``; everything behind it on that stream waits too (keepalive pings and pongs
    included), so order is kept. Compression makes no difference: nothing is lost or repeated.

    A correct balancer relays in order, loses and repeats nothing, and keeps every connection. A
    delay of half the ping timeout or more can hold a keepalive pong long enough for a keepalive
    to give up, so it is disruptive then, as latency is (1006/1011 allowed on ``lb``; a backend's
    link then fails over).
    """

    name = "frame_delay"
    toxic_type = "ws_delay"
    params: ClassVar = {
        "delay_ms": Param(int, 200, minimum=1, maximum=600_000),
        "nth": Param(int, 1, minimum=1),
        "stream": stream_param("upstream"),
    }

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {"delay": params["delay_ms"], "nth": params["nth"]}, STREAM_DIRECTIONS[params["stream"]]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"delay_ms": st.integers(1, 1000), "nth": st.integers(1, 5), "stream": _streams()})

    def latency_s(self, fault: Fault) -> float:
        # One frame per stream and connection: a request and its reply may each wait once.
        one_way = fault.params["delay_ms"] / 1000.0
        return one_way * (2 if fault.params["stream"] == "both" else 1)

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        return self.latency_s(fault) >= keepalive.ping_timeout_s / 2

    def detect_s(self, fault: Fault, keepalive: Keepalive) -> float:
        return self.latency_s(fault) + keepalive_detect_s(keepalive)


#: Why a frame is only dropped or duplicated on an uncompressed link (docs/toxiproxy-extensions.md).
UNCOMPRESSED = (
    False,
    "a lost or repeated permessage-deflate frame desynchronises the receiver's decompressor, "
    "which no balancer can repair",
)


@register
class FrameDrop(ToxicKind):
    """The ``nth`` data frame on each connection through the link (counted from when the fault met
    it) is not forwarded; everything else is, in order. A middlebox losing one message.

    A balancer is a relay: it cannot recover a frame lost on its client leg (``lb``) or on its leg
    to a backend, and it sees nothing wrong either. What a correct balancer does is nothing
    special: it closes nobody, fails over from nobody, and relays what follows as it is. The game's
    own seq/ack shows the loss, and only it:

    - a lost move (upstream): the backend answers the next move with ``gap`` (expected the lost
      seq), the client re-sends its unacknowledged moves from there (workload ``resend_on_gap``),
      and the game goes on from the state it had: ``ordered``, ``state_continuity`` and
      ``single_upstream`` hold as they are (re-sends are sends);
    - a lost ack (downstream): that one move stays unacknowledged on the client (an ``info``
      record when it stops); later acks carry the cumulative state, so nothing regresses.

    So no invariant is relaxed for it: no close code is allowed, no failover, no extra delivery.
    Needs an uncompressed workload whose clients answer a gap (``workload_needs``). On a backend
    link it is fair only for a build that keeps that leg uncompressed too, as the reference does
    (a build may deflate it whatever the client chose; the named scenario hits ``lb`` only).
    """

    name = "frame_drop"
    toxic_type = "ws_drop"
    params: ClassVar = {"nth": Param(int, 1, minimum=1), "stream": stream_param("upstream")}
    generated = False  # needs its own workload (below), which generated plans do not draw
    workload_needs: ClassVar = {
        "compression": UNCOMPRESSED,
        "resend_on_gap": (True, "a move lost on the way is recovered only by a client that answers the gap"),
    }

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {"nth": params["nth"]}, STREAM_DIRECTIONS[params["stream"]]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"nth": st.integers(1, 5), "stream": st.sampled_from(ONE_WAY)})

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        return False  # data frames only: keepalive pings and pongs pass, so no connection ends


@register
class FrameDuplicate(ToxicKind):
    """The ``nth`` data frame on each connection through the link (counted from when the fault met
    it) is forwarded twice (upstream, the copy re-masked with a fresh key).

    A correct balancer relays both copies as they are and closes nobody. The game shows the
    repeat, and only it:

    - a repeated move (upstream): the backend acknowledges the copy with ``dup: true`` and does not
      apply it again (``ordered``: one ack with dup false per seq). The backend received the move
      once more than the client sent it, so ``single_upstream`` allows one extra delivery per
      frame this fault duplicated upstream (the count is the toxic's evidence: the connections
      it touched), of a move delivered while it was in place, at most one per move;
    - a repeated ack (downstream): the client records the second one as a ``reply``, not a second
      acknowledgement, so nothing changes.

    Needs an uncompressed workload (``workload_needs``); on a backend link, fair only for a build
    that keeps that leg uncompressed too (see ``FrameDrop``).
    """

    name = "frame_duplicate"
    toxic_type = "ws_duplicate"
    params: ClassVar = {"nth": Param(int, 1, minimum=1), "stream": stream_param("upstream")}
    generated = False  # needs an uncompressed workload, which generated plans do not draw
    repeats_upstream_frames = True
    workload_needs: ClassVar = {"compression": UNCOMPRESSED}

    def toxic(self, params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {"nth": params["nth"]}, STREAM_DIRECTIONS[params["stream"]]

    def params_strategy(self, intensity: Intensity, bounds: Bounds) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"nth": st.integers(1, 5), "stream": _streams()})

    def is_disruptive(self, fault: Fault, keepalive: Keepalive) -> bool:
        return False
