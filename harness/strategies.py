"""Hypothesis strategies for generated fault plans, in the manner of TigerBeetle's VOPR.

A plan is drawn in three stages, as the VOPR does (swarm testing):

1. a *profile* (:func:`fault_profiles`): which fault kinds are enabled, which targets, how dense
   (how many steps) and how intense (latency, fault lengths, how harsh the link parameters are).
   Turning whole kinds off for an example finds more than drawing every step uniformly from the
   whole vocabulary, because interactions between a few kinds get exercised many times;
2. timed steps (``at_s`` within the horizon, sorted), each optionally with a ``duration_s`` so some
   faults heal in the middle of the fault phase. With some probability the plan also carries a
   FoundationDB-style *swizzle*: the two backends are cut off one by one (partition or link down)
   and then restored in random order;
3. the heal, which is implicit: the runner heals everything at the heal phase.

Every generated :class:`~harness.scenario.Scenario` carries an ``expect`` derived from its steps by
:func:`derive_expect` (the rules are documented there), so a correct build passes every generated
plan and a failure is a finding, not noise.

The vocabulary. Every kind of :data:`harness.faults.FAULT_KINDS` is enabled by default; the one
exclusion is *pause on the balancer*: a paused balancer hangs every client past any deadline, which
is the expected behaviour of a frozen proxy, not a finding. The balancer process is left out of the
targets entirely unless ``include_balancer=True`` (it then gets ``kill``, ``terminate`` and
``restart``), because restarting it resets every session and so masks the failover behaviour that
generated plans are mostly meant to probe; the named scenario ``balancer_restart`` covers it.
Every other kind stays on every target it has, ``lb`` included: cut, reset, throttled and
blackholed client links exercise reconnects and half-open connections, which are among the real
proxy failures worth finding, and :func:`derive_expect` allows the close codes they legitimately
cause. What keeps such plans fast and predictable is the parameter bounds (:data:`BOUNDS`), not a
smaller vocabulary.

Shrinking. Every choice is drawn so that its simplest value is the simplest plan: one step, at
``at_s`` 0, no duration (held until the heal), the first target, the smallest parameters, no
swizzle, the mildest intensity. Times are drawn as whole tenths of a second so shrunk plans read
well and survive the JSON round trip exactly.

Statistics. :func:`note_plan_events` records ``hypothesis.event`` s for a plan; call it from the
test body, so ``--hypothesis-show-statistics`` reports which kinds and targets fired.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from harness.faults import FAULT_KINDS, PROCESS_KINDS, STREAMS, Fault, fault
from harness.scenario import INVARIANTS, Expect, Keepalive, Limits, Phases, Scenario, Step

__all__ = [
    "BALANCER_PROCESS_KINDS",
    "BOUNDS",
    "DEFAULT_KINDS",
    "INTENSITIES",
    "Bounds",
    "FaultProfile",
    "Intensity",
    "derive_expect",
    "fault_plans",
    "fault_profiles",
    "is_disruptive",
    "latency_effect_s",
    "note_plan_events",
]

# -- the vocabulary ---------------------------------------------------------------------------

DEFAULT_KINDS: tuple[str, ...] = tuple(FAULT_KINDS)
BACKENDS = ("primary", "secondary")
#: Process faults the balancer may get. Not pause: see the module docstring.
BALANCER_PROCESS_KINDS = ("kill", "terminate", "restart")
#: Kinds that cut a backend off; the swizzle uses these.
SWIZZLE_KINDS = ("partition", "down")
#: Faults that blackhole a hop silently: nothing is closed, so only a keepalive notices.
BLACKHOLE_KINDS = ("partition", "pause")
#: Link faults that end (or refuse) every connection through the link.
_CUTTING_LINK_KINDS = ("partition", "down", "reset_peer", "limit_data")


@dataclass(frozen=True)
class Bounds:
    """Parameter bounds that keep a generated run fast and its expectations predictable."""

    max_latency_ms: int = 400
    min_rate_kbps: int = 32
    max_rate_kbps: int = 1024
    max_reset_timeout_ms: int = 500
    min_limit_bytes: int = 512
    max_limit_bytes: int = 65536
    min_slice_avg: int = 4
    max_slice_avg: int = 64
    max_slice_delay_us: int = 500


BOUNDS = Bounds()


@dataclass(frozen=True)
class Intensity:
    """How hard a profile hits: caps for latencies and fault lengths, floors for link limits.

    Every level stays within :data:`BOUNDS`; the mildest comes first so it is what shrinks.
    """

    name: str
    max_latency_ms: int
    #: Cap on a timed fault's ``duration_s``, as a fraction of the horizon.
    max_duration_frac: float
    min_rate_kbps: int
    min_limit_bytes: int
    min_slice_avg: int


INTENSITIES: tuple[Intensity, ...] = (
    Intensity("mild", max_latency_ms=100, max_duration_frac=0.25, min_rate_kbps=256,
              min_limit_bytes=16384, min_slice_avg=32),
    Intensity("moderate", max_latency_ms=250, max_duration_frac=0.5, min_rate_kbps=96,
              min_limit_bytes=4096, min_slice_avg=8),
    Intensity("harsh", max_latency_ms=BOUNDS.max_latency_ms, max_duration_frac=1.0,
              min_rate_kbps=BOUNDS.min_rate_kbps, min_limit_bytes=BOUNDS.min_limit_bytes,
              min_slice_avg=BOUNDS.min_slice_avg),
)  # fmt: skip


def _targets_for(kind: str, include_balancer: bool) -> tuple[str, ...]:
    targets, _spec = FAULT_KINDS[kind]
    if kind in BALANCER_PROCESS_KINDS and include_balancer:
        return targets
    return tuple(t for t in targets if t != "balancer")


@dataclass(frozen=True)
class FaultProfile:
    """What one example may do: the swarm-testing configuration drawn before any step."""

    kinds: tuple[str, ...]
    targets: tuple[str, ...]
    #: How many steps the plan has (the swizzle's two included).
    density: int
    intensity: Intensity
    swizzle: bool
    include_balancer: bool = False

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Every (kind, target) this profile allows; never empty."""
        return tuple((k, t) for k in self.kinds for t in _targets_for(k, self.include_balancer) if t in self.targets)

    @property
    def family(self) -> str:
        """A coarse label for statistics: process, link, mixed; swizzle when it swizzles."""
        if self.swizzle:
            return "swizzle"
        kinds = {k for k, _t in self.pairs}
        if kinds <= set(PROCESS_KINDS):
            return "process"
        if not kinds & set(PROCESS_KINDS):
            return "link"
        return "mixed"


