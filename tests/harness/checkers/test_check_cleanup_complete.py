from __future__ import annotations

from checker_runs import T0, RunBuilder, empty_status

from harness.checkers import check_cleanup_complete
from harness.history import make_run


def test_healthy_run_passes(rb: RunBuilder) -> None:
    assert check_cleanup_complete(rb.healthy().build()).status == "pass"


def test_leftover_status_entries_fail(rb: RunBuilder) -> None:
    rb.healthy().meta["final"]["status"] = empty_status(
        sessions=1,
        tables={"active_connections": 0, "connection_states": ["c1"], "reconnect_attempts": 2},
        backends=[{"name": "secondary", "connection_count": 1, "healthy": True}],
    )
    result = check_cleanup_complete(rb.build())
    assert result.status == "fail"
    message = result.violations[0].message
    for part in ("sessions=1", "tables.connection_states=1", "tables.reconnect_attempts=2"):
        assert part in message
    assert "backends[secondary].connection_count=1" in message


def test_backend_still_holding_connections_fails(rb: RunBuilder) -> None:
    rb.healthy().meta["final"]["backend_open_connections"] = {"primary": 0, "secondary": 2}
    result = check_cleanup_complete(rb.build())
    assert result.status == "fail"
    assert "secondary=2" in result.violations[0].message


def test_a_killed_backends_counts_are_ignored(rb: RunBuilder) -> None:
    rb.healthy().meta["final"]["backend_open_connections"] = {"primary": 0, "secondary": 2}
    rb.meta["final"]["backend_alive"] = {"primary": True, "secondary": False}
    assert check_cleanup_complete(rb.build()).status == "pass"


def test_journaled_open_without_close_fails(rb: RunBuilder) -> None:
    rb.healthy()
    rb.journal("secondary", T0 + 4.0, "open", conn="secondary-leak", client="c9", path="/play?client=c9")
    result = check_cleanup_complete(rb.build())
    assert result.status == "fail"
    assert result.violations[0].evidence[0]["conn"] == "secondary-leak"


def test_open_ended_by_a_later_backend_start_is_not_a_leak(rb: RunBuilder) -> None:
    rb.journal("primary", T0, "open", conn="p-1", client="c1")
    rb.journal("primary", T0 + 1, "start", pid=2, port=1)
    assert check_cleanup_complete(rb.build()).status == "pass"


def test_open_on_a_backend_left_dead_is_not_a_leak(rb: RunBuilder) -> None:
    rb.journal("primary", T0, "open", conn="p-1", client="c1")
    rb.meta["final"] = {"backend_alive": {"primary": False}}
    assert check_cleanup_complete(rb.build()).status == "pass"


def test_socket_count_above_baseline_fails_unless_tolerated(rb: RunBuilder) -> None:
    rb.healthy().meta["final"]["balancer_sockets"] = 5
    result = check_cleanup_complete(rb.build())
    assert result.status == "fail"
    assert "5 sockets" in result.violations[0].message
    rb.meta["expect"]["socket_tolerance"] = 2
    assert check_cleanup_complete(rb.build()).status == "pass"


def test_partial_data_passes_and_names_what_was_not_checked() -> None:
    result = check_cleanup_complete(
        make_run(meta={"baseline": {"balancer_sockets": 3}, "final": {"balancer_sockets": 3}})
    )
    assert result.status == "pass"
    assert "no final /status" in result.note
    assert "no journals" in result.note


def test_nothing_to_judge_is_not_checked() -> None:
    assert check_cleanup_complete(make_run(meta={"final": {}})).status == "not_checked"
