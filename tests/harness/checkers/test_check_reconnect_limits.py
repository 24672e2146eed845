from __future__ import annotations

import math

import pytest
from checker_runs import HOP_S, T0, RunBuilder

from harness.analysis import fault_windows, run_end_time
from harness.checkers import check_reconnect_limits
from harness.checkers.failover_limits import Limits, Moment, limit_breaches, upstream_moments
from harness.checkers.journal import index_upstreams
from harness.history import Run, make_run

#: A cut lasts this long and ends before the next one, so each failover has exactly one cause.
CUT_S = 0.1
BACKENDS = ("primary", "secondary")


def failovers(rb: RunBuilder, offsets: list[float], client: str = "c1", conn: int = 1) -> None:
    """One client connection welcomed first at T0, then once per offset (each a failover).

    Each failover has its cause: the backend serving the connection is cut just as the new
    upstream opens (HOP_S before the welcome), so the black-box bounds pin each failover to that
    moment and the tests can state exact gaps.
    """
    rb.conn_open(client, T0 - 0.01, conn)
    rb.welcome(client, T0, "primary", conn)
    for i, offset in enumerate(offsets):
        t = T0 + offset - HOP_S
        rb.fault(t, "kill", BACKENDS[i % 2], f"{client}-cut-{i}", heal_at=t + CUT_S)
        rb.welcome(client, T0 + offset, BACKENDS[(i + 1) % 2], conn)


def test_healthy_run_passes(rb: RunBuilder) -> None:
    assert check_reconnect_limits(rb.healthy().build()).status == "pass"


def test_too_many_failovers_in_a_window_fail(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 2.0, 3.0, 4.0])  # 4 within 3 s; limit 3 per 6 s
    result = check_reconnect_limits(rb.build())
    assert result.status == "fail"
    [window] = [v for v in result.violations if "4 failovers within" in v.message]
    assert window.evidence[0]["source"] == "upstreams"
    assert window.evidence[0]["failover_times"] == pytest.approx([T0 + o - HOP_S for o in (1.0, 2.0, 3.0, 4.0)])


def test_failovers_spread_over_more_than_the_window_pass(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 2.0, 3.0, 7.5, 8.5])
    assert check_reconnect_limits(rb.build()).status == "pass"


def test_failovers_too_close_together_fail(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 1.2])
    result = check_reconnect_limits(rb.build())
    assert result.status == "fail"
    assert "0.200 s apart" in result.violations[0].message


def test_clock_tolerance_is_applied_and_configurable(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 1.47])  # 30 ms short of min_interval_s 0.5: within the default 50 ms
    assert check_reconnect_limits(rb.build()).status == "pass"
    rb.meta["expect"]["clock_tolerance_s"] = 0.0
    assert check_reconnect_limits(rb.build()).status == "fail"


def test_the_configured_limits_are_the_ones_judged(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 1.2, 1.4, 1.6])
    rb.meta["failover"] = {"max_attempts": 5, "window_s": 1.0, "min_interval_s": 0.1}
    assert check_reconnect_limits(rb.build()).status == "pass"


def test_a_limit_of_zero_failovers_fails_any(rb: RunBuilder) -> None:
    failovers(rb, [1.0])
    rb.meta["failover"] = {"max_attempts": 0, "window_s": 60.0, "min_interval_s": 5.0}
    result = check_reconnect_limits(rb.build())
    assert result.status == "fail" and "max_attempts is 0" in result.violations[0].message


def test_welcomes_on_separate_connections_are_not_failovers(rb: RunBuilder) -> None:
    for conn in (1, 2, 3, 4, 5):
        rb.conn_open("c1", T0 + conn * 0.1, conn)
        rb.welcome("c1", T0 + conn * 0.1 + 0.01, "primary", conn)
    # No failover at all: the limits hold vacuously, which is nothing judged, not a pass.
    result = check_reconnect_limits(rb.build())
    assert result.status == "not_checked" and "no failover in the run" in result.note


def test_the_new_upstreams_journaled_open_bounds_a_failover_not_the_welcome(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 1.6])
    # The client saw the welcomes 0.6 s apart, but the backend accepted the second upstream 0.3 s
    # after the first failover: the failover came before that open, so at most 0.3 s apart.
    rb.journals["primary"][-1]["t"] = T0 + 1.3
    result = check_reconnect_limits(rb.build())
    assert result.status == "fail"
    assert "at most 0.301 s apart" in result.violations[0].message
    assert [v.evidence[0]["source"] for v in result.violations] == ["upstreams"]