def _check_args(max_steps: int, horizon_s: float, kinds: Sequence[str] | None) -> tuple[str, ...]:
    if max_steps < 1:
        raise ValueError(f"max_steps: must be >= 1, got {max_steps}")
    if not (math.isfinite(horizon_s) and horizon_s >= 0.1):
        raise ValueError(f"horizon_s: must be >= 0.1, got {horizon_s}")
    chosen = DEFAULT_KINDS if kinds is None else tuple(dict.fromkeys(kinds))
    if not chosen:
        raise ValueError("kinds: must name at least one fault kind")
    unknown = [k for k in chosen if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"kinds: unknown fault kind(s) {', '.join(unknown)} (known: {', '.join(FAULT_KINDS)})")
    return chosen


def fault_profiles(
    max_steps: int = 4,
    horizon_s: float = 6.0,
    kinds: Sequence[str] | None = None,
    *,
    include_balancer: bool = False,
) -> st.SearchStrategy[FaultProfile]:
    """Swarm-testing profiles: which kinds and targets an example may use, how dense, how intense.

    First a family (all of ``kinds``, their process faults only, or their link faults only), then a
    coin flip per kind of that family and per target the chosen kinds can reach (never empty),
    the density (1..``max_steps`` steps), an :class:`Intensity`, and, one time in four when the
    profile can cut links and has two steps to spend, the swizzle shape.
    """
    vocabulary = _check_args(max_steps, horizon_s, kinds)
    return _profiles(max_steps, horizon_s, vocabulary, include_balancer)


def _subset(draw: st.DrawFn, items: tuple[str, ...]) -> tuple[str, ...]:
    """A non-empty subset, each item in with probability 1/2 as swarm testing does.

    Independent coin flips cover every kind evenly (a drawn set would favour the first ones) and
    shrink to "off"; when every coin says off, one item is drawn instead. Order is kept.
    """
    chosen = tuple(item for item in items if draw(st.booleans()))
    return chosen or (draw(st.sampled_from(items)),)


