"""Recovery measured: how long clients took to play again after a disruption, and at what cost.

Pure: records in, figures out (no I/O, no clock). The figures go into the certificate
(:class:`harness.records.RecoveryFigures`, one per scenario), JUnit properties and report.html;
a scenario's ``expect.recovery`` sets goals on them (:class:`RecoveryGoals`), which the
``recovery_goals`` checker judges. docs/verdicts.md ("Recovery figures") describes them for users.

The definitions, each stated once here:

* A client is **disrupted** when its play is interrupted by the connection or the server it plays
  on: its connection is closed by the remote side (``conn_close`` not initiated by the client), a
  connect attempt fails (``conn_fail``), or a second ``welcome`` arrives on one connection (the
  balancer moved it in place to another upstream). A client's own close (when it stops) is not a
  disruption. A disruption before the client's first acknowledged move has nothing to recover.
* Its **time to recover** runs from the last acknowledged move before the disruption (the last
  successful round trip: the moment the player's game stalled, which includes the time the build
  took to notice the fault) to the next acknowledged move. Disruptions with no acknowledgement in
  between (a reconnect that fails, then another) are one episode. An episode never followed by an
  acknowledgement is **unrecovered**; its time is counted until the client stopped (or the run
  ended), a lower bound, so a client that never came back weighs on the percentiles.
  p50 / p99 / max are nearest-rank percentiles over all episodes of all clients.
* A **reconnect** is a client connection attempt (``conn_open`` or ``conn_fail``) other than the
  client's first. An **upstream connect** is a game connection a backend accepted (journal
  ``open``). Both peaks are the most events in any 1 s sliding window, counted from the end of the
  warm-up (the whole run when its phases are unknown), so the clients' first connections do not
  pass for a storm.
* **Re-sent**: move sends with ``attempt`` > 1.
* **Lost**: moves a client sent (``invoke move``) that no server took: the client never got an
  acknowledgement for it, and no backend journal records receiving it in order (``recv`` of that
  client's seq, applied or a duplicate). A move a server took just before it died counts as taken:
  whether its effect survived is ``state_continuity``'s question.
* The **longest gap in play**: the longest time between two consecutive acknowledged moves of one
  client, or from an unrecovered episode's start to the client's stop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from harness.analysis import client_histories, run_end_time
from harness.records import RecoveryFigures, integer, is_op, mapping, num, time_of

if TYPE_CHECKING:
    from harness.history import Run

#: The window the reconnect and upstream-connect peaks are counted in.
RATE_WINDOW_S = 1.0
#: How many lost moves a figure names by client and seq; the count is always complete.
LOST_EXAMPLES = 10


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile ``q`` (0 < q <= 1) of ``values``; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


# -- episodes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryEpisode:
    """One client's stall from a disruption: from its last acknowledged move before it (``start``)
    to its next acknowledged move (``end``), or to its stop when it never had one."""

    client: str
    start: float
    disrupted_at: float
    end: float
    recovered: bool
    #: What interrupted play, first disruption first ("closed remotely with 1006", …).
    causes: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end - self.start)

    def to_evidence(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "last_ack_before": self.start,
            "disrupted_at": self.disrupted_at,
            "next_ack" if self.recovered else "stopped_unrecovered": self.end,
            "recover_s": round(self.duration_s, 3),
            "causes": list(self.causes),
        }


def _disruption(rec: Mapping[str, Any], welcomes_in_conn: dict[Any, int]) -> str | None:
    """What a record says interrupted play, or None (it is no disruption)."""
    if rec.get("type") != "event":
        return None
    f = rec.get("f")
    if f == "conn_close" and rec.get("initiator") != "client":
        return f"conn {rec.get('conn')} closed remotely with {rec.get('code')}"
    if f == "conn_fail":
        return f"connect failed: {str(rec.get('error') or '?')[:120]}"
    if f == "welcome":
        conn = rec.get("conn")
        welcomes_in_conn[conn] = welcomes_in_conn.get(conn, 0) + 1
        if welcomes_in_conn[conn] > 1:
            return f"moved in place to {rec.get('server')} on conn {conn}"
    return None


def recovery_episodes(
    client: str, client_records: Iterable[Mapping[str, Any]], run_end: float
) -> list[RecoveryEpisode]:
    """One client's recovery episodes; ``client_records`` in time order (analysis.client_histories)."""
    out: list[RecoveryEpisode] = []
    welcomes_in_conn: dict[Any, int] = {}
    last_ack: float | None = None
    opened: tuple[float, float, list[str]] | None = None  # start, disrupted_at, causes
    stopped_at: float | None = None
    for rec in client_records:
        t = time_of(rec)
        if t is None:
            continue
        if is_op(rec, "ok", "move"):
            if opened is not None:
                out.append(RecoveryEpisode(client, opened[0], opened[1], t, True, tuple(opened[2])))
                opened = None
            last_ack = t
            continue
        if is_op(rec, "event", "stopped"):
            stopped_at = t if stopped_at is None else stopped_at
            continue
        cause = _disruption(rec, welcomes_in_conn)
        if cause is None or last_ack is None:
            continue
        if opened is None:
            opened = (last_ack, t, [cause])
        else:
            opened[2].append(cause)
    if opened is not None:
        end = stopped_at if stopped_at is not None and stopped_at >= opened[1] else run_end
        out.append(RecoveryEpisode(client, opened[0], opened[1], max(end, opened[1]), False, tuple(opened[2])))
    return out


