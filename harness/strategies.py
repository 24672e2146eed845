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

Every generated :class:`~harness.scenario.Scenario` carries an ``expect`` derived from its steps
by :func:`harness.expectations.derive_expect` (the rules are documented there), so a correct build
passes every generated plan and a failure is a finding, not noise. Each kind draws its own
parameters (:meth:`harness.faults.FaultKind.params_strategy`).

The vocabulary. Every kind of :data:`harness.faults.KINDS` is enabled by default, except those that
say ``generated = False`` (idle_timeout: it forgets a flow for good when another fault on the link
silences it first, which no window-based expectation predicts); they are drawn only when ``kinds``
names them. The other exclusion is *pause on the balancer*: a paused balancer hangs every client
past any deadline, which is the expected behaviour of a frozen proxy, not a finding. The balancer
process is left out of the targets entirely unless ``include_balancer=True`` (it then gets
``kill``, ``terminate`` and ``restart``), because restarting it resets every session and so masks
the failover behaviour that generated plans are mostly meant to probe; the named scenario
``balancer_restart`` covers it. Every other kind stays on every target it has, ``lb`` included:
cut, reset, throttled and blackholed client links exercise reconnects and half-open connections,
which are among the real proxy failures worth finding, and :func:`derive_expect` allows the close
codes they legitimately cause. What keeps such plans fast and predictable is the parameter bounds
(:data:`BOUNDS`), not a smaller vocabulary.

Aimed steps. With ``aimed=True`` a step of a kind that can be aimed (:attr:`FaultKind.aimable`:
toxics of the embedded Toxiproxy) may carry an :class:`~harness.toxiproxy.extensions.Aim` drawn by
:func:`aims` (the first N connections, a seeded fraction of clients, or named clients) and a
trigger (act on each connection only after its WebSocket upgrade). Unaimed and untriggered come
first, so a failing aimed plan shrinks to the same plan hitting every connection when that fails
too.

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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import assume, event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from harness.expectations import derive_expect, predicted_untouched
from harness.faults import KINDS, PROCESS_KINDS, fault
from harness.scenario import INVARIANTS, Keepalive, Limits, Phases, Scenario, Step, workload_for
from harness.toxiproxy.extensions import Aim, Trigger

__all__ = [
    "BALANCER_PROCESS_KINDS",
    "BOUNDS",
    "DEFAULT_KINDS",
    "INTENSITIES",
    "Bounds",
    "FaultProfile",
    "Intensity",
    "aims",
    "fault_plans",
    "fault_profiles",
    "note_plan_events",
]

# -- the vocabulary ---------------------------------------------------------------------------

DEFAULT_KINDS: tuple[str, ...] = tuple(k for k, v in KINDS.items() if v.generated)
BACKENDS = ("primary", "secondary")
#: Process faults the balancer may get. Not pause: see the module docstring.
BALANCER_PROCESS_KINDS = tuple(k for k, v in KINDS.items() if v.family == "process" and v.on_balancer_in_plans)
#: Kinds that cut a backend off; the swizzle uses these.
SWIZZLE_KINDS = tuple(k for k, v in KINDS.items() if v.swizzles)
#: Kinds that end a backend's connections the moment they are applied (no keepalive to wait for),
#: so a failover happens when the plan says: the "limits" shape spaces its cuts with these.
LIMIT_PROBE_KINDS = ("down", "reset_peer")


@dataclass(frozen=True)
class Bounds:
    """Parameter bounds that keep a generated run fast and its expectations predictable."""

    max_latency_ms: int = 400
    min_rate_kbps: int = 32
    max_rate_kbps: int = 1024
    max_reset_timeout_ms: int = 500
    # A game connection carries a few hundred bytes a second (compressed moves and acks), so a
    # limit above this would often never be reached inside a fault window and touch nothing.
    min_limit_bytes: int = 64
    max_limit_bytes: int = 512
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
              min_limit_bytes=384, min_slice_avg=32),
    Intensity("moderate", max_latency_ms=250, max_duration_frac=0.5, min_rate_kbps=96,
              min_limit_bytes=192, min_slice_avg=8),
    Intensity("harsh", max_latency_ms=BOUNDS.max_latency_ms, max_duration_frac=1.0,
              min_rate_kbps=BOUNDS.min_rate_kbps, min_limit_bytes=BOUNDS.min_limit_bytes,
              min_slice_avg=BOUNDS.min_slice_avg),
)  # fmt: skip