@st.composite
def _profiles(
    draw: st.DrawFn, max_steps: int, horizon_s: float, vocabulary: tuple[str, ...], include_balancer: bool
) -> FaultProfile:
    # First which family (as VOPR first picks which faults a seed may use at all), then the kinds:
    # with 11 kinds and a handful of steps, coin flips alone would almost never give a plan of
    # process faults only or of link faults only, and those are the easiest to diagnose.
    process = tuple(k for k in vocabulary if k in PROCESS_KINDS)
    link = tuple(k for k in vocabulary if k not in PROCESS_KINDS)
    families = [vocabulary] + ([process, link] if process and link else [])
    kinds = _subset(draw, draw(st.sampled_from(families)))
    # Targets are drawn from those the enabled kinds can reach, so every profile has a step to take.
    targets = _subset(draw, tuple(dict.fromkeys(t for k in kinds for t in _targets_for(k, include_balancer))))
    density = draw(st.integers(1, max_steps))
    intensity = draw(st.sampled_from(INTENSITIES))
    # One in four, and shrinking towards "no": the swizzle needs two steps, both backends reachable
    # by a cutting kind, and room in the horizon for cut, cut, restore, restore (0.1 s apart).
    can_swizzle = max_steps >= 2 and horizon_s >= 0.4 and any(k in kinds for k in SWIZZLE_KINDS)
    swizzle = can_swizzle and draw(st.integers(0, 3)) == 3
    if swizzle:
        density = max(density, 2)
    return FaultProfile(kinds, targets, density, intensity, swizzle, include_balancer)


# -- steps ------------------------------------------------------------------------------------


def _streams() -> st.SearchStrategy[str]:
    return st.sampled_from(STREAMS)


@st.composite
def _params(draw: st.DrawFn, kind: str, intensity: Intensity) -> dict[str, object]:
    """Parameters for ``kind``, within BOUNDS and the intensity; each shrinks to its lower bound."""
    b = BOUNDS
    if kind == "restart":
        return {"graceful": draw(st.booleans())}
    if kind == "latency":
        latency = draw(st.integers(10, intensity.max_latency_ms))
        # Jitter never exceeds the latency, so a delay is never negative.
        return {"latency_ms": latency, "jitter_ms": draw(st.integers(0, latency)), "stream": draw(_streams())}
    if kind == "bandwidth":
        return {"rate_kbps": draw(st.integers(intensity.min_rate_kbps, b.max_rate_kbps)), "stream": draw(_streams())}
    if kind == "reset_peer":
        return {"timeout_ms": draw(st.integers(0, b.max_reset_timeout_ms)), "stream": draw(_streams())}
    if kind == "limit_data":
        return {"bytes": draw(st.integers(intensity.min_limit_bytes, b.max_limit_bytes)), "stream": draw(_streams())}
    if kind == "slicer":
        average = draw(st.integers(intensity.min_slice_avg, b.max_slice_avg))
        return {
            "average_size": average,
            "size_variation": draw(st.integers(0, average - 1)),  # Toxiproxy requires < average
            "delay_us": draw(st.integers(0, b.max_slice_delay_us)),
            "stream": draw(_streams()),
        }
    return {}


def _tenths(horizon_s: float) -> int:
    # Rounded down, so no step ends past the horizon; the epsilon keeps 0.3 * 10 == 3.
    return max(1, math.floor(horizon_s * 10 + 1e-9))


@st.composite
def _step(draw: st.DrawFn, profile: FaultProfile, horizon_s: float) -> Step:
    kind, target = draw(st.sampled_from(profile.pairs))
    params = draw(_params(kind, profile.intensity))
    horizon = _tenths(horizon_s)
    # Strictly before the horizon: a fault applied at the heal would be healed unseen.
    at = draw(st.integers(0, horizon - 1))
    duration: int | None = None
    # A restart is over once applied, so a duration would mean nothing.
    if kind != "restart":
        cap = max(1, min(horizon - at, int(horizon * profile.intensity.max_duration_frac)))
        # None first: held until the heal is the simplest shape.
        duration = draw(st.none() | st.integers(1, cap))
    return Step(
        at_s=at / 10,
        fault=fault(kind, target, **params),
        duration_s=None if duration is None else duration / 10,
    )


