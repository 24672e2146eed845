from __future__ import annotations

import pytest
from checker_runs import T0, RunBuilder

from harness.checkers import check_single_upstream
from harness.history import make_run


def moved_to_secondary(rb: RunBuilder, primary_closes_at: float | None) -> None:
    """c1 plays on the primary, then is welcomed by the secondary at T0+1 on the same connection."""
    rb.backend_start("primary", T0 - 1)
    rb.backend_start("secondary", T0 - 1)
    rb.play("c1", T0, range(1, 5))
    if primary_closes_at is not None:
        rb.close_upstream("c1", primary_closes_at)
    rb.welcome("c1", T0 + 1.0, "secondary")
    rb.move("c1", T0 + 1.1, 5)


def test_healthy_run_passes(rb: RunBuilder) -> None:
    assert check_single_upstream(rb.healthy().build()).status == "pass"


def test_old_upstream_closed_before_the_new_one_passes(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 0.95)
    assert check_single_upstream(rb.build()).status == "pass"


def test_overlap_within_tolerance_passes(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 1.1)
    assert check_single_upstream(rb.build()).status == "pass"


def test_old_upstream_still_open_long_after_the_new_welcome_fails(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 3.0)
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    violation = result.violations[0]
    assert "attached to primary" in violation.message and "and secondary" in violation.message
    assert [e.get("f") or e.get("event") for e in violation.evidence][:2] == ["welcome", "open"]


def test_old_upstream_never_closed_fails(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=None)
    rb.conn_close("c1", T0 + 5.0)
    assert check_single_upstream(rb.build()).status == "fail"


def test_a_fault_on_the_old_backend_excuses_the_overlap_until_its_heal(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 29.1)  # e.g. a partition: closed at heal
    rb.fault(T0 + 0.9, "partition", "primary", "f1", heal_at=T0 + 29.0)
    result = check_single_upstream(rb.build())
    assert result.status == "pass"
    assert "1 overlap(s) excused: inside fault windows" in result.note


def test_a_fault_never_healed_excuses_the_overlap_to_the_end(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=None)
    rb.fault(T0 + 0.9, "pause", "primary", "f1")
    rb.conn_close("c1", T0 + 5.0)
    assert check_single_upstream(rb.build()).status == "pass"


def fault_then_failover(rb: RunBuilder, kind: str, primary_closes_at: float) -> None:
    """P1 serves c1 conn 1; a fault on the primary from t=1 to t=4; the secondary welcomes c1 on
    the same connection at t=2 (S1); the primary journals P1's close at `primary_closes_at`."""
    rb.backend_start("primary", T0 - 1)
    rb.backend_start("secondary", T0 - 1)
    rb.play("c1", T0, range(1, 5))  # welcomed by the primary at T0+0.01
    rb.fault(T0 + 1.0, kind, "primary", "f1", heal_at=T0 + 4.0)
    rb.welcome("c1", T0 + 2.0, "secondary")
    rb.move("c1", T0 + 2.1, 5)
    rb.journal("primary", primary_closes_at, "close", conn="primary-1", client="c1", code=1006, reason="")
    rb.conn_close("c1", T0 + 9.0)


@pytest.mark.parametrize("kind", ["partition", "pause"])
def test_old_upstream_kept_open_after_the_heal_fails(rb: RunBuilder, kind: str) -> None:
    fault_then_failover(rb, kind, primary_closes_at=T0 + 8.0)
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    [violation] = result.violations
    # Overlap 2..8; 2..4.01 is the fault window (heal ok at 4.01), 4.01..8 is counted.
    assert "attached to primary (primary-1) and secondary (secondary-2) at once for 3.990 s" in violation.message
    assert "from t+4.010s (when a fault on the backends had been healed)" in violation.message
    assert "inside fault windows not counted" in violation.message
    judged = violation.evidence[-1]
    assert judged["excused_fault_windows"] == [[T0 + 1.0, T0 + 4.01]]


@pytest.mark.parametrize("closes_at", [T0 + 4.1, T0 + 3.0, T0 + 1.5])
def test_old_upstream_closed_by_the_heal_or_before_passes(rb: RunBuilder, closes_at: float) -> None:
    fault_then_failover(rb, "partition", primary_closes_at=closes_at)
    assert check_single_upstream(rb.build()).status == "pass"


