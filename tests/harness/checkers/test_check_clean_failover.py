from __future__ import annotations

from checker_runs import T0, RunBuilder

from harness.checkers import check_clean_failover
from harness.history import make_run


def finished(rb: RunBuilder, client: str, t: float, conn: int = 1) -> None:
    rb.conn_close(client, t, conn)
    rb.stopped(client, t + 0.1)


def test_healthy_run_passes(rb: RunBuilder) -> None:
    assert check_clean_failover(rb.healthy().build()).status == "pass"


def test_an_unexpected_remote_close_is_a_dropped_connection(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 3))
    rb.conn_close("c1", T0 + 1.0, code=1006, initiator="remote")
    rb.stopped("c1", T0 + 1.1)
    result = check_clean_failover(rb.build())
    assert result.status == "fail"
    assert "connection dropped" in result.violations[0].message
    assert "1006" in result.violations[0].message
    rb.meta["expect"]["close_codes"] = [1006]
    assert check_clean_failover(rb.build()).status == "pass"


def test_1013_is_acceptable_only_when_expected(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 3))
    rb.conn_close("c1", T0 + 1.0, code=1013, initiator="remote")
    rb.stopped("c1", T0 + 1.1)
    result = check_clean_failover(rb.build())
    assert result.status == "fail"
    assert "1013" in result.violations[0].message
    rb.meta["expect"]["close_codes"] = [1013]
    assert check_clean_failover(rb.build()).status == "pass"


def test_a_stall_longer_than_the_deadline_fails(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 3))
    rb.move("c1", T0 + 1.0, 3, latency=12.0)
    finished(rb, "c1", T0 + 14.0)
    result = check_clean_failover(rb.build())
    assert result.status == "fail"
    assert "waited 12.000 s" in result.violations[0].message
    assert result.violations[0].evidence[1] == {"outstanding": [3]}


def test_a_stall_is_only_counted_inside_the_judged_phases(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 3))
    rb.move("c1", T0 + 1.0, 3, latency=12.0)
    finished(rb, "c1", T0 + 14.0)
    rb.meta["phases"] = {"warmup_end": T0 + 5.0, "deadline_end": T0 + 30.0}
    assert check_clean_failover(rb.build()).status == "pass"


def test_a_stall_that_never_ends_fails(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 3))
    rb.move("c1", T0 + 1.0, 3, ack=False)
    rb.stopped("c1", T0 + 20.0)
    result = check_clean_failover(rb.build())
    assert result.status == "fail"
    assert "waited 19.000 s" in result.violations[0].message


def test_idle_time_without_outstanding_moves_is_not_a_stall(rb: RunBuilder) -> None:
    end = rb.play("c1", T0, range(1, 3))
    rb.move("c1", end + 30.0, 3)
    finished(rb, "c1", end + 31.0)
    assert check_clean_failover(rb.build()).status == "pass"


def test_a_client_that_never_stopped_fails(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 3))
    result = check_clean_failover(rb.build())
    assert result.status == "fail"
    assert "client never stopped" in result.violations[0].message


def test_a_hung_client_fails(rb: RunBuilder) -> None:
    rb.play("c1", T0, range(1, 3))
    rb.stopped("c1", T0 + 2.0, hung=True)
    result = check_clean_failover(rb.build())
    assert result.status == "fail"
    assert "client hung" in result.violations[0].message


def test_no_clients_is_not_checked() -> None:
    assert check_clean_failover(make_run()).status == "not_checked"


# -- a stall the heal ended, not a failover ----------------------------------------------------------


def one_way_partition(
    rb: RunBuilder, slowness: float | None, stall_s: float = 6.0, welcome_before_ack_s: float | None = None
) -> None:
    """c1 plays through the primary; its move 3 gets no ack for `stall_s` under a partition of the
    primary whose heal begins 0.05 s before the ack, against a 4 s failover deadline. With
    `welcome_before_ack_s`, c1 was moved to the secondary (a welcome) that long before the ack."""
    rb.meta["expect"]["failover_deadline_s"] = 4.0
    if slowness is not None:
        rb.rec(T0 - 1.0, "swarm-1", "event", "swarm_start", clients=["c1"], slowness=slowness)
    rb.play("c1", T0, range(1, 3))
    rb.fault(T0 + 0.5, "partition", "primary", "f1", heal_at=T0 + 0.5 + stall_s - 0.05)
    if welcome_before_ack_s is not None:
        rb.welcome("c1", t=T0 + 0.5 + stall_s - welcome_before_ack_s, server="secondary")
    rb.move("c1", T0 + 0.5, 3, latency=stall_s)
    finished(rb, "c1", T0 + 0.5 + stall_s + 1.0)


def test_a_heal_rescued_stall_on_a_calm_machine_fails(rb: RunBuilder) -> None:
    one_way_partition(rb, slowness=1.0)
    result = check_clean_failover(rb.build())
    assert result.status == "fail"
    assert "waited 6.000 s" in result.violations[0].message


def test_a_heal_rescued_stall_within_only_the_stretched_deadline_is_inconclusive(rb: RunBuilder) -> None:
    # x4 measured: the deadline stretches x3 to 12 s, but no failover ended the 6 s stall; the heal did.
    one_way_partition(rb, slowness=4.0)
    result = check_clean_failover(rb.build())
    assert result.status == "not_checked", result.summary()
    assert not result.violations
    assert result.note.startswith("inconclusive: 1 stall(s) with no failover before the heal")
    assert "unstretched failover_deadline_s 4" in result.note
    assert "client c1 got no acknowledgement for 6.000 s" in result.note
    assert "partition:primary" in result.note and "resumed only after it" in result.note