@st.composite
def _swizzle(draw: st.DrawFn, profile: FaultProfile, horizon_s: float) -> tuple[Step, Step]:
    """FoundationDB's swizzle-clogging on two backends: cut one, cut the other, restore in random order.

    The cuts come in a random order (primary first when shrunk); so do the restores, which are
    expressed as durations so both heal inside the fault phase. It always cuts both backends,
    whatever the profile's targets: the swizzle is a shape of its own, enabled by the profile.
    """
    horizon = _tenths(horizon_s)
    kinds = [k for k in SWIZZLE_KINDS if k in profile.kinds]
    order = list(BACKENDS)
    if draw(st.booleans()):
        order.reverse()
    cut1 = draw(st.integers(0, horizon - 4))
    cut2 = draw(st.integers(cut1 + 1, horizon - 3))
    heal1 = draw(st.integers(cut2 + 1, horizon - 1))
    heal2 = draw(st.integers(heal1 + 1, horizon))
    heals = [heal1, heal2]
    if draw(st.booleans()):
        heals.reverse()  # restore the first one cut last
    cuts = (cut1, cut2)
    steps = tuple(
        Step(at_s=cuts[i] / 10, fault=fault(draw(st.sampled_from(kinds)), order[i]),
             duration_s=(heals[i] - cuts[i]) / 10)
        for i in range(2)
    )  # fmt: skip
    return steps[0], steps[1]


def fault_plans(
    max_steps: int = 4,
    horizon_s: float = 6.0,
    kinds: Sequence[str] | None = None,
    *,
    include_balancer: bool = False,
    limits: Limits | None = None,
    keepalive: Keepalive | None = None,
) -> st.SearchStrategy[Scenario]:
    """Generated scenarios: a profile, then up to ``max_steps`` timed steps within ``horizon_s``.

    ``limits`` and ``keepalive`` default to the harness defaults, which the reused cluster already
    runs with: a plan that changed them would restart the balancer between examples.
    """
    vocabulary = _check_args(max_steps, horizon_s, kinds)
    return _plans(max_steps, horizon_s, vocabulary, include_balancer, limits or Limits(), keepalive or Keepalive())


@st.composite
def _plans(
    draw: st.DrawFn,
    max_steps: int,
    horizon_s: float,
    vocabulary: tuple[str, ...],
    include_balancer: bool,
    limits: Limits,
    keepalive: Keepalive,
) -> Scenario:
    profile = draw(_profiles(max_steps, horizon_s, vocabulary, include_balancer))
    steps: list[Step] = []
    if profile.swizzle:
        steps.extend(draw(_swizzle(profile, horizon_s)))
    extra = profile.density - len(steps)
    if extra > 0:
        steps.extend(draw(st.lists(_step(profile, horizon_s), min_size=extra, max_size=extra)))
    # Stable sort: equal at_s keep their drawn order, exactly as Scenario.from_dict orders them.
    steps.sort(key=lambda s: s.at_s)
    phases = Phases(faults_s=horizon_s)
    tags = ["generated", f"profile:{profile.family}", f"intensity:{profile.intensity.name}"]
    if profile.swizzle:
        tags.append("swizzle")
    return Scenario(
        name=_plan_name(steps),
        description=_describe(steps),
        limits=limits,
        keepalive=keepalive,
        steps=tuple(steps),
        phases=phases,
        expect=derive_expect(steps, limits=limits, keepalive=keepalive, fault_phase_s=horizon_s),
        invariants=INVARIANTS,  # every invariant, always: a generated plan never excuses one
        tags=tuple(tags),
    )


def _plan_name(steps: Sequence[Step]) -> str:
    # Content-derived, so a replayed or re-generated plan has the same name and run directory stem.
    text = repr([(s.at_s, s.fault.to_dict(), s.duration_s) for s in steps])
    return f"plan-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _describe(steps: Sequence[Step]) -> str:
    parts = []
    for s in steps:
        held = "until heal" if s.duration_s is None else f"for {s.duration_s:g}s"
        parts.append(f"@{s.at_s:g}s {s.fault.describe()} {held}")
    return "Generated: " + "; ".join(parts)