def test_the_tolerance_applies_after_the_heal(rb: RunBuilder) -> None:
    fault_then_failover(rb, "pause", primary_closes_at=T0 + 4.5)
    assert check_single_upstream(rb.build()).status == "fail"
    rb.meta["expect"]["upstream_overlap_tolerance_s"] = 1.0
    assert check_single_upstream(rb.build()).status == "pass"


def test_a_restart_excuses_only_until_the_backend_is_back(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 3.0)
    rb.fault(T0 + 0.9, "restart", "primary", "f1")  # no heal record: over once applied (T0+0.91)
    assert check_single_upstream(rb.build()).status == "fail"


def test_a_fault_on_another_target_does_not_excuse_the_overlap(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 3.0)
    rb.fault(T0 + 0.9, "latency", "lb", "f1", heal_at=T0 + 2.0)
    assert check_single_upstream(rb.build()).status == "fail"


def test_a_backend_restart_ends_its_old_connections(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=None)
    rb.backend_start("primary", T0 + 1.05)
    assert check_single_upstream(rb.build()).status == "pass"


def test_a_move_delivered_more_often_than_sent_fails(rb: RunBuilder) -> None:
    rb.healthy()
    # The balancer re-sends move 5 on the secondary although the primary had acknowledged it.
    rb.journal("secondary", T0 + 2.35, "recv", conn="secondary-x", client="c2", kind="move", seq=5, applied=False)
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    message = result.violations[0].message
    assert "move 5 was delivered to backends 2 times but sent 1 time(s)" in message
    assert "not in flight at any server transition, so no failover re-send is allowed" in message
    assert {e["journal"] for e in result.violations[0].evidence} == {"primary", "secondary"}


def in_flight_at_failover(rb: RunBuilder) -> None:
    """c1 sends move 5 to the primary, which receives it but dies before acknowledging; the
    secondary welcomes c1 on the same connection, the relay re-sends move 5 there first, and then
    the client re-sends every unacknowledged move (5 again)."""
    rb.backend_start("primary", T0 - 1)
    rb.backend_start("secondary", T0 - 1)
    rb.play("c1", T0, range(1, 5))
    rb.move("c1", T0 + 0.9, 5, ack=False)  # primary journals recv 5
    rb.close_upstream("c1", T0 + 0.95, code=1006)
    server_conn = rb.welcome("c1", T0 + 1.0, "secondary")
    rb.journal("secondary", T0 + 0.9995, "recv", conn=server_conn, client="c1", kind="move", seq=5, applied=True)
    rb.move("c1", T0 + 1.01, 5, attempt=2)  # client re-send: a dup on the secondary


def test_a_move_in_flight_at_the_failover_may_be_delivered_once_more_than_sent(rb: RunBuilder) -> None:
    in_flight_at_failover(rb)
    result = check_single_upstream(rb.build())
    assert result.status == "pass", result.summary()
    assert "delivery rule: deliveries <= sends + 1 per server transition with the move in flight" in result.note
    assert "1 in-flight move(s) delivered more often than sent" in result.note


def test_the_failover_allowance_is_one_re_send_per_transition(rb: RunBuilder) -> None:
    in_flight_at_failover(rb)
    rb.journal("secondary", T0 + 1.02, "recv", conn="secondary-2", client="c1", kind="move", seq=5, applied=False)
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    message = result.violations[0].message
    assert "move 5 was delivered to backends 4 times but sent 2 time(s)" in message
    assert "in flight at 1 server transition(s) (welcome at t+1.000s), so at most 3" in message


def test_a_move_sent_after_the_transition_and_delivered_to_both_backends_fails(rb: RunBuilder) -> None:
    in_flight_at_failover(rb)
    # The two-upstreams defect: move 6, sent after the welcome, also reaches the old backend.
    rb.move("c1", T0 + 1.1, 6)
    rb.journal("primary", T0 + 1.105, "recv", conn="primary-1", client="c1", kind="move", seq=6, applied=True)
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    [violation] = [v for v in result.violations if "move 6" in v.message]
    assert "delivered to backends 2 times but sent 1 time(s)" in violation.message
    assert "not in flight at any server transition" in violation.message
    assert "(rule: deliveries <= sends + 1 per server transition with the move in flight)" in violation.message
    assert not [v for v in result.violations if "move 5" in v.message]