# -- gaps, rates, re-sends, losses ----------------------------------------------------------------


@dataclass(frozen=True)
class PlayGap:
    client: str
    start: float
    end: float

    @property
    def duration_s(self) -> float:
        return self.end - self.start


def longest_gap(
    histories: Mapping[str, Sequence[Mapping[str, Any]]], episodes: Iterable[RecoveryEpisode]
) -> PlayGap | None:
    """The longest time between two consecutive acknowledged moves of one client, or from an
    unrecovered episode's start to its end; None when no client had two acks and none stalled."""
    best: PlayGap | None = None
    for client, recs in histories.items():
        previous: float | None = None
        for rec in recs:
            t = time_of(rec)
            if t is None or not is_op(rec, "ok", "move"):
                continue
            if previous is not None and (best is None or t - previous > best.duration_s):
                best = PlayGap(client, previous, t)
            previous = t
    for ep in episodes:
        if not ep.recovered and (best is None or ep.duration_s > best.duration_s):
            best = PlayGap(ep.client, ep.start, ep.end)
    return best


def peak_rate(times: Iterable[float], window_s: float = RATE_WINDOW_S) -> tuple[int, float | None]:
    """The most events in any half-open window ``[t, t + window_s)``, and the earliest such ``t``
    (an event's time); ``(0, None)`` for no events."""
    ordered = sorted(times)
    best, best_at, lo = 0, None, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window_s:
            lo += 1
        if hi - lo + 1 > best:
            best, best_at = hi - lo + 1, ordered[lo]
    return best, best_at


def reconnect_times(histories: Mapping[str, Sequence[Mapping[str, Any]]], since: float) -> list[float]:
    """When clients attempted a connection other than their first, at or after ``since``."""
    out: list[float] = []
    for recs in histories.values():
        attempts = [t for r in recs if r.get("f") in ("conn_open", "conn_fail") and (t := time_of(r)) is not None]
        out.extend(t for t in attempts[1:] if t >= since)
    return out


def upstream_connect_times(journals: Mapping[str, Iterable[Any]], since: float) -> list[float]:
    """When the backends accepted a game connection, at or after ``since``."""
    return [
        t
        for journal in journals.values()
        for r in journal
        if isinstance(r, Mapping) and r.get("event") == "open" and (t := time_of(r)) is not None and t >= since
    ]


