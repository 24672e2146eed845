"""What a correct build does under a plan: the expectation derived from its steps.

Pure: it reads each step's kind from the registry (:mod:`harness.faults`: disruptive or not, how
soon it is noticed, how much latency it adds) and the runner's schedule from
:func:`harness.schedule.latest_times`, which predicts from the very agenda the runner executes.
Generated plans carry :func:`derive_expect`; named scenarios hand-write an ``expect`` that
tests/harness/test_expectations.py checks against it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.faults import Fault, keepalive_detect_s
from harness.recovery import RecoveryGoals
from harness.scenario import Expect, Keepalive, Limits, Scenario, Step
from harness.schedule import latest_times

__all__ = [
    "LATENCY_FACTOR",
    "MARGIN_S",
    "MASS_FAILOVER_BASE_CLIENTS",
    "REHOMES_PER_S",
    "derive_expect",
    "expect_for",
    "is_disruptive",
    "latency_effect_s",
    "predicted_untouched",
    "recovery_goals_for",
]

BACKENDS = ("primary", "secondary")
#: So many clients dropped at once are a herd (harness.analysis.HERD_MIN_CLIENTS, which the
#: herd_recovered checker uses; kept equal by tests/harness/test_expectations.py).
HERD_CLIENTS = 100
#: Slack for scheduling and the failover itself (connect, resume, resend, acknowledgement).
MARGIN_S = 2.0
#: A failover under latency costs about two round trips (open the upstream, then the acknowledged
#: resend), so latency counts twice against the deadline.
LATENCY_FACTOR = 2.0
#: MARGIN_S covers the failovers of this many sessions at once (reconnect_storm's 200 fit in it).
MASS_FAILOVER_BASE_CLIENTS = 200
#: Sessions the reference balancer re-homes per second when a backend dies under all of them,
#: measured with mass_failover on the shared 2-core machine (load average 8, slowness x1.4-1.6):
#: 2,000 sessions on the primary, SIGKILL, every one welcomed by the secondary in place after
#: 12.3 s (p50) and 23.9 s (p99 and max), none closed: 2,000 / 23.9 s = 84 a second.
REHOMES_PER_S = 80.0


def latency_effect_s(f: Fault) -> float:
    """The worst extra round-trip time ``f`` adds, in seconds (0 for kinds that add none)."""
    return f.spec.latency_s(f)


def is_disruptive(f: Fault, keepalive: Keepalive | None = None) -> bool:
    """Whether ``f`` can end the connections through its target (and so cause a failover or drop).

    Process faults always can. Of link faults, partition (keepalive), down (closed and refused),
    reset_peer and limit_data (cut) can; latency can when it breaks the keepalive; bandwidth and
    slicer only slow or fragment traffic and never end a connection. Each kind says so itself.
    """
    return f.spec.is_disruptive(f, keepalive or Keepalive())


@dataclass(frozen=True)
class _Window:
    step: Step
    start: float
    end: float


def _onsets(steps: Sequence[Step], keepalive: Keepalive, fault_phase_s: float) -> list[_Window]:
    """When each step can first end connections: from ``at_s`` to the latest it can take effect.

    That is the latest it can be applied plus the kind's detection time (a keepalive and a close
    timeout for a silent fault, the reset timeout for reset_peer); a kind that acts at any time
    while in place (limit_data) until the latest it is healed; a triggered toxic, which may first
    act at any time while in place, the latest heal plus the detection time.
    """
    out = []
    for w in latest_times(steps, fault_phase_s):
        f = w.step.fault
        detect = f.spec.detect_s(f, keepalive)
        # A toxic triggered per connection (after its upgrade, after N frames) starts acting on a
        # connection whenever that connection qualifies, which can be as late as its heal.
        acts_from = w.healed if f.trigger is not None else w.applied
        latest = w.healed if math.isinf(detect) else acts_from + detect
        out.append(_Window(w.step, w.step.at_s, latest))
    return out


def _lifetimes(steps: Sequence[Step], fault_phase_s: float) -> list[_Window]:
    """From ``at_s`` to the latest the step can be healed."""
    return [_Window(w.step, w.step.at_s, w.healed) for w in latest_times(steps, fault_phase_s)]


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
    lat = [w for w in windows if latency_effect_s(w.step.fault) > 0]
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
    clients: int = 0,
) -> Expect:
    """The close codes and deadlines a correct build shows under ``steps`` for ``clients`` clients.

    Close codes (what a client may see from the remote side):

    * **1013** (try again later) when the plan can legitimately leave a session without a
      failover. Judged conservatively, since a 1013 wrongly forbidden is a false alarm that
      shrinks to nonsense:

      - any fault on *both* backends (not only disruptive ones: a build may judge a slowed or
        throttled backend unhealthy by its own probe timeouts, which the contract does not fix);
      - two disruptive backend steps whose onsets come within ``limits.min_interval_s`` of each
        other;
      - more than ``limits.max_attempts`` disruptive backend steps whose onsets fit in one
        ``limits.window_s``;
      - a herd: a fault on ``lb`` or the balancer that drops ``HERD_CLIENTS`` clients or more,
        who then all reconnect at once; shedding them with 1013 is what a correct build may do.

      An onset spans from the step's ``at_s`` to the latest it can end a connection: the kind's
      detection time (:meth:`~harness.faults.FaultKind.detect_s`) after the latest it can be
      applied, once blocking actions (restarts, timed heals of kills) have held up the runner's
      schedule (:func:`harness.schedule.latest_times`). :func:`is_disruptive` says which steps
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
    * What the kind says for a fault on the balancer process: **1006** when it is killed; **1001,
      1006, 1011, 1012** when it is terminated or restarted (a graceful shutdown says 1001 or
      1012, an aborted one drops with 1006, sessions failing during shutdown may say 1011).
    * What the kind says for a link fault: a client's protocol error on ``lb`` allows only the
      code RFC 6455 gives it (1002, 1007 or 1009); the other link kinds say nothing (a backend's
      protocol error is a lost upstream like any other: the client must not notice).

    ``failover_deadline_s`` is the longest a connected client with outstanding moves may wait:

    * the base is ``ping_interval + ping_timeout + close timeout (1 s) + 2 s margin``: the time to
      notice a silent backend, give up its closing handshake, fail over and be acknowledged;
    * plus ``LATENCY_FACTOR`` times the largest latency in force at once (all links' latency toxics
      that can overlap, summed), so the deadline always exceeds the largest latency effect;
    * plus the longest blackhole (a kind with ``blackhole`` set: partition, pause) when one can
      hold a client for as long as it lasts, which a correct build cannot prevent: a blackhole on
      ``lb`` (the client has no keepalive of its own and cannot hear the balancer give up), or a
      blackholed backend in a plan that also touches the other backend or drops client
      connections (a failover or a fresh session may pick the blackholed backend and wait for its
      open timeout). A blackholed backend alone does *not* extend it: noticing that within the
      base is exactly what is being judged.

    * plus, when a backend disruption moves more than ``MASS_FAILOVER_BASE_CLIENTS`` sessions at
      once, the time to re-home the rest at the measured ``REHOMES_PER_S``: thousands of sessions
      each need a new upstream (a handshake through a proxy), and the last waits for all before it.

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
    for s in steps:
        if s.fault.target == "balancer" or not s.fault.is_process_fault:
            codes.update(s.fault.spec.balancer_close_codes(s.fault))

    deadline = keepalive_detect_s(keepalive) + MARGIN_S
    lifetimes = _lifetimes(steps, fault_phase_s)
    deadline += LATENCY_FACTOR * _max_concurrent_latency(lifetimes)
    blackholes = [w for w in lifetimes if w.step.fault.spec.blackhole]
    lb_blackhole = any(w.step.fault.target == "lb" for w in blackholes)
    backend_blackhole = any(w.step.fault.target in BACKENDS for w in blackholes)
    drops_clients = bool(lb_disruptive or on["balancer"])
    if drops_clients and clients >= HERD_CLIENTS:
        # A herd: that many clients reconnect at once, and a build may shed what it cannot take
        # yet with 1013 (or 503 on the handshake), which herd_recovered judges.
        codes.add(1013)
    if lb_blackhole or (backend_blackhole and (both_backends or drops_clients)):
        deadline += max(w.end - w.start for w in blackholes)
    if backend_disruptions and clients > MASS_FAILOVER_BASE_CLIENTS:
        deadline += (clients - MASS_FAILOVER_BASE_CLIENTS) / REHOMES_PER_S
    return Expect(close_codes=tuple(sorted(codes)), failover_deadline_s=math.ceil(deadline * 10) / 10)