def test_a_move_acknowledged_before_the_transition_gets_no_allowance(rb: RunBuilder) -> None:
    rb.backend_start("primary", T0 - 1)
    rb.backend_start("secondary", T0 - 1)
    rb.play("c1", T0, range(1, 5))  # move 4 acknowledged by the primary at T0+0.41
    rb.close_upstream("c1", T0 + 0.95, code=1006)
    server_conn = rb.welcome("c1", T0 + 1.0, "secondary")
    rb.journal("secondary", T0 + 1.001, "recv", conn=server_conn, client="c1", kind="move", seq=4, applied=False)
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    assert "move 4 was delivered to backends 2 times but sent 1 time(s)" in result.violations[0].message


def test_a_new_connection_is_not_a_transition(rb: RunBuilder) -> None:
    rb.backend_start("primary", T0 - 1)
    rb.backend_start("secondary", T0 - 1)
    rb.play("c1", T0, range(1, 5))
    rb.move("c1", T0 + 0.9, 5, ack=False)
    rb.conn_close("c1", T0 + 0.95, code=1006, initiator="remote")
    rb.play("c1", T0 + 1.0, range(5, 6), server="secondary", conn=2)  # the client re-sends 5: two sends
    assert check_single_upstream(rb.build()).status == "pass"
    # ...but a third delivery, on the new connection, has no allowance: it was no failover in place.
    rb.journal("secondary", T0 + 1.2, "recv", conn="secondary-2", client="c1", kind="move", seq=5, applied=False)
    assert check_single_upstream(rb.build()).status == "fail"


def test_without_journals_it_is_not_checked(rb: RunBuilder) -> None:
    rb.healthy()
    rb.journals.clear()
    assert check_single_upstream(rb.build()).status == "not_checked"
    assert check_single_upstream(make_run()).status == "not_checked"


# -- frames repeated toward the backends (frame_duplicate) -------------------------------------


def repeating_fault(
    rb: RunBuilder,
    at: float,
    heal_at: float,
    connections: int | None,
    stream: str = "upstream",
    fault_id: str = "f1",
    heal_took: float = 0.01,
) -> None:
    """A frame_duplicate step whose heal records that its toxic touched `connections` connections
    (None: a proxy that keeps no counters)."""
    fault = {"kind": "frame_duplicate", "target": "lb", "params": {"nth": 1, "stream": stream}}
    rb.rec(at, "nemesis", "invoke", "apply", fault=fault, fault_id=fault_id)
    rb.rec(at + 0.01, "nemesis", "ok", "apply", fault=fault, fault_id=fault_id)
    rb.rec(heal_at, "nemesis", "invoke", "heal", fault=fault, fault_id=fault_id)
    toxic = f"{fault_id}_frame_duplicate_{stream}"
    evidence = None if connections is None else {toxic: {"name": toxic, "connections": connections}}
    rb.rec(heal_at + heal_took, "nemesis", "ok", "heal", fault=fault, fault_id=fault_id, evidence=evidence)


def copies_delivered(rb: RunBuilder, *seq_times: tuple[int, float]) -> None:
    """c1 plays moves 1-6 on the primary from T0+0.1 (one each 0.1 s); each (seq, t) is one more
    delivery of that move, as a repeated frame makes."""
    rb.backend_start("primary", T0 - 1)
    rb.play("c1", T0, range(1, 7))
    server_conn = rb.records("c1", "welcome")[0]["server_conn"]
    for seq, t in seq_times:
        rb.journal("primary", t, "recv", conn=server_conn, client="c1", kind="move", seq=seq, applied=False)


def test_a_move_repeated_by_a_duplicating_fault_may_be_delivered_once_more(rb: RunBuilder) -> None:
    repeating_fault(rb, T0 + 0.15, T0 + 0.5, connections=1)
    copies_delivered(rb, (2, T0 + 0.2011))
    result = check_single_upstream(rb.build())
    assert result.status == "pass", result.violations
    assert "1 of 1 frame(s) repeated toward the backends by a fault explain one extra delivery each" in result.note