# -- what a correct build does ----------------------------------------------------------------

#: The balancer's close timeout on its upstream leg (the reference's default; the contract's 1 s).
CLOSE_TIMEOUT_S = 1.0
#: Slack for scheduling and the failover itself (connect, resume, resend, acknowledgement).
MARGIN_S = 2.0
#: A failover under latency costs about two round trips (open the upstream, then the acknowledged
#: resend), so latency counts twice against the deadline.
LATENCY_FACTOR = 2.0
#: How long one blocking nemesis action may hold up the schedule: the runner applies steps in one
#: thread, and a restart (or the timed heal of a kill/terminate) waits for the process to be ready.
BLOCKING_SLACK_S = 3.0


def latency_effect_s(f: Fault) -> float:
    """The worst extra round-trip time a latency fault adds, in seconds (0 for other kinds).

    Toxiproxy delays each chunk by latency ± jitter in each direction the toxic is on; a request
    and its reply cross both directions.
    """
    if f.kind != "latency":
        return 0.0
    one_way = (f.params["latency_ms"] + f.params["jitter_ms"]) / 1000.0
    return one_way * (2 if f.params["stream"] == "both" else 1)


def _latency_breaks_keepalive(f: Fault, keepalive: Keepalive) -> bool:
    # Half the ping timeout, not all of it: jitter, chunk scheduling in the proxy and a loaded CI
    # machine eat into the budget, and a spurious close code allowed is cheaper than a false alarm.
    return latency_effect_s(f) >= keepalive.ping_timeout_s / 2


def is_disruptive(f: Fault, keepalive: Keepalive | None = None) -> bool:
    """Whether ``f`` can end the connections through its target (and so cause a failover or drop).

    Process faults always can. Of link faults, partition (keepalive), down (closed and refused),
    reset_peer and limit_data (cut) can; latency can when it breaks the keepalive; bandwidth and
    slicer only slow or fragment traffic and never end a connection.
    """
    if f.kind in PROCESS_KINDS:
        return True
    if f.kind in _CUTTING_LINK_KINDS:
        return True
    return f.kind == "latency" and _latency_breaks_keepalive(f, keepalive or Keepalive())


@dataclass(frozen=True)
class _Window:
    step: Step
    start: float
    end: float


def _latest_schedule(steps: Sequence[Step], fault_phase_s: float) -> list[tuple[float, float]]:
    """For each step, the latest it can be applied and the latest it can be healed.

    The runner applies steps and timed heals in one thread, in planned order. A restart, and the
    timed heal of a kill or a terminate (which starts the process again), wait there until the
    process is ready, which holds up everything planned meanwhile; each such wait is taken to last
    at most :data:`BLOCKING_SLACK_S`. Faults held until the heal are healed once the fault phase
    and the whole agenda are over.
    """
    # (planned time, applies before heals at equal times as the runner's sequence numbers do, step)
    agenda: list[tuple[float, int, int]] = [(s.at_s, 0, i) for i, s in enumerate(steps)]
    agenda += [(s.at_s + s.duration_s, 1, i) for i, s in enumerate(steps) if s.duration_s is not None]
    agenda.sort()
    clock = 0.0
    applied: dict[int, float] = {}
    healed: dict[int, float] = {}
    for planned, is_heal, i in agenda:
        now = max(planned, clock)
        kind = steps[i].fault.kind
        if is_heal:
            healed[i] = now
            blocking = kind in ("kill", "terminate")
        else:
            applied[i] = now
            blocking = kind == "restart"
        if blocking:
            clock = now + BLOCKING_SLACK_S
    phase_end = max(fault_phase_s, clock)
    out = []
    for i, s in enumerate(steps):
        if s.fault.kind == "restart":
            end = applied[i] + BLOCKING_SLACK_S  # over once the process is back
        else:
            end = healed.get(i, phase_end)
        out.append((applied[i], end))
    return out


