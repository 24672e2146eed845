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