def test_a_heal_rescued_stall_on_a_stretched_machine_is_inconclusive_too(rb: RunBuilder) -> None:
    one_way_partition(rb, slowness=2.0)  # stretched to 8 s, not "too slow"
    result = check_clean_failover(rb.build())
    assert result.status == "not_checked", result.summary()
    assert "only the slowness stretch x2.00 would pass it" in result.note


def test_a_heal_rescued_stall_past_even_the_stretched_deadline_fails(rb: RunBuilder) -> None:
    one_way_partition(rb, slowness=2.0, stall_s=9.0)
    result = check_clean_failover(rb.build())
    assert result.status == "fail"
    assert "waited 9.000 s" in result.violations[0].message
    assert "failover_deadline_s 8" in result.violations[0].message


def test_a_slow_failover_within_the_stretched_deadline_passes(rb: RunBuilder) -> None:
    # The same stall, but ended by a failover (a new upstream's welcome) before the heal began:
    # what the stretch is for.
    one_way_partition(rb, slowness=4.0, welcome_before_ack_s=0.5)
    result = check_clean_failover(rb.build())
    assert result.status == "pass", result.summary()


def test_a_failover_after_the_heal_began_is_the_heals_doing(rb: RunBuilder) -> None:
    # Removing a blackhole resets the connections it held; any build then reconnects and is
    # welcomed. That welcome is no evidence that the build noticed the stall itself.
    one_way_partition(rb, slowness=4.0, welcome_before_ack_s=0.02)
    result = check_clean_failover(rb.build())
    assert result.status == "not_checked", result.summary()
    assert "no failover before the heal of partition:primary began at" in result.note


def test_a_heal_rescued_stall_within_the_unstretched_deadline_passes(rb: RunBuilder) -> None:
    one_way_partition(rb, slowness=4.0, stall_s=3.5)
    assert check_clean_failover(rb.build()).status == "pass"


def test_a_slow_stall_with_no_heal_in_it_is_still_stretched(rb: RunBuilder) -> None:
    # The partition was healed before the move was sent: the heal cannot have ended this stall.
    rb.meta["expect"]["failover_deadline_s"] = 4.0
    rb.rec(T0 - 1.0, "swarm-1", "event", "swarm_start", clients=["c1"], slowness=4.0)
    rb.play("c1", T0, range(1, 3))
    rb.fault(T0 + 0.3, "partition", "primary", "f1", heal_at=T0 + 0.4)
    rb.move("c1", T0 + 0.5, 3, latency=6.0)
    finished(rb, "c1", T0 + 7.5)
    assert check_clean_failover(rb.build()).status == "pass"


def test_a_stall_through_the_heal_that_never_resumed_is_inconclusive_on_a_slow_machine(rb: RunBuilder) -> None:
    # no_keepalive on idle_timeout: the forgotten upstreams are never replaced, not even after the
    # heal; the client stalls until it stops. The stretch would pass it; that proves nothing.
    rb.meta["expect"]["failover_deadline_s"] = 10.0
    rb.rec(T0 - 1.0, "swarm-1", "event", "swarm_start", clients=["c1"], slowness=5.7)
    rb.play("c1", T0, range(1, 3))
    rb.fault(T0 + 0.5, "idle_timeout", "primary", "f1", heal_at=T0 + 9.0)
    rb.move("c1", T0 + 1.0, 3, ack=False)
    finished(rb, "c1", T0 + 21.0)
    result = check_clean_failover(rb.build())
    assert result.status == "not_checked", result.summary()
    assert "got no acknowledgement for 20.000 s" in result.note and "never resumed" in result.note


def test_a_stall_through_the_heal_that_never_resumed_fails_on_a_calm_machine(rb: RunBuilder) -> None:
    rb.meta["expect"]["failover_deadline_s"] = 10.0
    rb.play("c1", T0, range(1, 3))
    rb.fault(T0 + 0.5, "idle_timeout", "primary", "f1", heal_at=T0 + 9.0)
    rb.move("c1", T0 + 1.0, 3, ack=False)
    finished(rb, "c1", T0 + 21.0)
    result = check_clean_failover(rb.build())
    assert result.status == "fail"
    assert "waited 20.000 s" in result.violations[0].message


def test_a_stall_the_balancer_closed_is_judged_as_a_drop_not_set_aside(rb: RunBuilder) -> None:
    rb.meta["expect"]["failover_deadline_s"] = 4.0
    rb.rec(T0 - 1.0, "swarm-1", "event", "swarm_start", clients=["c1"], slowness=4.0)
    rb.play("c1", T0, range(1, 3))
    rb.fault(T0 + 0.5, "partition", "primary", "f1", heal_at=T0 + 5.0)
    rb.move("c1", T0 + 0.5, 3, ack=False)
    rb.conn_close("c1", T0 + 6.5, code=1011, initiator="remote")
    rb.stopped("c1", T0 + 6.6)
    result = check_clean_failover(rb.build())
    assert result.status == "fail"
    assert "connection dropped" in result.violations[0].message
    assert "with no failover before the heal" not in result.note