def resent_count(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
    return sum(
        1
        for recs in histories.values()
        for r in recs
        if is_op(r, "invoke", "move") and (integer(r.get("attempt")) or 1) > 1
    )


def lost_moves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]], journals: Mapping[str, Iterable[Any]]
) -> list[tuple[str, int]]:
    """(client, seq) of every move a client sent that no server took (see the module docstring)."""
    taken: set[tuple[str, int]] = set()
    for journal in journals.values():
        for r in journal:
            if not isinstance(r, Mapping) or r.get("event") != "recv" or r.get("kind") != "move" or r.get("error"):
                continue
            seq = integer(r.get("seq"))
            if seq is not None and r.get("result") != "gap":
                taken.add((str(r.get("client")), seq))
    lost: list[tuple[str, int]] = []
    for client, recs in histories.items():
        sent = {s for r in recs if is_op(r, "invoke", "move") and (s := integer(r.get("seq"))) is not None}
        acked = {s for r in recs if is_op(r, "ok", "move") and (s := integer(r.get("seq"))) is not None}
        lost.extend((client, seq) for seq in sorted(sent - acked) if (client, seq) not in taken)
    return lost


# -- the figures ----------------------------------------------------------------------------------


def recovery_figures_of(
    history: Iterable[Any],
    journals: Mapping[str, Iterable[Any]],
    *,
    run_end: float,
    started: float | None = None,
    warmup_end: float | None = None,
) -> tuple[RecoveryFigures, list[RecoveryEpisode]]:
    """The recovery figures of a recorded run, and the episodes they were measured from."""
    histories = client_histories(history)
    episodes = sorted(
        (ep for client, recs in histories.items() for ep in recovery_episodes(client, recs, run_end)),
        key=lambda ep: (ep.start, ep.client),
    )
    durations = [ep.duration_s for ep in episodes]
    worst = max(episodes, key=lambda ep: ep.duration_s, default=None)
    gap = longest_gap(histories, episodes)
    since = warmup_end if warmup_end is not None else -math.inf
    reconnects = reconnect_times(histories, since)
    upstream = upstream_connect_times(journals, since)
    peak_reconnects, reconnects_at = peak_rate(reconnects)
    peak_upstream, upstream_at = peak_rate(upstream)
    lost = lost_moves(histories, journals)
    origin = started if started is not None else 0.0

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - origin, 3)

    def s(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    figures = RecoveryFigures(
        clients=len(histories),
        disrupted_clients=len({ep.client for ep in episodes}),
        episodes=len(episodes),
        unrecovered=sum(1 for ep in episodes if not ep.recovered),
        p50_recover_s=s(nearest_rank(durations, 0.50)),
        p99_recover_s=s(nearest_rank(durations, 0.99)),
        max_recover_s=s(worst.duration_s if worst else None),
        max_recover_client=worst.client if worst else None,
        longest_gap_s=s(gap.duration_s if gap else None),
        longest_gap_client=gap.client if gap else None,
        longest_gap_at_s=rel(gap.start if gap else None),
        reconnects=len(reconnects),
        peak_reconnects_per_s=peak_reconnects,
        peak_reconnects_at_s=rel(reconnects_at),
        upstream_connects=len(upstream),
        peak_upstream_connects_per_s=peak_upstream,
        peak_upstream_connects_at_s=rel(upstream_at),
        resent=resent_count(histories),
        lost=len(lost),
        lost_examples=[f"{client}#{seq}" for client, seq in lost[:LOST_EXAMPLES]],
    )
    return figures, episodes


def run_recovery(run: Run) -> tuple[RecoveryFigures, list[RecoveryEpisode]]:
    """:func:`recovery_figures_of` for a loaded run."""
    meta = run.run_meta
    journals = run.journals if isinstance(run.journals, Mapping) else {}
    end = run_end_time(run)
    return recovery_figures_of(
        run.history,
        journals,
        run_end=end if end is not None else math.inf,
        started=meta.started,
        warmup_end=meta.phase("warmup_end"),
    )


def recovery_figures(run: Run) -> RecoveryFigures:
    return run_recovery(run)[0]


# -- goals ----------------------------------------------------------------------------------------


class GoalError(ValueError):
    """A recovery goal that is not valid; the message names the key."""


@dataclass(frozen=True)
class RecoveryGoals:
    """Upper bounds a scenario sets on its recovery figures (``expect.recovery``); None: no goal.

    Each goal is "at most": ``p99_recover_s: 2.0`` means the p99 time to recover is 2 s or less.
    Timing goals stretch with the machine's measured slowness, as the other deadlines do.
    """

    p50_recover_s: float | None = None
    p99_recover_s: float | None = None
    max_recover_s: float | None = None
    longest_gap_s: float | None = None
    peak_reconnects_per_s: float | None = None
    peak_upstream_connects_per_s: float | None = None
    max_resent: int | None = None
    max_lost: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            where = f"expect.recovery.{f.name}"
            if f.name in COUNT_GOALS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise GoalError(f"{where}: expected an integer >= 0, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise GoalError(f"{where}: expected a number >= 0, got {value!r}")

    def set_goals(self) -> list[tuple[str, float]]:
        """The goals set, in declaration order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def to_dict(self) -> dict[str, float]:
        return dict(self.set_goals())

    @classmethod
    def from_dict(cls, raw: Any) -> RecoveryGoals:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise GoalError(f"expect.recovery: expected an object, got {type(raw).__name__}")
        known = [f.name for f in fields(cls)]
        for key in raw:
            if key not in known:
                raise GoalError(f"expect.recovery.{key}: unknown goal (known: {', '.join(known)})")
        return cls(**{str(k): v for k, v in raw.items()})


#: Goals whose figure is a count (integer bounds, never stretched).
COUNT_GOALS = frozenset({"max_resent", "max_lost"})
#: Goals on a time, stretched by the measured slowness like every deadline.
TIMING_GOALS = frozenset({"p50_recover_s", "p99_recover_s", "max_recover_s", "longest_gap_s"})
#: Each goal's figure in :class:`RecoveryFigures`.
GOAL_FIGURE = {
    "p50_recover_s": "p50_recover_s",
    "p99_recover_s": "p99_recover_s",
    "max_recover_s": "max_recover_s",
    "longest_gap_s": "longest_gap_s",
    "peak_reconnects_per_s": "peak_reconnects_per_s",
    "peak_upstream_connects_per_s": "peak_upstream_connects_per_s",
    "max_resent": "resent",
    "max_lost": "lost",
}


def goals_of(expect: Mapping[str, Any]) -> RecoveryGoals:
    """The goals run.json's ``expect`` carries (:class:`GoalError` when they cannot be read)."""
    return RecoveryGoals.from_dict(mapping(expect).get("recovery"))


def figure_value(figures: RecoveryFigures, goal: str) -> float | None:
    return num(getattr(figures, GOAL_FIGURE[goal]))


def describe_figures(figures: RecoveryFigures) -> str:
    """One line for a console or a note: the recovery figures in words."""
    if not figures.episodes:
        head = "no client disrupted"
    else:
        head = (
            f"{figures.disrupted_clients} client(s) disrupted, recover p50 {figures.p50_recover_s:.2f} s / p99 "
            f"{figures.p99_recover_s:.2f} s / max {figures.max_recover_s:.2f} s"
            + (f", {figures.unrecovered} never recovered" if figures.unrecovered else "")
        )
    gap = f"longest gap {figures.longest_gap_s:.2f} s" if figures.longest_gap_s is not None else "no gap measured"
    return (
        f"{head}; {gap}; peak {figures.peak_reconnects_per_s} reconnects/s, {figures.peak_upstream_connects_per_s} "
        f"upstream connects/s; {figures.resent} re-sent, {figures.lost} lost"
    )


__all__ = [
    "COUNT_GOALS",
    "GOAL_FIGURE",
    "TIMING_GOALS",
    "GoalError",
    "PlayGap",
    "RecoveryEpisode",
    "RecoveryGoals",
    "describe_figures",
    "figure_value",
    "goals_of",
    "longest_gap",
    "lost_moves",
    "nearest_rank",
    "peak_rate",
    "reconnect_times",
    "recovery_episodes",
    "recovery_figures",
    "recovery_figures_of",
    "resent_count",
    "run_recovery",
    "upstream_connect_times",
]
