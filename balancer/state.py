"""Per-connection state machine and the session table.

Pure: no I/O. The table is the single source of truth for /status, so every
exit path of a session must end in ``SessionTable.remove``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from balancer.policy import FailoverLimiter


class ConnState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILING_OVER = "failing_over"
    CLOSING = "closing"
    CLOSED = "closed"


_TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    ConnState.CONNECTING: frozenset({ConnState.CONNECTED, ConnState.CLOSING}),
    ConnState.CONNECTED: frozenset({ConnState.FAILING_OVER, ConnState.CLOSING}),
    ConnState.FAILING_OVER: frozenset({ConnState.CONNECTED, ConnState.CLOSING}),
    ConnState.CLOSING: frozenset({ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


class SessionError(RuntimeError):
    pass


@dataclass
class ConnectionState:
    session: str
    state: ConnState = ConnState.CONNECTING
    upstream: str | None = None
    history: list[ConnState] = field(default_factory=lambda: [ConnState.CONNECTING])

    def transition(self, new: ConnState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"session {self.session}: {self.state.value} -> {new.value} is not allowed")
        self.state = new
        self.history.append(new)


@dataclass(frozen=True)
class SessionInfo:
    session: str
    path: str


class SessionTable:
    """The three tables /status reports, kept consistent by one owner.

    ``active`` holds live client connections, ``states`` their state machines,
    ``reconnects`` the per-session failover limiters (created on a session's
    first failover, dropped with the session).
    """

    def __init__(self) -> None:
        self.active: dict[str, SessionInfo] = {}
        self.states: dict[str, ConnectionState] = {}
        self.reconnects: dict[str, FailoverLimiter] = {}

    def register(self, session: str, path: str) -> ConnectionState:
        if session in self.active or session in self.states:
            raise SessionError(f"session {session} is already registered")
        self.active[session] = SessionInfo(session, path)
        st = ConnectionState(session)
        self.states[session] = st
        return st

    def get(self, session: str) -> ConnectionState:
        try:
            return self.states[session]
        except KeyError:
            raise SessionError(f"session {session} is not registered") from None

    def transition(self, session: str, new: ConnState) -> None:
        self.get(session).transition(new)

    def attach(self, session: str, backend: str) -> None:
        st = self.get(session)
        if st.upstream is not None:
            raise SessionError(
                f"session {session} is already attached to {st.upstream}; refusing to attach it to {backend} as well"
            )
        if st.state not in (ConnState.CONNECTING, ConnState.FAILING_OVER):
            raise SessionError(f"session {session}: cannot attach while {st.state.value}")
        st.upstream = backend

    def detach(self, session: str) -> str | None:
        st = self.get(session)
        backend, st.upstream = st.upstream, None
        return backend

    def limiter(self, session: str, factory: Callable[[], FailoverLimiter]) -> FailoverLimiter:
        self.get(session)
        lim = self.reconnects.get(session)
        if lim is None:
            lim = self.reconnects[session] = factory()
        return lim

    def remove(self, session: str) -> None:
        """Drop every entry of ``session``; idempotent so cleanup can't fail twice."""
        st = self.states.pop(session, None)
        if st is not None and st.state is not ConnState.CLOSED:
            if st.state is not ConnState.CLOSING:
                st.transition(ConnState.CLOSING)
            st.transition(ConnState.CLOSED)
        self.active.pop(session, None)
        self.reconnects.pop(session, None)

    def counts(self) -> dict[str, int]:
        return {
            "active_connections": len(self.active),
            "connection_states": len(self.states),
            "reconnect_attempts": len(self.reconnects),
        }

    def by_state(self) -> dict[str, int]:
        out = {s.value: 0 for s in ConnState if s is not ConnState.CLOSED}
        for st in self.states.values():
            out[st.state.value] = out.get(st.state.value, 0) + 1
        return out
