from __future__ import annotations

from checker_runs import T0, RunBuilder

from harness.checkers import check_reconnect_limits
from harness.history import make_run


def failovers(rb: RunBuilder, offsets: list[float], client: str = "c1", conn: int = 1) -> None:
    """One client connection welcomed first at T0, then once per offset (each a failover)."""
    rb.conn_open(client, T0 - 0.01, conn)
    rb.welcome(client, T0, "primary", conn)
    for i, offset in enumerate(offsets):
        rb.welcome(client, T0 + offset, "secondary" if i % 2 == 0 else "primary", conn)


def test_healthy_run_passes(rb: RunBuilder) -> None:
    assert check_reconnect_limits(rb.healthy().build()).status == "pass"


def test_too_many_failovers_in_a_window_fails(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 2.0, 3.0, 4.0])  # 4 within 3 s; limit 3 per 6 s
    result = check_reconnect_limits(rb.build())
    assert result.status == "fail"
    window = [v for v in result.violations if "4 failovers within" in v.message]
    assert {v.evidence[0]["source"] for v in window} == {"history welcome", "journal open"}
    assert window[0].evidence[0]["failover_times"] == [T0 + 1.0, T0 + 2.0, T0 + 3.0, T0 + 4.0]


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


def test_welcomes_on_separate_connections_are_not_failovers(rb: RunBuilder) -> None:
    for conn in (1, 2, 3, 4, 5):
        rb.conn_open("c1", T0 + conn * 0.1, conn)
        rb.welcome("c1", T0 + conn * 0.1 + 0.01, "primary", conn)
    assert check_reconnect_limits(rb.build()).status == "pass"


def test_journal_open_times_are_judged_too(rb: RunBuilder) -> None:
    failovers(rb, [1.0, 1.6])
    # The client saw the welcomes 0.6 s apart, but the backend accepted the upstreams 0.3 s apart.
    second_open = rb.journals["primary"][-1]
    second_open["t"] = T0 + 1.3
    result = check_reconnect_limits(rb.build())
    assert result.status == "fail"
    assert [v.evidence[0]["source"] for v in result.violations] == ["journal open"]


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