def expect_for(scenario: Scenario) -> Expect:
    """The expectation derived for a whole scenario, from its steps, limits and keepalive."""
    return derive_expect(
        scenario.steps,
        limits=scenario.limits,
        keepalive=scenario.keepalive,
        fault_phase_s=scenario.fault_phase_s,
        clients=scenario.workload.clients,
    )


def predicted_untouched(steps: Sequence[Step], keepalive: Keepalive, fault_phase_s: float) -> list[tuple[int, str]]:
    """The disruptive steps predicted to touch nothing, each with why: ``(index, reason)``.

    A run with such a step is inconclusive (harness.outcome), so a generator that draws it has
    spent a run on nothing. Two ways a plan gets there:

    * a process fault on a process that an earlier kill or terminate holds down (from its apply
      until the latest its heal can come, :func:`harness.schedule.latest_times`): there is no
      process to signal;
    * a link fault on a link that an earlier step still cuts off (partition, down): nothing
      crosses it to be touched;
    * a link fault on a backend link that carries no session while it is in force. Sessions start
      on the primary; a disruptive step on the backend they are on sends them to the other one; a
      disruptive step on the ``lb`` link or the balancer makes the clients reconnect, and where
      they land then is not predicted. A link step is counted as landing only where the sessions
      are known to be: on the link they are on when it is applied, or (for a step held until it
      could meet them) on the secondary when a disruptive primary step comes while it is in force.

    Deliberately conservative: it may call a landing step untouched (the generator then draws
    another plan, which costs nothing), but the plans it lets through land.
    """
    windows = latest_times(steps, fault_phase_s)
    order = sorted(range(len(steps)), key=lambda i: (steps[i].at_s, i))  # the agenda's apply order
    located: str | None = "primary"  # where the sessions are; None once unknown
    untouched: list[tuple[int, str]] = []
    for rank, i in enumerate(order):
        f = steps[i].fault
        at = steps[i].at_s
        disruptive = is_disruptive(f, keepalive)
        if not disruptive:
            continue
        cut_off = any(
            steps[j].fault.spec.swizzles and steps[j].fault.target == f.target and at <= windows[j].healed
            for j in order[:rank]
        )
        if f.spec.family == "link" and cut_off:
            untouched.append((i, f"the {f.target} link is cut off by an earlier step: no traffic crosses it"))
        elif f.spec.family == "process":
            held_down = any(
                steps[j].fault.spec.stops_process and steps[j].fault.target == f.target and at <= windows[j].healed
                for j in order[:rank]
            )
            if held_down:
                untouched.append((i, f"the {f.target} process is held down by an earlier kill or terminate"))
        elif f.target in BACKENDS and located != f.target:
            meets = (
                f.target == "secondary"
                and located == "primary"
                and any(
                    steps[j].fault.target == "primary"
                    and is_disruptive(steps[j].fault, keepalive)
                    and at <= steps[j].at_s < windows[i].healed
                    for j in order[rank + 1 :]
                )
            )
            if not meets:
                where = "somewhere unpredictable" if located is None else f"on the {located}"
                untouched.append((i, f"the {f.target} link carries no session then (they are {where})"))
        if f.target in BACKENDS:
            if located == f.target:
                located = "secondary" if f.target == "primary" else "primary"
        else:
            located = None
    return untouched


def recovery_goals_for(scenario: Scenario) -> RecoveryGoals:
    """The recovery goals a correct build meets under a scenario: the loosest a named scenario may
    not undercut (tests/harness/test_expectations.py), so a goal is never a guess tighter than
    what the expectation promises.

    * Time to recover (p50, p99, max) and the longest gap in play: the derived
      ``failover_deadline_s`` (how long a client with an outstanding move may wait for its
      acknowledgement) plus one move interval, because recovery is timed from the last
      acknowledgement, and the oldest move waiting was sent up to one interval after it.
    * Lost: none. The client re-sends every unacknowledged move on its next welcome, so under a
      correct build every move is taken by some server.
    """
    bound = expect_for(scenario).failover_deadline_s + 1.0 / scenario.workload.rate_hz
    bound = math.ceil(bound * 10 - 1e-9) / 10
    return RecoveryGoals(p50_recover_s=bound, p99_recover_s=bound, max_recover_s=bound, longest_gap_s=bound, max_lost=0)
