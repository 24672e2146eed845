"""recovery_goals: the goals a scenario sets on its recovery figures (``expect.recovery``).

The figures and what each means are :mod:`harness.recovery`'s; this only compares them with the
goals. Every goal is an upper bound. Timing goals stretch with the machine's measured slowness as
the other deadlines do (docs/architecture.md, "A loaded machine"); on a machine too slow a missed
timing goal is set aside (inconclusive), never a failure. With no goal set, or no client disrupted
(nothing to recover from), the result is "not checked".
"""

from __future__ import annotations

from harness.analysis import slowness
from harness.history import Run
from harness.records import RecoveryFigures
from harness.recovery import (
    GOAL_FIGURE,
    TIMING_GOALS,
    GoalError,
    RecoveryEpisode,
    describe_figures,
    figure_value,
    goals_of,
    run_recovery,
)

from .base import CheckResult, Violation, evidence, finish, fmt_t, guarded

RECOVERY_GOALS = "recovery_goals"


def _worst_evidence(goal: str, figures: RecoveryFigures, episodes: list[RecoveryEpisode]) -> list[dict[str, object]]:
    if goal in ("p50_recover_s", "p99_recover_s", "max_recover_s"):
        worst = sorted(episodes, key=lambda ep: -ep.duration_s)[:3]
        return [ep.to_evidence() for ep in worst]
    if goal == "longest_gap_s":
        return [
            {"client": figures.longest_gap_client, "from_s": figures.longest_gap_at_s, "gap_s": figures.longest_gap_s}
        ]
    if goal == "max_lost":
        return [{"lost": figures.lost, "examples": figures.lost_examples}]
    if goal == "peak_reconnects_per_s":
        return [{"peak": figures.peak_reconnects_per_s, "window_from_s": figures.peak_reconnects_at_s}]
    if goal == "peak_upstream_connects_per_s":
        return [{"peak": figures.peak_upstream_connects_per_s, "window_from_s": figures.peak_upstream_connects_at_s}]
    return [{GOAL_FIGURE[goal]: getattr(figures, GOAL_FIGURE[goal])}]


@guarded(RECOVERY_GOALS)
def check_recovery_goals(run: Run) -> CheckResult:
    try:
        goals = goals_of(run.run_meta.expect)
    except GoalError as exc:
        return finish(RECOVERY_GOALS, [], checked=False, notes=[f"expect.recovery unreadable: {exc}"])
    set_goals = goals.set_goals()
    if not set_goals:
        return finish(RECOVERY_GOALS, [], checked=False, notes=["no recovery goals set (expect.recovery)"])
    figures, episodes = run_recovery(run)
    if not figures.episodes:
        return finish(
            RECOVERY_GOALS,
            [],
            checked=False,
            notes=[f"nothing to recover from: no client was disrupted ({describe_figures(figures)})"],
        )
    slow = slowness(run.history)
    violations: list[Violation] = []
    met: list[str] = []
    set_aside: list[str] = []
    # Clients reconnect until the runner stops them at deadline_end; one that stopped earlier in
    # the middle of an episode was ended by the harness (a swarm that gave up), not by the build:
    # its recovery time and the moves it had in flight prove nothing.
    deadline_end = run.run_meta.phase("deadline_end")
    cut_short = [ep for ep in episodes if not ep.recovered and deadline_end is not None and ep.end < deadline_end]
    for goal, bound in set_goals:
        measured = figure_value(figures, goal)
        timing = goal in TIMING_GOALS
        if cut_short and (timing or goal == "max_lost"):
            first = cut_short[0]
            set_aside.append(
                f"{goal}: {len(cut_short)} client(s) stopped before deadline_end while recovering (first "
                f"{first.client} at {fmt_t(first.end)}), so the harness ended them, not the build"
            )
            continue
        limit = bound * slow.scale if timing else bound
        shown_limit = f"{limit:g}" + (f" (goal {bound:g} x slowness {slow.scale:.2f})" if limit != bound else "")
        if measured is None:
            # A timing figure with episodes is always measured; a None here is a gap in the record.
            set_aside.append(f"{goal}: not measured")
            continue
        if measured <= limit:
            met.append(f"{goal} {measured:g} <= {shown_limit}")
            continue
        if timing and slow.too_slow:
            set_aside.append(f"{goal} {measured:g} > {shown_limit}: {slow.describe()}")
            continue
        unrecovered = (
            f"; {figures.unrecovered} episode(s) never recovered, counted until the client stopped"
            if timing and figures.unrecovered and goal != "longest_gap_s"
            else ""
        )
        violations.append(
            Violation(
                RECOVERY_GOALS,
                f"recovery goal missed: {goal} measured {measured:g}, goal at most {shown_limit}{unrecovered}",
                evidence(_worst_evidence(goal, figures, episodes)),
            )
        )
    notes = []
    if set_aside:
        notes.append("inconclusive: not judged: " + "; ".join(set_aside))
    if met:
        notes.append("met: " + "; ".join(met))
    notes.append(describe_figures(figures))
    return finish(RECOVERY_GOALS, violations, checked=not set_aside, notes=notes)