def test_more_extra_deliveries_than_repeated_frames_fail(rb: RunBuilder) -> None:
    repeating_fault(rb, T0 + 0.15, T0 + 0.5, connections=1)
    copies_delivered(rb, (2, T0 + 0.2011), (3, T0 + 0.3011))
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    [violation] = result.violations
    assert "move 3 was delivered to backends 2 times but sent 1 time(s)" in violation.message


def test_a_repeated_frame_never_explains_two_extra_deliveries_of_one_move(rb: RunBuilder) -> None:
    repeating_fault(rb, T0 + 0.15, T0 + 0.5, connections=5)
    copies_delivered(rb, (2, T0 + 0.2011), (2, T0 + 0.2012))
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    assert "move 2 was delivered to backends 3 times" in result.violations[0].message


def test_an_extra_delivery_outside_the_duplicating_fault_fails(rb: RunBuilder) -> None:
    repeating_fault(rb, T0 + 0.15, T0 + 0.2, connections=1)
    copies_delivered(rb, (6, T0 + 1.6))  # past the heal and its grace
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    assert "move 6 was delivered to backends 2 times" in result.violations[0].message


def test_frames_repeated_downstream_explain_no_extra_delivery(rb: RunBuilder) -> None:
    repeating_fault(rb, T0 + 0.15, T0 + 0.5, connections=4, stream="downstream")
    copies_delivered(rb, (2, T0 + 0.2011))
    assert check_single_upstream(rb.build()).status == "fail"


def test_a_duplicating_fault_without_counters_explains_nothing_and_says_so(rb: RunBuilder) -> None:
    repeating_fault(rb, T0 + 0.15, T0 + 0.5, connections=None)
    copies_delivered(rb, (2, T0 + 0.2011))
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    assert "fault(s) f1 repeat frames but their proxy kept no counters" in result.note


def test_a_copy_past_the_count_during_the_heal_fails_the_counters_are_final(rb: RunBuilder) -> None:
    # The heal (T0+0.25 to T0+0.45) reads the counters once the toxic is removed, so a copy it did
    # not count was made by no fault, whenever it arrived.
    repeating_fault(rb, T0 + 0.15, T0 + 0.25, connections=1, heal_took=0.2)
    copies_delivered(rb, (2, T0 + 0.2011), (3, T0 + 0.3011))
    result = check_single_upstream(rb.build())
    assert result.status == "fail"
    [violation] = result.violations
    assert "move 3 was delivered to backends 2 times but sent 1 time(s)" in violation.message
    assert "not judged" not in result.note


def _measured_slowness(rb: RunBuilder, factor: float) -> None:
    rb.rec(T0 - 1.0, "swarm-1", "event", "swarm_start", clients=["c1"], slowness=factor)


def test_the_overlap_tolerance_stretches_with_the_measured_slowness(rb: RunBuilder) -> None:
    # 0.3 s past the new welcome: a close handshake's time at slowness x2 (0.25 s x 2), not on a
    # machine with a core to spare.
    moved_to_secondary(rb, primary_closes_at=T0 + 1.3)
    _measured_slowness(rb, 2.0)
    result = check_single_upstream(rb.build())
    assert result.status == "pass", result
    assert "overlap tolerance 0.25 s x2.00" in result.note
    _measured_slowness(rb, 1.0)  # the worst a swarm measured counts: still x2
    assert check_single_upstream(rb.build()).status == "pass"


def test_the_same_overlap_on_a_machine_not_slow_fails(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 1.3)
    _measured_slowness(rb, 1.0)
    assert check_single_upstream(rb.build()).status == "fail"


def test_on_a_machine_too_slow_an_overlap_the_slowness_explains_is_inconclusive(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 2.5)  # 1.5 s: past 0.25 x 3, within 0.25 x 7.2
    _measured_slowness(rb, 7.2)
    result = check_single_upstream(rb.build())
    assert result.status == "not_checked", result
    assert result.note.startswith("inconclusive: 1 overlap(s) within 1.800 s"), result.note


def test_on_a_machine_too_slow_a_longer_overlap_still_fails(rb: RunBuilder) -> None:
    moved_to_secondary(rb, primary_closes_at=T0 + 4.0)  # 3 s, as the two_upstreams mutant keeps both
    _measured_slowness(rb, 7.2)
    assert check_single_upstream(rb.build()).status == "fail"