def _targets_for(kind: str, include_balancer: bool) -> tuple[str, ...]:
    targets = KINDS[kind].targets
    if kind in BALANCER_PROCESS_KINDS and include_balancer:
        return targets
    return tuple(t for t in targets if t != "balancer")


def aims(client_ids: Sequence[str] = (), max_first: int = 4) -> st.SearchStrategy[Aim]:
    """Which connections an aimed step hits: the first N, a seeded fraction, or some of ``client_ids``.

    Shrinks towards the first connection alone; fractions are whole tenths and seeds small, so a
    shrunk aim reads well and survives the JSON round trip exactly.
    """
    if max_first < 1:
        raise ValueError(f"max_first: must be >= 1, got {max_first}")
    choices: list[st.SearchStrategy[Aim]] = [
        st.builds(lambda n: Aim(first=n), st.integers(1, max_first)),
        st.builds(lambda tenths, seed: Aim(fraction=tenths / 10, seed=seed), st.integers(1, 9), st.integers(0, 999)),
    ]
    ids = tuple(dict.fromkeys(client_ids))
    if ids:
        subsets = st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids), unique=True)
        choices.append(st.builds(lambda chosen: Aim(clients=tuple(chosen)), subsets))
    return st.one_of(choices)


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
    #: Steps of aimable kinds may carry an aim (:func:`aims`) at these clients' connections.
    aimed: bool = False
    aim_clients: tuple[str, ...] = ()

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
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise ValueError(f"kinds: unknown fault kind(s) {', '.join(unknown)} (known: {', '.join(KINDS)})")
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
    # with a dozen kinds and a handful of steps, coin flips alone would almost never give a plan of
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


def _params(kind: str, intensity: Intensity) -> st.SearchStrategy[dict[str, Any]]:
    """Parameters for ``kind``, within BOUNDS and the intensity: the kind draws its own."""
    return KINDS[kind].params_strategy(intensity, BOUNDS)


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
    # A kind that is over once applied (restart) has nothing to heal, so a duration would mean nothing.
    if KINDS[kind].healable:
        cap = max(1, min(horizon - at, int(horizon * profile.intensity.max_duration_frac)))
        # None first: held until the heal is the simplest shape.
        duration = draw(st.none() | st.integers(1, cap))
    chosen = fault(kind, target, **params)
    if profile.aimed and KINDS[kind].aimable:
        aim = draw(st.none() | aims(profile.aim_clients))
        trigger = draw(st.none() | st.just(Trigger("upgrade")))
        chosen = replace(chosen, aim=aim, trigger=trigger)
    return Step(
        at_s=at / 10,
        fault=chosen,
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
    aimed: bool = False,
    aim_clients: Sequence[str] = (),
) -> st.SearchStrategy[Scenario]:
    """Generated scenarios: a profile, then up to ``max_steps`` timed steps within ``horizon_s``.

    ``limits`` and ``keepalive`` default to the harness defaults, which the reused cluster already
    runs with: a plan that changed them would restart the balancer between examples.

    ``aimed`` lets steps aim at some client connections (module doc), named ones from ``aim_clients``;
    such plans need the embedded Toxiproxy (a real one refuses them).
    """
    vocabulary = _check_args(max_steps, horizon_s, kinds)
    return _plans(
        max_steps, horizon_s, vocabulary, include_balancer, limits or Limits(), keepalive or Keepalive(),
        aimed, tuple(aim_clients),
    )  # fmt: skip