def _detect_s(f: Fault, keepalive: Keepalive) -> float:
    """How long after it is applied a fault can end a connection at the latest."""
    if f.kind in BLACKHOLE_KINDS or f.kind == "latency":
        # Silent: noticed by a failed keepalive, then the closing handshake is given up.
        return keepalive.ping_interval_s + keepalive.ping_timeout_s + CLOSE_TIMEOUT_S
    if f.kind == "reset_peer":
        return f.params["timeout_ms"] / 1000.0
    return 0.0  # limit_data acts whenever its byte budget runs out: _onsets handles it


def _onsets(steps: Sequence[Step], keepalive: Keepalive, fault_phase_s: float) -> list[_Window]:
    """When each step can first end connections: from ``at_s`` to the latest it can take effect.

    That is the latest it can be applied, plus a keepalive and a close timeout for a silent fault
    or the reset timeout for reset_peer; limit_data acts whenever its byte budget runs out, so at
    any time until it is healed.
    """
    out = []
    for s, (applied, healed) in zip(steps, _latest_schedule(steps, fault_phase_s), strict=True):
        latest = healed if s.fault.kind == "limit_data" else applied + _detect_s(s.fault, keepalive)
        out.append(_Window(s, s.at_s, latest))
    return out


def _lifetimes(steps: Sequence[Step], fault_phase_s: float) -> list[_Window]:
    """From ``at_s`` to the latest the step can be healed."""
    return [
        _Window(s, s.at_s, healed)
        for s, (_applied, healed) in zip(steps, _latest_schedule(steps, fault_phase_s), strict=True)
    ]


def _too_close(windows: Sequence[_Window], min_interval_s: float) -> bool:
    for i, a in enumerate(windows):
        for b in windows[i + 1 :]:
            gap = max(a.start, b.start) - min(a.end, b.end)
            if gap < min_interval_s:
                return True
    return False


def _most_in_window(windows: Sequence[_Window], window_s: float) -> int:
    # The count of windows meeting [t, t + window_s] peaks at some t equal to a window's start or end.
    best = 0
    for t in {w.start for w in windows} | {w.end for w in windows}:
        best = max(best, sum(1 for w in windows if w.start <= t + window_s and w.end >= t))
    return best


def _max_concurrent_latency(windows: Sequence[_Window]) -> float:
    # Stacked latency toxics add up. Any time t lies in some active window a, and every latency
    # window active at t overlaps a, so this bounds the largest sum in force at any moment.
    lat = [w for w in windows if w.step.fault.kind == "latency"]
    best = 0.0
    for a in lat:
        total = sum(latency_effect_s(b.step.fault) for b in lat if b.start <= a.end and b.end >= a.start)
        best = max(best, total)
    return best


