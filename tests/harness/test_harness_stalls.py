"""harness.analysis: loop stalls of harness processes and the keepalive closes they excuse; the
machine's measured slowness and how the liveness deadlines follow it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from harness.analysis import (
    SLOWNESS_FLOOR,
    SLOWNESS_SCALE_LIMIT,
    STALL_EXCUSE_FRACTION,
    Stall,
    client_histories,
    describe_excused,
    excused_keepalive_closes,
    harness_stalls,
    run_excused_keepalive_closes,
    slowness,
)
from harness.checkers.liveness import check_clean_failover, check_recovers_after_heal
from harness.eventloop import measure_slowness, slowness_factor
from harness.history import make_run

T0 = 1_764_162_000.0
SWARM = "swarm-c-4242"
OTHER_SWARM = "swarm-c-4343"


def rec(t: float, process: str, type_: str, f: str, **fields: Any) -> dict[str, Any]:
    return {"t": T0 + t, "process": process, "type": type_, "f": f, **fields}


def swarm_start(t: float, process: str, clients: list[str]) -> dict[str, Any]:
    return rec(t, process, "event", "swarm_start", clients=clients, pid=4242, loop="uvloop")


def lag(t: float, process: str, lag_ms: float) -> dict[str, Any]:
    return rec(t, process, "event", "loop_lag", lag_ms=lag_ms, streak=1)


def keepalive_close(
    t: float, client: str, *, code: int = 1011, reason: str = "keepalive ping timeout"
) -> dict[str, Any]:
    return rec(t, client, "event", "conn_close", conn=1, code=code, reason=reason, initiator="remote")


def played(client: str) -> list[dict[str, Any]]:
    return [
        rec(0.0, client, "event", "conn_open", conn=1),
        rec(0.01, client, "event", "welcome", conn=1, server="primary", server_conn="p1", state={}, client=client),
    ]


def excused(history: list[dict[str, Any]], *, interval: float = 0.5, timeout: float = 0.5) -> list[str]:
    found = excused_keepalive_closes(
        client_histories(history), harness_stalls(history), ping_interval_s=interval, ping_timeout_s=timeout
    )
    return [e.client for e in found]


# -- the stalls -------------------------------------------------------------------------------------


def test_stalls_come_from_swarm_histories_and_backend_journals() -> None:
    history = [swarm_start(0.0, SWARM, ["c1", "c2"]), lag(2.0, SWARM, 700.0), lag(1.0, OTHER_SWARM, 150.0)]
    journals = {"primary": [{"t": T0 + 3.0, "server": "primary", "event": "loop_lag", "lag_ms": 250.0}]}
    stalls = harness_stalls(history, journals)
    assert [(s.process, round(s.lag_ms), s.clients) for s in stalls] == [
        (OTHER_SWARM, 150, frozenset()),  # no swarm_start: its clients are unknown
        (SWARM, 700, frozenset({"c1", "c2"})),
        ("backend primary", 250, frozenset()),
    ]
    # The record is written when the late tick finally runs: the loop was stalled before it.
    assert stalls[1].start == T0 + 2.0 - 0.7 and stalls[1].end == T0 + 2.0


def test_unreadable_lag_records_are_skipped() -> None:
    history = [rec(1.0, SWARM, "event", "loop_lag", lag_ms="slow"), rec(1.0, SWARM, "event", "loop_lag")]
    assert harness_stalls(history) == []


def test_stall_overlap() -> None:
    stall = Stall(SWARM, 10.0, 11.0)
    assert stall.overlaps(10.5, 12.0) and stall.overlaps(9.0, 10.0) and not stall.overlaps(11.1, 12.0)


# -- must excuse ------------------------------------------------------------------------------------


def test_a_keepalive_close_during_its_own_process_stall_is_excused() -> None:
    history = [
        swarm_start(0.0, SWARM, ["c1"]),
        *played("c1"),
        lag(2.0, SWARM, 600.0),  # stalled 1.4 .. 2.0
        keepalive_close(2.0, "c1"),
    ]
    assert excused(history) == ["c1"]


def test_a_stall_just_before_the_ping_window_still_counts() -> None:
    # The ping went unanswered at most interval + timeout before the close was recorded.
    history = [swarm_start(0.0, SWARM, ["c1"]), *played("c1"), lag(1.2, SWARM, 450.0), keepalive_close(2.5, "c1")]
    assert excused(history) == ["c1"]


def test_a_stall_of_at_least_the_fraction_of_ping_timeout_excuses() -> None:
    need = STALL_EXCUSE_FRACTION * 500.0
    history = [swarm_start(0.0, SWARM, ["c1"]), *played("c1"), lag(2.0, SWARM, need), keepalive_close(2.1, "c1")]
    assert excused(history) == ["c1"]


def test_the_checker_turns_excused_closes_into_not_checked_with_the_cause() -> None:
    history = [
        swarm_start(0.0, SWARM, ["c1"]),
        *played("c1"),
        lag(2.0, SWARM, 900.0),
        keepalive_close(2.0, "c1"),
        rec(3.0, "c1", "event", "stopped", hung=False, acked=0, sent=0),
    ]
    run = make_run(meta={"balancer_config": {"ping_interval_s": 0.5, "ping_timeout_s": 0.5}}, history=history)
    result = check_clean_failover(run)
    assert result.status == "not_checked", result.summary()
    assert "inconclusive: harness swarm stalled up to 900 ms (loop lag)" in result.note
    assert SWARM in result.note
    assert describe_excused(run_excused_keepalive_closes(run)) in result.note


# -- must not excuse --------------------------------------------------------------------------------


def test_a_short_stall_excuses_nothing() -> None:
    history = [swarm_start(0.0, SWARM, ["c1"]), *played("c1"), lag(2.0, SWARM, 200.0), keepalive_close(2.0, "c1")]
    assert excused(history) == []


def test_another_process_stall_excuses_nothing() -> None:
    history = [
        swarm_start(0.0, SWARM, ["c1"]),
        swarm_start(0.0, OTHER_SWARM, ["c2"]),
        *played("c1"),
        lag(2.0, OTHER_SWARM, 900.0),
        keepalive_close(2.0, "c1"),
    ]
    assert excused(history) == []


def test_a_backend_stall_excuses_no_client_close() -> None:
    history = [swarm_start(0.0, SWARM, ["c1"]), *played("c1"), keepalive_close(2.0, "c1")]
    journals = {"primary": [{"t": T0 + 2.0, "server": "primary", "event": "loop_lag", "lag_ms": 900.0}]}
    stalls = harness_stalls(history, journals)
    found = excused_keepalive_closes(client_histories(history), stalls, ping_interval_s=0.5, ping_timeout_s=0.5)
    assert found == []


def test_a_stall_long_before_or_after_the_close_excuses_nothing() -> None:
    history = [
        swarm_start(0.0, SWARM, ["c1"]),
        *played("c1"),
        lag(0.5, SWARM, 900.0),  # over at 0.5; the ping window opens at 8.0 - 1.0 - slack
        keepalive_close(8.0, "c1"),
        lag(12.0, SWARM, 900.0),  # starts at 11.1
    ]
    assert excused(history) == []


def test_other_closes_are_never_excused() -> None:
    history = [
        swarm_start(0.0, SWARM, ["c1", "c2", "c3"]),
        *played("c1"),
        *played("c2"),
        *played("c3"),
        lag(2.0, SWARM, 900.0),
        keepalive_close(2.0, "c1", code=1006, reason=""),  # an abort: could be the balancer dying
        keepalive_close(2.0, "c2", code=1011, reason="internal error"),  # the build's own 1011
        keepalive_close(2.0, "c3", code=1001, reason="going away"),
    ]
    assert excused(history) == []


def test_the_checker_still_fails_closes_that_are_not_excused() -> None:
    history = [
        swarm_start(0.0, SWARM, ["c1", "c2"]),
        *played("c1"),
        *played("c2"),
        lag(2.0, SWARM, 900.0),
        keepalive_close(2.0, "c1"),
        keepalive_close(2.0, "c2", code=1011, reason="internal error"),
        rec(3.0, "c1", "event", "stopped", hung=False, acked=0, sent=0),
        rec(3.0, "c2", "event", "stopped", hung=False, acked=0, sent=0),
    ]
    result = check_clean_failover(make_run(history=history))
    assert result.status == "fail"
    assert [v.message for v in result.violations if "c2" in v.message]
    assert not [v for v in result.violations if "client c1 " in v.message]
    assert "inconclusive: harness swarm stalled" in result.note


def test_without_stall_records_a_keepalive_close_still_fails() -> None:
    history = [*played("c1"), keepalive_close(2.0, "c1"), rec(3.0, "c1", "event", "stopped", hung=False)]
    result = check_clean_failover(make_run(history=history))
    assert result.status == "fail"
    assert "keepalive ping timeout" in result.violations[0].message


# -- slowness ---------------------------------------------------------------------------------------


def measured(*factors: float) -> list[dict[str, Any]]:
    return [rec(0.0, f"swarm-c-{i}", "event", "swarm_start", clients=[], slowness=f) for i, f in enumerate(factors)]


def test_slowness_is_the_worst_swarm_measurement() -> None:
    assert slowness(measured(1.2, 2.5)).factor == 2.5
    assert slowness([]).factor is None and slowness([]).scale == 1.0


def test_deadlines_scale_with_slowness_between_the_floor_and_the_limit() -> None:
    assert slowness(measured(SLOWNESS_FLOOR - 0.1)).scale == 1.0  # noise: deadlines untouched
    assert slowness(measured(2.0)).scale == 2.0
    too = slowness(measured(SLOWNESS_SCALE_LIMIT + 5))
    assert too.scale == SLOWNESS_SCALE_LIMIT and too.too_slow
    assert "machine too slow" in too.describe()


def test_slowness_factor_is_wall_over_cpu() -> None:
    assert slowness_factor(1.0, 0.1) == 10.0
    assert slowness_factor(0.05, 0.1) == 1.0  # never below 1
    assert slowness_factor(1.0, 0.0) == 1.0


def test_measure_slowness_reads_injected_clocks() -> None:
    # Each wall reading advances 0.1 s, each CPU reading 0.01 s: the loop stops at its third CPU
    # reading (0.03 s spent), after two wall readings; the final readings are 0.3 s and 0.04 s.
    wall = itertools.count(0.0, 0.1)
    cpu = itertools.count(0.0, 0.01)
    factor = measure_slowness(cpu_s=0.03, wall=lambda: next(wall), cpu=lambda: next(cpu))
    assert factor == pytest.approx(0.3 / 0.04)


def _waiting_client(history_extra: list[dict[str, Any]], wait_s: float = 20.0) -> Any:
    # c1 sends at 1.0 and is never acknowledged: a `wait_s` wait against a 10 s failover deadline.
    history = [
        *played("c1"),
        rec(1.0, "c1", "invoke", "move", conn=1, seq=1),
        rec(1.0 + wait_s, "c1", "event", "stopped", hung=False, acked=0, sent=1),
        *history_extra,
    ]
    meta = {"expect": {"failover_deadline_s": 10.0}}
    return check_clean_failover(make_run(meta=meta, history=history))


def test_a_slow_machine_stretches_the_failover_deadline() -> None:
    assert _waiting_client([]).status == "fail"
    # x2.5: the deadline is 25 s, and a 20 s wait is within it.
    stretched = _waiting_client(measured(2.5))
    assert stretched.status == "pass", stretched.summary()
    assert "timing deadlines scaled x2.50" in stretched.note


def test_a_machine_too_slow_makes_timing_inconclusive_never_a_fail() -> None:
    # Even the stretched deadline (x3: 30 s) is exceeded, but on this machine that proves nothing.
    result = _waiting_client(measured(SLOWNESS_SCALE_LIMIT * 4), wait_s=40.0)
    assert result.status == "not_checked", result.summary()
    assert result.note.startswith("inconclusive: 1 timing finding(s) not judged: machine too slow")


def test_a_machine_too_slow_still_fails_what_is_not_timing() -> None:
    history = [
        *measured(SLOWNESS_SCALE_LIMIT * 4),
        *played("c1"),
        keepalive_close(2.0, "c1", code=1002, reason="protocol error"),
        rec(3.0, "c1", "event", "stopped", hung=False),
    ]
    result = check_clean_failover(make_run(history=history))
    assert result.status == "fail"


def test_recovery_not_given_the_stretched_deadline_is_inconclusive() -> None:
    meta = {"phases": {"heal_end": T0 + 5.0, "deadline_end": T0 + 20.0}, "expect": {"recovery_deadline_s": 15.0}}
    history = [*played("c1"), rec(25.0, "c1", "event", "stopped", hung=False)]
    assert check_recovers_after_heal(make_run(meta=meta, history=history)).status == "fail"
    slow = check_recovers_after_heal(make_run(meta=meta, history=[*measured(2.0), *history]))
    assert slow.status == "not_checked", slow.summary()
    assert "inconclusive" in slow.note


def test_a_machine_too_slow_sets_aside_aborts_only_while_the_balancer_lived() -> None:
    def judged(final: dict[str, Any]) -> str:
        history = [
            *measured(SLOWNESS_SCALE_LIMIT * 4),
            *played("c1"),
            keepalive_close(2.0, "c1", code=1006, reason=""),
            rec(3.0, "c1", "event", "stopped", hung=False),
        ]
        return check_clean_failover(make_run(meta={"final": final}, history=history)).status

    assert judged({"balancer_alive": True}) == "not_checked"
    assert judged({"balancer_alive": False}) == "fail"
    assert judged({}) == "fail"


# -- a 1006 the stalled client's own write caused (the keepalive close it never read) ----------------


EPIPE = "BrokenPipeError: [Errno 32] Broken pipe"


def close_lost_to_own_write(
    t: float, client: str, *, cause: str | None = EPIPE, sent_code: int | None = None
) -> dict[str, Any]:
    return rec(
        t, client, "event", "conn_close", conn=1, code=1006, reason="", initiator="remote",
        sent_code=sent_code, cause=cause,
    )  # fmt: skip


def excused_with_live_balancer(history: list[dict[str, Any]], balancer_survived: bool) -> list[str]:
    found = excused_keepalive_closes(
        client_histories(history), harness_stalls(history), ping_interval_s=0.5, ping_timeout_s=0.5,
        balancer_survived=balancer_survived,
    )  # fmt: skip
    return [e.client for e in found]


def test_a_1006_from_the_stalled_clients_own_write_is_excused_while_the_balancer_lives() -> None:
    history = [
        swarm_start(0.0, SWARM, ["c1", "c2"]),
        *played("c1"),
        *played("c2"),
        lag(2.0, SWARM, 900.0),
        close_lost_to_own_write(2.0, "c1"),
        close_lost_to_own_write(2.0, "c2", cause="ConnectionResetError: [Errno 104] Connection reset by peer"),
    ]
    assert excused_with_live_balancer(history, balancer_survived=True) == ["c1", "c2"]
    # A balancer that died leaves the same record: then nothing is excused.
    assert excused_with_live_balancer(history, balancer_survived=False) == []


def test_other_1006s_are_not_excused_even_with_a_live_balancer() -> None:
    history = [
        swarm_start(0.0, SWARM, ["c1", "c2", "c3", "c4"]),
        *(r for c in ("c1", "c2", "c3", "c4") for r in played(c)),
        lag(2.0, SWARM, 900.0),
        close_lost_to_own_write(2.0, "c1", sent_code=1002),  # the client failed the connection itself
        close_lost_to_own_write(2.0, "c2", cause=None),  # a plain EOF: the peer closed without a frame
        keepalive_close(2.0, "c3", code=1006, reason=""),  # an old history: no cause recorded
        close_lost_to_own_write(9.0, "c4"),  # long after the stall
    ]
    assert excused_with_live_balancer(history, balancer_survived=True) == []


def test_the_checker_sets_aside_a_1006_lost_to_the_clients_own_write() -> None:
    history = [
        swarm_start(0.0, SWARM, ["c1"]),
        *played("c1"),
        lag(2.0, SWARM, 900.0),
        close_lost_to_own_write(2.0, "c1"),
        rec(3.0, "c1", "event", "stopped", hung=False, acked=0, sent=0),
    ]
    alive = {"balancer_config": {"ping_interval_s": 0.5, "ping_timeout_s": 0.5}, "final": {"balancer_alive": True}}
    result = check_clean_failover(make_run(meta=alive, history=history))
    assert result.status == "not_checked", result.summary()
    assert "inconclusive: harness swarm stalled up to 900 ms (loop lag)" in result.note
    dead = {**alive, "final": {"balancer_alive": False}}
    assert check_clean_failover(make_run(meta=dead, history=history)).status == "fail"