@st.composite
def _plans(
    draw: st.DrawFn,
    max_steps: int,
    horizon_s: float,
    vocabulary: tuple[str, ...],
    include_balancer: bool,
    limits: Limits,
    keepalive: Keepalive,
    aimed: bool = False,
    aim_clients: tuple[str, ...] = (),
) -> Scenario:
    probe_kinds = tuple(k for k in LIMIT_PROBE_KINDS if k in vocabulary)
    # One plan in four (shrinking towards the usual shape) probes the failover limits instead.
    if probe_kinds and max_steps >= limits.max_attempts + 1 and draw(st.integers(0, 3)) == 3:
        probe = draw(_limit_probe(limits, horizon_s, probe_kinds))
        return _scenario(probe, ["generated", "profile:limits"], horizon_s, limits, keepalive)
    profile = draw(_profiles(max_steps, horizon_s, vocabulary, include_balancer))
    if aimed:
        profile = replace(profile, aimed=True, aim_clients=aim_clients)
    steps: list[Step] = []
    if profile.swizzle:
        steps.extend(draw(_swizzle(profile, horizon_s)))
    extra = profile.density - len(steps)
    if extra > 0:
        steps.extend(draw(st.lists(_step(profile, horizon_s), min_size=extra, max_size=extra)))
    # Stable sort: equal at_s keep their drawn order, exactly as Scenario.from_dict orders them.
    steps.sort(key=lambda s: s.at_s)
    # A plan whose disruptive step would touch nothing can only end inconclusive: a run spent on
    # nothing. Rejected here, where drawing another costs microseconds instead of seconds.
    assume(not predicted_untouched(steps, keepalive, horizon_s))
    tags = ["generated", f"profile:{profile.family}", f"intensity:{profile.intensity.name}"]
    if profile.swizzle:
        tags.append("swizzle")
    return _scenario(steps, tags, horizon_s, limits, keepalive)


def _scenario(steps: list[Step], tags: list[str], horizon_s: float, limits: Limits, keepalive: Keepalive) -> Scenario:
    return Scenario(
        name=_plan_name(steps),
        description=_describe(steps),
        workload=workload_for(steps),
        limits=limits,
        keepalive=keepalive,
        steps=tuple(steps),
        phases=Phases(faults_s=horizon_s),
        expect=derive_expect(steps, limits=limits, keepalive=keepalive, fault_phase_s=horizon_s),
        invariants=INVARIANTS,  # every invariant, always: a generated plan never excuses one
        tags=tuple(tags),
    )


@st.composite
def _limit_probe(draw: st.DrawFn, limits: Limits, horizon_s: float, kinds: tuple[str, ...]) -> list[Step]:
    """The "limits" shape: the sessions driven to their failover limit, and one cut past it.

    ``max_attempts`` or ``max_attempts + 1`` cuts, alternating primary and secondary so that each
    one moves the sessions, spaced around ``min_interval_s`` (from 0.2 s under it to 0.4 s over,
    in tenths) and all inside one ``window_s``. Each cut heals before the next, so only the limits
    decide whether a failover is allowed: the checkers judge both sides (``reconnect_limits`` that
    nothing past a limit was allowed, ``refusals_justified`` that nothing within them was refused).
    Shrinks towards exactly ``max_attempts`` cuts, each just under the minimum interval.
    """
    interval = round(limits.min_interval_s * 10)
    cuts = draw(st.integers(limits.max_attempts, limits.max_attempts + 1))
    at = draw(st.integers(0, 5))
    steps: list[Step] = []
    for n in range(cuts):
        gap = draw(st.integers(max(1, interval - 2), interval + 4))
        duration = draw(st.integers(1, max(1, gap - 1)))
        kind = draw(st.sampled_from(kinds))
        steps.append(Step(at_s=at / 10, fault=fault(kind, BACKENDS[n % 2]), duration_s=duration / 10))
        at += gap
    span = steps[-1].at_s - steps[0].at_s
    assume(steps[-1].at_s + (steps[-1].duration_s or 0.0) <= horizon_s and span < limits.window_s)
    return steps


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
        if s.fault.aim is not None:
            event(f"aim:{next(iter(s.fault.aim.to_json()))}")
    for tag in scenario.tags:
        if tag.startswith(("profile:", "intensity:")):
            event(tag)
    event(f"steps:{len(scenario.steps)}")
    for code in scenario.expect.close_codes:
        event(f"expect:{code}")