def derive_expect(
    steps: Iterable[Step],
    *,
    limits: Limits | None = None,
    keepalive: Keepalive | None = None,
    fault_phase_s: float,
) -> Expect:
    """The close codes and deadlines a correct build shows under ``steps``.

    Close codes (what a client may see from the remote side):

    * **1013** (try again later) when the plan can legitimately leave a session without a
      failover. Judged conservatively, since a 1013 wrongly forbidden is a false alarm that
      shrinks to nonsense:

      - any fault on *both* backends (not only disruptive ones: a build may judge a slowed or
        throttled backend unhealthy by its own probe timeouts, which the contract does not fix);
      - two disruptive backend steps whose onsets come within ``limits.min_interval_s`` of each
        other;
      - more than ``limits.max_attempts`` disruptive backend steps whose onsets fit in one
        ``limits.window_s``.

      An onset spans from the step's ``at_s`` to the latest it can end a connection: a keepalive
      and a close timeout later for silent faults, the reset timeout for reset_peer, the heal for
      limit_data (its byte budget may run out at any time), all measured from the latest the step
      can be applied once blocking actions (restarts, timed heals of kills) have held up the
      runner's schedule (:data:`BLOCKING_SLACK_S` each). :func:`is_disruptive` says which steps
      count. Faults on ``lb`` or the balancer process start new sessions, which start with fresh
      limits, so they never count.

      On this two-backend topology the timing rules only add cases beyond "both backends" when
      ``max_attempts`` is 0: a failover never returns to the backend it left, so a session fails
      over twice only if both backends were hit. They are kept, as asked of a conservative
      oracle, so that a build whose policy differs (failing back, say) is not flagged for it.
    * **1006** and **1011** when a disruptive fault hits the ``lb`` link: the client's own
      connection is cut (no close frame: 1006) or the balancer's keepalive towards the client
      fails (1011). Bandwidth and slicer on ``lb`` allow nothing: slowing or fragmenting traffic
      must never cost a client its connection.
    * **1006** when the balancer is killed; **1001, 1006, 1011, 1012** when it is terminated or
      restarted (a graceful shutdown says 1001 or 1012, an aborted one drops with 1006, sessions
      failing during shutdown may say 1011).

    ``failover_deadline_s`` is the longest a connected client with outstanding moves may wait:

    * the base is ``ping_interval + ping_timeout + close timeout (1 s) + 2 s margin``: the time to
      notice a silent backend, give up its closing handshake, fail over and be acknowledged;
    * plus ``LATENCY_FACTOR`` times the largest latency in force at once (all links' latency toxics
      that can overlap, summed), so the deadline always exceeds the largest latency effect;
    * plus the longest blackhole (partition or pause) when one can hold a client for as long as it
      lasts, which a correct build cannot prevent: a partition on ``lb`` (the client has no
      keepalive of its own and cannot hear the balancer give up), or a blackholed backend in a plan
      that also touches the other backend or drops client connections (a failover or a fresh
      session may pick the blackholed backend and wait for its open timeout). A blackholed backend
      alone does *not* extend it: noticing that within the base is exactly what is being judged.

    ``recovery_deadline_s`` keeps its default: after the heal nothing is faulted any more.
    """
    steps = list(steps)
    limits = limits or Limits()
    keepalive = keepalive or Keepalive()
    codes: set[int] = set()

    on = {t: [s for s in steps if s.fault.target == t] for t in ("lb", "balancer", *BACKENDS)}
    both_backends = bool(on["primary"] and on["secondary"])
    if both_backends:
        codes.add(1013)
    backend_disruptions = [
        w
        for w in _onsets(steps, keepalive, fault_phase_s)
        if w.step.fault.target in BACKENDS and is_disruptive(w.step.fault, keepalive)
    ]
    if _too_close(backend_disruptions, limits.min_interval_s):
        codes.add(1013)
    if _most_in_window(backend_disruptions, limits.window_s) > limits.max_attempts:
        codes.add(1013)

    lb_disruptive = [s for s in on["lb"] if is_disruptive(s.fault, keepalive)]
    if lb_disruptive:
        codes.update((1006, 1011))
    for s in on["balancer"]:
        codes.add(1006)
        if s.fault.kind in ("terminate", "restart"):
            codes.update((1001, 1011, 1012))

    deadline = keepalive.ping_interval_s + keepalive.ping_timeout_s + CLOSE_TIMEOUT_S + MARGIN_S
    lifetimes = _lifetimes(steps, fault_phase_s)
    deadline += LATENCY_FACTOR * _max_concurrent_latency(lifetimes)
    blackholes = [w for w in lifetimes if w.step.fault.kind in BLACKHOLE_KINDS]
    lb_blackhole = any(w.step.fault.target == "lb" for w in blackholes)
    backend_blackhole = any(w.step.fault.target in BACKENDS for w in blackholes)
    drops_clients = bool(lb_disruptive or on["balancer"])
    if lb_blackhole or (backend_blackhole and (both_backends or drops_clients)):
        deadline += max(w.end - w.start for w in blackholes)
    return Expect(close_codes=tuple(sorted(codes)), failover_deadline_s=math.ceil(deadline * 10) / 10)


# -- statistics -------------------------------------------------------------------------------


def note_plan_events(scenario: Scenario) -> None:
    """Record Hypothesis events for ``scenario``: fault kinds, targets, profile, shape.

    ``hypothesis.event`` only works inside a test (it raises InvalidArgument elsewhere), so this is
    called from the chaos test's body, after the plan has run; outside a Hypothesis test (a replay
    with ``--chaos-replay``, say) it does nothing.
    """
    if not currently_in_test_context():
        return
    for s in scenario.steps:
        event(f"fault:{s.fault.kind}")
        event(f"target:{s.fault.target}")
    for tag in scenario.tags:
        if tag.startswith(("profile:", "intensity:")):
            event(tag)
    event(f"steps:{len(scenario.steps)}")
    for code in scenario.expect.close_codes:
        event(f"expect:{code}")
