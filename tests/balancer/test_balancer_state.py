"""The per-connection state machine and the session table."""

from __future__ import annotations

import contextlib

import pytest

from balancer.events import EventLog
from balancer.policy import FailoverLimiter
from balancer.state import (
    ConnectionState,
    ConnState,
    IllegalTransition,
    SessionError,
    SessionTable,
)

C = ConnState


def test_happy_path_with_two_failovers() -> None:
    st = ConnectionState("s1")
    for s in (C.CONNECTED, C.FAILING_OVER, C.CONNECTED, C.FAILING_OVER, C.CONNECTED, C.CLOSING, C.CLOSED):
        st.transition(s)
    assert st.state is C.CLOSED
    assert st.history[0] is C.CONNECTING and len(st.history) == 8


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ((), C.FAILING_OVER),  # can't fail over before the first upstream
        ((), C.CLOSED),  # closed only via closing
        ((C.CONNECTED,), C.CONNECTING),
        ((C.CONNECTED,), C.CONNECTED),
        ((C.CONNECTED, C.FAILING_OVER), C.FAILING_OVER),
        ((C.CONNECTED, C.CLOSING), C.CONNECTED),
        ((C.CONNECTED, C.CLOSING, C.CLOSED), C.CLOSING),
        ((C.CONNECTED, C.CLOSING, C.CLOSED), C.CONNECTED),
    ],
)
def test_illegal_transitions_raise(path: tuple[ConnState, ...], bad: ConnState) -> None:
    st = ConnectionState("s1")
    for s in path:
        st.transition(s)
    with pytest.raises(IllegalTransition):
        st.transition(bad)


@pytest.mark.parametrize("via", [C.CONNECTING, C.CONNECTED, C.FAILING_OVER])
def test_every_live_state_can_close(via: ConnState) -> None:
    st = ConnectionState("s1")
    if via is not C.CONNECTING:
        st.transition(C.CONNECTED)
    if via is C.FAILING_OVER:
        st.transition(C.FAILING_OVER)
    st.transition(C.CLOSING)
    st.transition(C.CLOSED)


def test_table_refuses_double_registration() -> None:
    t = SessionTable()
    t.register("s1", "/play?client=a")
    with pytest.raises(SessionError):
        t.register("s1", "/other")


def test_table_never_attaches_two_upstreams() -> None:
    t = SessionTable()
    t.register("s1", "/")
    t.attach("s1", "primary")
    with pytest.raises(SessionError):
        t.attach("s1", "secondary")
    t.transition("s1", C.CONNECTED)
    assert t.detach("s1") == "primary"
    with pytest.raises(SessionError, match="cannot attach while connected"):
        t.attach("s1", "secondary")
    t.transition("s1", C.FAILING_OVER)
    t.attach("s1", "secondary")
    assert t.get("s1").upstream == "secondary"


def test_remove_drops_every_table_entry_and_is_idempotent() -> None:
    t = SessionTable()
    t.register("s1", "/")
    t.register("s2", "/")
    t.transition("s1", C.CONNECTED)
    lim = t.limiter("s1", FailoverLimiter)
    assert t.limiter("s1", FailoverLimiter) is lim, "one limiter per session"
    assert t.counts() == {"active_connections": 2, "connection_states": 2, "reconnect_attempts": 1}
    assert t.by_state()["connected"] == 1 and t.by_state()["connecting"] == 1
    t.remove("s1")
    t.remove("s1")
    t.remove("s2")
    assert t.counts() == {"active_connections": 0, "connection_states": 0, "reconnect_attempts": 0}
    t.register("s1", "/")  # a removed id may not linger


def test_unknown_session() -> None:
    t = SessionTable()
    with pytest.raises(SessionError):
        t.transition("nope", C.CONNECTED)
    with pytest.raises(SessionError):
        t.limiter("nope", FailoverLimiter)


def test_an_event_line_on_a_full_disk_is_dropped_not_raised() -> None:
    # /dev/full answers every write with ENOSPC: the build's stdout on a full disk must not take
    # the relay down (the harness sets such a run aside by the full file system).
    full = open("/dev/full", "w", encoding="utf-8")  # closed below, where it may fail
    try:
        EventLog(stream=full).emit("session_open", session="s1")
        EventLog(stream=full).emit("session_close", session="s1")
    finally:
        with contextlib.suppress(OSError):  # the lost line is still in the buffer at close
            full.close()