def test_without_a_journal_match_the_welcome_bounds_a_failover(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 1.2])
    for journal in rb.journals.values():
        journal.clear()
    result = check_reconnect_limits(rb.build())
    # From the cut (HOP_S before the first welcome) to the second welcome.
    assert result.status == "fail" and "at most 0.201 s apart" in result.violations[0].message
    assert "no matching journal open" in result.note


def test_an_upstream_slow_to_open_does_not_make_two_losses_look_close(rb: RunBuilder) -> None:
    # tests/chaos/regressions/plan-d060f875e5.json, as the reference balancer ran it: the primary is
    # restarted at +2.0 s and the balancer notices at +2.23 s; the secondary is paused, so the new
    # upstream opens only at +3.208 s, when the secondary is terminated (which wakes it); 3 ms
    # later that upstream is lost too, and the primary (back by then) takes the client at +3.228 s.
    # The welcomes came 19 ms apart, the losses 1.006 s apart: the limits (0.5 s) hold.
    rb.meta["failover"] = {"max_attempts": 3, "window_s": 6.0, "min_interval_s": 0.5}
    rb.conn_open("c1", T0 - 0.01)
    rb.welcome("c1", T0, "primary")
    rb.fault(T0 + 0.5, "pause", "secondary", "f0", heal_at=T0 + 5.2)
    rb.fault(T0 + 2.0, "restart", "primary", "f1")
    rb.fault(T0 + 3.0, "terminate", "secondary", "f2", heal_at=T0 + 4.8)
    rb.welcome("c1", T0 + 3.208 + HOP_S, "secondary")
    rb.welcome("c1", T0 + 3.228 + HOP_S, "primary")
    rb.balancer_event(T0, "session_open", session="s1", path="/play?client=c1")
    rb.balancer_event(T0 + 2.23, "failover_attempt", session="s1", allowed=True)
    rb.balancer_event(T0 + 3.236, "failover_attempt", session="s1", allowed=True)
    assert check_reconnect_limits(rb.build()).status == "pass"

    # Had the primary's fault begun at +3.19 s instead, both losses would fall within 40 ms.
    rb.history = [r for r in rb.history if r.get("fault_id") != "f1"]
    rb.fault(T0 + 3.19, "restart", "primary", "f1")
    result = check_reconnect_limits(rb.build())
    assert result.status == "fail" and "at most 0.038 s apart" in result.violations[0].message
    bounds = result.violations[0].evidence[1]["bounds"]
    assert [b["earliest"] for b in bounds] == pytest.approx([T0 + 3.19, T0 + 3.208])
    assert bounds[0]["earliest_because"] == "the fault restart:primary began"
    assert bounds[1]["earliest_because"] == "secondary opened the upstream it replaced"


def _moments(run: Run) -> list[Moment]:
    [welcomes] = [[r for r in recs if r.get("f") == "welcome"] for recs in run.client_histories().values()]
    faults = fault_windows(run.nemesis(), run_end_time(run))
    return upstream_moments(welcomes, index_upstreams(run), faults, 0.05)[0]


def test_only_a_fault_that_can_end_the_replaced_upstream_bounds_its_failover(rb: RunBuilder) -> None:
    rb.conn_open("c1", T0 - 0.01)
    rb.welcome("c1", T0, "primary")
    rb.fault(T0 + 0.2, "kill", "primary", "f1", heal_at=T0 + 0.3)
    rb.welcome("c1", T0 + 0.25, "secondary")
    rb.fault(T0 + 0.5, "kill", "primary", "f2", heal_at=T0 + 0.6)  # not the secondary's
    rb.welcome("c1", T0 + 0.6, "primary")
    # The secondary's upstream can have been lost as soon as it opened: nothing pins it later.
    assert [m.earliest for m in _moments(rb.build())] == pytest.approx([T0 + 0.2, T0 + 0.25 - HOP_S])
    result = check_reconnect_limits(rb.build())
    assert result.status == "fail" and "at most 0.399 s apart" in result.violations[0].message
    rb.meta["failover"]["min_interval_s"] = 0.36  # a second failover from +0.56 s to +0.599 s fits
    assert check_reconnect_limits(rb.build()).status == "pass"

    # A fault on the balancer can end any upstream (a paused balancer misses its pongs).
    rb.fault(T0 + 0.55, "pause", "balancer", "f3", heal_at=T0 + 0.58)
    assert [m.earliest for m in _moments(rb.build())] == pytest.approx([T0 + 0.2, T0 + 0.55])


