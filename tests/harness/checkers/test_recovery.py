"""Recovery measured (harness.recovery) and the goals a scenario sets on it (recovery_goals).

Every run here is synthetic (checker_runs.RunBuilder): the figures are pure functions of the
recorded history and journals, so each rule is shown on the few records that make it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from checker_runs import T0, RunBuilder

from harness.checkers import NAMES, judge
from harness.checkers.recovery import check_recovery_goals
from harness.history import Run
from harness.records import Certificate, RecoveryFigures, ScenarioEntry
from harness.recovery import (
    RecoveryGoals,
    describe_figures,
    lost_moves,
    nearest_rank,
    peak_rate,
    recovery_episodes,
    recovery_figures,
    run_recovery,
)
from harness.scenario import Expect, Scenario, ScenarioError


def goals(rb: RunBuilder, **bounds: Any) -> RunBuilder:
    rb.meta["expect"]["recovery"] = bounds
    return rb


def c_records(run: Run, client: str) -> list[dict[str, Any]]:
    return sorted((r for r in run.history if r.get("process") == client), key=lambda r: r["t"])


# -- the figures of the healthy run ------------------------------------------------------------------


def test_healthy_run_figures(rb: RunBuilder) -> None:
    figures = recovery_figures(rb.healthy().build())
    # c1: last ack 1.01 (move 10), moved in place at 2.3, re-sent 11 acked at 2.33.
    # c2: last ack 1.01, moved at 2.4, move 11 acked at 2.51. c3 joined after the heal: no episode.
    assert (figures.clients, figures.disrupted_clients, figures.episodes, figures.unrecovered) == (3, 2, 2, 0)
    assert figures.p50_recover_s == pytest.approx(1.32)
    assert figures.p99_recover_s == pytest.approx(1.50)
    assert figures.max_recover_s == pytest.approx(1.50)
    assert figures.max_recover_client == "c2"
    assert (figures.longest_gap_s, figures.longest_gap_client) == (pytest.approx(1.50), "c2")
    assert figures.longest_gap_at_s == pytest.approx(1.01)
    assert figures.reconnects == 0 and figures.peak_reconnects_per_s == 0 and figures.peak_reconnects_at_s is None
    # Since the warm-up: the two upstreams to the secondary within 0.1 s, and c3's later one.
    assert (figures.upstream_connects, figures.peak_upstream_connects_per_s) == (3, 2)
    assert figures.peak_upstream_connects_at_s == pytest.approx(2.299)
    assert (figures.resent, figures.lost, figures.lost_examples) == (1, 0, [])


def test_episode_evidence_and_causes(rb: RunBuilder) -> None:
    run = rb.healthy().build()
    (episode,) = recovery_episodes("c1", c_records(run, "c1"), T0 + 6)
    assert episode.recovered and episode.causes == ("moved in place to secondary on conn 1",)
    assert (episode.start, episode.disrupted_at, episode.end) == (pytest.approx(T0 + 1.01), T0 + 2.3, T0 + 2.33)
    assert episode.to_evidence()["recover_s"] == pytest.approx(1.32)


# -- what is and is not a disruption -----------------------------------------------------------------


def reconnecting_client(rb: RunBuilder, client: str = "c1", *, comes_back: bool = True) -> None:
    """Plays on conn 1, is dropped with 1006 at T0+2, fails one connect, reconnects on conn 2."""
    rb.play(client, T0, range(1, 11))  # last ack T0+1.01
    rb.conn_close(client, T0 + 2.0, conn=1, code=1006, initiator="remote")
    rb.rec(T0 + 2.2, client, "event", "conn_fail", conn=2, error="ConnectionRefusedError")
    if comes_back:
        rb.conn_open(client, T0 + 2.6, conn=3)
        rb.welcome(client, t=T0 + 2.61, server="secondary", conn=3)
        rb.move(client, T0 + 2.7, 11, conn=3)  # acked at 2.71
    rb.stopped(client, T0 + 4.0)


def test_a_drop_and_failed_reconnect_are_one_episode_until_the_next_ack(rb: RunBuilder) -> None:
    reconnecting_client(rb)
    run = rb.build()
    (episode,) = recovery_episodes("c1", c_records(run, "c1"), T0 + 5)
    assert episode.duration_s == pytest.approx(2.71 - 1.01)
    assert [c.split(":")[0] for c in episode.causes] == ["conn 1 closed remotely with 1006", "connect failed"]
    figures = recovery_figures(run)
    assert (figures.reconnects, figures.peak_reconnects_per_s) == (2, 2)  # the failed attempt and conn 3
    assert figures.peak_reconnects_at_s == pytest.approx(2.2)


def test_a_client_that_never_recovers_counts_until_it_stopped(rb: RunBuilder) -> None:
    reconnecting_client(rb, comes_back=False)
    figures = recovery_figures(rb.build())
    assert (figures.episodes, figures.unrecovered) == (1, 1)
    assert figures.max_recover_s == pytest.approx(4.0 - 1.01)
    assert figures.longest_gap_s == pytest.approx(4.0 - 1.01)


def test_own_close_and_disruptions_before_playing_are_not_episodes(rb: RunBuilder) -> None:
    # c1 fails its first connect before any ack: nothing to recover yet.
    rb.rec(T0, "c1", "event", "conn_fail", conn=1, error="refused")
    rb.play("c1", T0 + 0.5, range(1, 4), conn=2)
    rb.conn_close("c1", T0 + 1.0, conn=2, code=1000, initiator="client")  # its own stop
    rb.stopped("c1", T0 + 1.1)
    figures = recovery_figures(rb.build())
    assert figures.episodes == 0 and figures.p99_recover_s is None and figures.max_recover_client is None
    assert figures.reconnects == 1  # its second attempt is a reconnect, though not a disruption
    assert "no client disrupted" in describe_figures(figures)


def test_flapping_in_place_is_one_episode(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 3))  # acks at 0.11, 0.21
    rb.welcome("c1", t=T0 + 0.5, server="secondary")
    rb.welcome("c1", t=T0 + 0.7, server="primary")
    rb.move("c1", T0 + 0.9, 3)
    (episode,) = recovery_episodes("c1", c_records(rb.build(), "c1"), T0 + 2)
    assert len(episode.causes) == 2 and episode.duration_s == pytest.approx(0.91 - 0.21)


# -- losses, re-sends, rates -------------------------------------------------------------------------


def test_lost_is_sent_and_taken_by_no_server(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 3))
    rb.move("c1", T0 + 0.5, 3, ack=False)  # reached the primary (journal recv): taken, not lost
    rb.rec(T0 + 0.6, "c1", "invoke", "move", conn=1, seq=4, attempt=1)  # reached no server
    rb.rec(T0 + 0.7, "c1", "invoke", "move", conn=1, seq=6, attempt=1)
    rb.journal("primary", T0 + 0.71, "recv", conn="x", client="c1", kind="move", seq=6, applied=False, result="gap")
    rb.journal("primary", T0 + 0.72, "recv", conn="x", client="c2", kind="move", seq=5, applied=False, error="other")
    run = rb.build()
    assert lost_moves({"c1": c_records(run, "c1")}, run.journals) == [("c1", 4), ("c1", 6)]
    figures = recovery_figures(run)
    assert (figures.lost, figures.lost_examples) == (2, ["c1#4", "c1#6"])


def test_resent_counts_every_send_after_the_first() -> None:
    rb = RunBuilder()
    rb.play("c1", T0, range(1, 2))
    for attempt in (2, 3):
        rb.rec(T0 + attempt, "c1", "invoke", "move", conn=1, seq=1, attempt=attempt)
    assert recovery_figures(rb.build()).resent == 2


def test_peak_rate_is_a_sliding_window() -> None:
    assert peak_rate([]) == (0, None)
    # Aligned 1 s bins would split this burst 2 + 2; any 1 s window sees the 4 together.
    assert peak_rate([10.6, 10.8, 11.1, 11.3, 13.0]) == (4, 10.6)
    assert peak_rate([1.0, 2.0, 3.0]) == (1, 1.0)  # half-open: [1, 2) does not hold 2.0


def test_nearest_rank() -> None:
    assert nearest_rank([], 0.5) is None
    assert nearest_rank([3.0, 1.0, 2.0], 0.5) == 2.0
    assert nearest_rank([float(i) for i in range(1, 201)], 0.99) == 198.0
    assert nearest_rank([1.0, 5.0], 0.99) == 5.0


def test_malformed_records_do_not_break_the_figures() -> None:
    rb = RunBuilder()
    rb.play("c1", T0, range(1, 3))
    rb.history += [
        {"t": "soon", "process": "c1", "type": "ok", "f": "move"},
        {"t": T0 + 1, "process": "c1", "type": "invoke", "f": "move", "seq": "x", "attempt": None},
        {"t": T0 + 1, "process": "c1", "type": "event", "f": "conn_close", "conn": [1]},
    ]
    rb.journals["primary"] += [{"event": "open"}, {"t": T0 + 1, "event": "recv", "kind": "move", "seq": None}]
    figures, episodes = run_recovery(rb.build())
    assert figures.episodes == 1 and not episodes[0].recovered


# -- the record ---------------------------------------------------------------------------------------


def test_figures_round_trip_through_the_certificate(rb: RunBuilder) -> None:
    figures = recovery_figures(rb.healthy().build())
    entry = ScenarioEntry(name="kill_primary", recovery=figures)
    raw = json.loads(json.dumps(Certificate(scenarios=[entry]).to_json()))
    assert raw["scenarios"][0]["recovery"]["p99_recover_s"] == pytest.approx(1.5)
    assert Certificate.from_json(raw).scenarios[0].recovery == figures
    # An older certificate has no figures: read as not measured, and written back without them.
    old = ScenarioEntry.from_json({"name": "x"})
    assert old.recovery is None and "recovery" not in old.to_json()
    # A damaged one reads what it can.
    damaged = RecoveryFigures.from_json({"episodes": "two", "p99_recover_s": True, "lost_examples": "c1#1"})
    assert (damaged.episodes, damaged.p99_recover_s, damaged.lost_examples) == (0, None, [])


# -- goals in a scenario ------------------------------------------------------------------------------


def test_goals_in_a_scenario_round_trip_and_are_validated() -> None:
    s = Scenario.from_dict({"name": "g", "expect": {"recovery": {"p99_recover_s": 2.0, "max_lost": 0}}})
    assert s.expect.recovery == RecoveryGoals(p99_recover_s=2.0, max_lost=0)
    assert s.to_dict()["expect"]["recovery"] == {"p99_recover_s": 2.0, "max_lost": 0}
    assert Scenario.from_dict(s.to_dict()) == s
    assert "recovery" not in Scenario(name="none").to_dict()["expect"]  # as before goals existed
    for bad, words in (
        ({"p99": 2.0}, "expect.recovery.p99: unknown goal"),
        ({"max_lost": 0.5}, "expect.recovery.max_lost: expected an integer >= 0"),
        ({"max_lost": True}, "expect.recovery.max_lost: expected an integer >= 0"),
        ({"p50_recover_s": -1}, "expect.recovery.p50_recover_s: expected a number >= 0"),
        ({"longest_gap_s": "2s"}, "expect.recovery.longest_gap_s: expected a number >= 0"),
        ([2.0], "expect.recovery: expected an object"),
    ):
        with pytest.raises(ScenarioError, match=words.replace(".", r"\.")):
            Scenario.from_dict({"name": "g", "expect": {"recovery": bad}})
    with pytest.raises(ScenarioError, match="leaves out 'recovery_goals'"):
        Scenario(name="g", expect=Expect(recovery=RecoveryGoals(max_lost=0)), invariants=("ordered",))


# -- the checker --------------------------------------------------------------------------------------


def test_no_goals_is_not_checked(rb: RunBuilder) -> None:
    result = check_recovery_goals(rb.healthy().build())
    assert result.status == "not_checked" and "no recovery goals" in result.note
    # Registered, so every scenario's judgement carries it.
    assert "recovery_goals" in NAMES and "recovery_goals" in [r.invariant for r in judge(rb.build())]


def test_goals_met_pass_and_say_what_was_measured(rb: RunBuilder) -> None:
    run = goals(rb.healthy(), p99_recover_s=2.0, longest_gap_s=2.0, max_lost=0, max_resent=1).build()
    result = check_recovery_goals(run)
    assert result.status == "pass", result.summary()
    assert "p99_recover_s 1.5 <= 2" in result.note and "max_lost 0 <= 0" in result.note
    assert "recover p50 1.32 s / p99 1.50 s / max 1.50 s" in result.note


def test_a_missed_goal_fails_naming_it_with_the_worst_episode(rb: RunBuilder) -> None:
    run = goals(rb.healthy(), max_recover_s=1.4, max_lost=0, peak_upstream_connects_per_s=1).build()
    result = check_recovery_goals(run)
    assert result.status == "fail"
    messages = [v.message for v in result.violations]
    assert messages == [
        "recovery goal missed: max_recover_s measured 1.5, goal at most 1.4",
        "recovery goal missed: peak_upstream_connects_per_s measured 2, goal at most 1",
    ]
    assert result.violations[0].evidence[0]["client"] == "c2"


def test_an_unrecovered_client_misses_the_timing_goals(rb: RunBuilder) -> None:
    reconnecting_client(goals(rb, p99_recover_s=2.0), comes_back=False)
    rb.meta["phases"] = {"deadline_end": T0 + 3.9}  # stopped by the runner (at 4.0) after it
    result = check_recovery_goals(rb.build())
    assert result.status == "fail" and "1 episode(s) never recovered" in result.violations[0].message


def test_a_client_the_harness_stopped_mid_recovery_is_not_the_builds_failure(rb: RunBuilder) -> None:
    # The swarm gave up (NOT READY on a starved machine) and stopped c1 at 4.0, mid-recovery,
    # long before the runner's deadline_end: its stall and its in-flight moves prove nothing.
    reconnecting_client(goals(rb, p99_recover_s=2.0, max_lost=0, max_resent=0), comes_back=False)
    rb.rec(T0 + 2.1, "c1", "invoke", "move", conn=1, seq=11, attempt=1)  # sent into the drop: lost
    rb.meta["phases"] = {"deadline_end": T0 + 20.0}
    assert recovery_figures(rb.build()).lost == 1  # measured all the same
    result = check_recovery_goals(rb.build())
    assert result.status == "not_checked", result.summary()
    assert "inconclusive: not judged: p99_recover_s: 1 client(s) stopped before deadline_end" in result.note
    assert "max_lost: 1 client(s)" in result.note and "met: max_resent 0 <= 0" in result.note


def test_nothing_to_recover_from_is_not_checked(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 5))
    rb.stopped("c1", T0 + 1)
    result = check_recovery_goals(goals(rb, max_lost=0).build())
    assert result.status == "not_checked" and result.note.startswith("nothing to recover from")


def test_timing_goals_stretch_with_slowness_and_set_aside_when_too_slow(rb: RunBuilder) -> None:
    goals(rb.healthy(), max_recover_s=1.0, max_lost=0)
    rb.rec(T0 - 0.5, "swarm-c-1", "event", "swarm_start", clients=["c1", "c2"], pid=1, slowness=2.0)
    stretched = check_recovery_goals(rb.build())
    assert stretched.status == "pass" and "max_recover_s 1.5 <= 2 (goal 1 x slowness 2.00)" in stretched.note
    rb.history[-1]["slowness"] = 9.0  # stretched at most x3: a 0.4 s goal becomes 1.2 s, still missed
    rb.meta["expect"]["recovery"]["max_recover_s"] = 0.4
    too_slow = check_recovery_goals(rb.build())
    assert too_slow.status == "not_checked" and too_slow.note.startswith("inconclusive: not judged: max_recover_s")
    # A count is no timing: losing a move still fails on a slow machine.
    rb.rec(T0 + 0.6, "c3", "invoke", "move", conn=1, seq=99, attempt=1)
    assert check_recovery_goals(rb.build()).status == "fail"


def test_unreadable_goals_in_run_json_are_not_checked(rb: RunBuilder) -> None:
    result = check_recovery_goals(goals(rb.healthy(), p99=1.0).build())
    assert result.status == "not_checked" and "expect.recovery unreadable" in result.note


def test_certify_keeps_the_figures_the_runner_measured(rb: RunBuilder, tmp_path: Any) -> None:
    from harness.certify import scenario_entry
    from harness.runner import JudgedRun

    figures = recovery_figures(rb.healthy().build())
    judged = JudgedRun(scenario=Scenario(name="kill_primary"), run_dir=tmp_path, results=[], recovery=figures)
    assert scenario_entry(judged, "named", 1.0).recovery == figures