def test_balancer_events_are_judged_per_session(rb: RunBuilder) -> None:
    rb.conn_open("c1", T0, 1)
    rb.welcome("c1", T0 + 0.01, "primary")
    rb.balancer_event(T0, "session_open", session="s9", path="/play?client=c1")
    for offset in (1.0, 1.1):
        rb.balancer_event(T0 + offset, "failover_attempt", session="s9", allowed=True)
    rb.balancer_event(T0 + 1.05, "failover_attempt", session="s9", allowed=False)  # refused: not counted
    result = check_reconnect_limits(rb.build())
    assert result.status == "fail"
    assert result.violations[0].evidence[0]["path"] == "/play?client=c1"
    assert "balancer failover_attempt" in result.violations[0].message
    assert "failovers 0.100 s apart" in result.violations[0].message


def test_without_limits_it_is_not_checked(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 1.1])
    del rb.meta["failover"]
    assert check_reconnect_limits(rb.build()).status == "not_checked"


def test_without_any_connection_it_is_not_checked() -> None:
    run = make_run(meta={"failover": {"max_attempts": 3, "window_s": 6.0, "min_interval_s": 0.5}})
    assert check_reconnect_limits(run).status == "not_checked"


def _measured_slowness(rb: RunBuilder, factor: float) -> None:
    rb.rec(T0 - 1.0, "swarm-1", "event", "swarm_start", clients=["c1"], slowness=factor)


def test_a_small_miss_on_a_slow_machine_is_inconclusive_not_a_failure(rb: RunBuilder) -> None:
    # 53 ms short of min_interval_s 0.5 (the default tolerance is 50 ms): at slowness x7.5 that is
    # scheduling delay, not proof of a limiter that let two failovers through.
    failovers(rb, [1.0, 1.447])
    _measured_slowness(rb, 7.5)
    result = check_reconnect_limits(rb.build())
    assert result.status == "not_checked", result
    assert result.note.startswith("inconclusive: ") and "0.447 s apart" in result.note, result.note


def test_the_same_miss_on_a_machine_not_slow_fails(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 1.447])
    _measured_slowness(rb, 1.0)
    assert check_reconnect_limits(rb.build()).status == "fail"


def test_a_miss_beyond_what_slowness_explains_fails_on_a_slow_machine(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 1.1])  # 400 ms short: more than 50 ms x 7.5
    _measured_slowness(rb, 7.5)
    result = check_reconnect_limits(rb.build())
    assert result.status == "fail" and "0.100 s apart" in result.violations[0].message


# -- limit_breaches: the bounds and the placement -------------------------------------------------

LIMITS = Limits(max_attempts=2, window_s=2.0, min_interval_s=0.5)


def test_points_are_judged_as_observed() -> None:
    assert limit_breaches(LIMITS, [0.0, 0.5, 2.0], 0.0) == []
    [breach] = limit_breaches(LIMITS, [0.0, 0.3], 0.0)
    assert breach.rule == "min_interval" and breach.what.startswith("failovers 0.300 s apart")
    [breach] = limit_breaches(LIMITS, [0.0, 0.5, 1.9], 0.0)
    assert breach.rule == "window" and breach.failovers == (0, 1, 2)


def test_bounds_fail_only_when_no_placement_keeps_the_limits() -> None:
    # The second failover came after the first (it replaced the upstream the first opened), but
    # somewhere in [0.2, 1.0]: 0.5 s after a first failover at 0.0 fits.
    assert limit_breaches(LIMITS, [Moment.at(0.0), Moment(0.2, 1.0)], 0.0) == []
    [breach] = limit_breaches(LIMITS, [Moment.at(0.0), Moment(0.2, 0.3)], 0.0)
    assert breach.what.startswith("failovers at most 0.300 s apart")
    assert breach.missed_by_s == pytest.approx(0.2)


def test_the_placement_carries_each_failovers_earliest_moment_forward() -> None:
    # Each fits on its own against its neighbour, but the chain does not: the second can come no
    # earlier than 0.5, so the third no earlier than 1.0, past its latest 0.8.
    chain = [Moment.at(0.0), Moment(0.1, 0.9), Moment(0.2, 0.8)]
    [breach] = limit_breaches(Limits(max_attempts=5, window_s=10.0, min_interval_s=0.5), chain, 0.0)
    assert breach.rule == "min_interval" and breach.failovers == (1, 2)
    assert breach.what == "failovers at most 0.300 s apart (min_interval_s 0.5)"


def test_an_unbounded_start_is_never_the_binding_limit() -> None:
    assert limit_breaches(LIMITS, [Moment(-math.inf, 0.0), Moment(-math.inf, 0.1)], 0.0) == []
