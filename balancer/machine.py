"""The relay's decisions, Sans-I/O: events in, actions out.

One ``RelayMachine`` per client session decides everything the relay has to
choose: which backend to connect to next, whether an upstream's close is
passed through or failed over, when the limiter or a shutdown refuses, which
close code the client gets, and the resend-once rule for the message that was
in flight when an upstream died. It holds no sockets and reads no clock: the
I/O shell (``balancer.session``) reports what happened as plain data (with
``now``), carries out the returned actions in order, and reports their
results as the next events. So the same machine can sit under any data path,
and every transition is tested without a socket.

Event lines that record a decision (``upstream_open``, ``upstream_lost``,
``failover_attempt``, ``message_resent``) are actions too; the shell writes
the lines that report I/O it observed itself.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from balancer.policy import REFUSED_SHUTTING_DOWN, Decision, FailoverLimiter, choose_backend
from balancer.state import ConnState

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_ABNORMAL = 1006
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013

Payload = str | bytes
StatName = Literal["upstreams_lost", "dropped_inflight", "failover_allowed", "failover_refused", "resent_messages"]


def ends_session(code: int) -> bool:
    """A backend close that is a decision, not a failure: pass it on, no failover."""
    return code == CLOSE_NORMAL or 4000 <= code <= 4999


def sendable(code: int | None) -> int:
    """A close code we may put on the wire to the other leg."""
    if code is not None and (code in (CLOSE_NORMAL, CLOSE_GOING_AWAY) or 3000 <= code <= 4999):
        return code
    return CLOSE_GOING_AWAY


# -- actions ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Open an upstream to ``backend``; report upstream_opened or connect_failed."""

    backend: str


@dataclass(frozen=True, slots=True)
class Resend:
    """Deliver ``data`` first on the new upstream, before any further client message."""

    data: Payload


@dataclass(frozen=True, slots=True)
class CloseClient:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class CloseUpstream:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class MarkDown:
    backend: str
    why: str


@dataclass(frozen=True, slots=True)
class Enter:
    """Move the session's entry in the session table to ``state``."""

    state: ConnState


@dataclass(frozen=True, slots=True)
class Emit:
    """Write an event line (docs/contract.md, section 6) for this session."""

    event: str
    fields: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Count:
    stat: StatName


Action = Connect | Resend | CloseClient | CloseUpstream | MarkDown | Enter | Emit | Count


class Phase(enum.Enum):
    IDLE = "idle"  # before start()
    CONNECTING = "connecting"  # a Connect is out; its result is the next event
    RELAYING = "relaying"  # an upstream is attached
    DONE = "done"  # nothing more to decide; the shell cleans up


class IllegalEvent(RuntimeError):
    """The shell reported an event the machine cannot be waiting for (a bug in the shell)."""


class RelayMachine:
    """The decisions of one client session.

    ``backends`` is the priority order; ``limiter`` returns this session's
    failover limiter and is only called when a failover is to be decided (the
    session table creates its ``reconnect_attempts`` entry on that first call).
    """

    def __init__(self, backends: Sequence[str], limiter: Callable[[], FailoverLimiter]) -> None:
        self.backends = tuple(backends)
        self._limiter = limiter
        self.phase = Phase.IDLE
        self.backend: str | None = None  # the attached upstream's backend
        self._tried: set[str] = set()
        self._failing_over = False
        # The client message being handed to the upstream: if the upstream is
        # lost with it set, it was not delivered.
        self._inflight: Payload | None = None
        self._inflight_resent = False
        self._retry: Payload | None = None  # re-sent first on the next upstream
        self._stopping = False
        self._client_close_ordered = False

    @property
    def finished(self) -> bool:
        return self.phase is Phase.DONE

    # -- events ------------------------------------------------------------

    def start(self, health: Mapping[str, bool]) -> list[Action]:
        """A client connected; pick its first upstream."""
        self._expect(Phase.IDLE, "start")
        return self._connect_next(health)

    def upstream_opened(self, backend: str) -> list[Action]:
        """The upstream asked for by the last Connect is open and accounted for."""
        self._expect(Phase.CONNECTING, "upstream_opened")
        self.phase = Phase.RELAYING
        self.backend = backend
        actions: list[Action] = [Emit("upstream_open", {"backend": backend}), Enter(ConnState.CONNECTED)]
        if self._retry is not None:
            # From here on it is in flight as a resent copy: lost again, it is dropped.
            self._inflight, self._inflight_resent, self._retry = self._retry, True, None
            actions.append(Resend(self._inflight))
        return actions

    def connect_failed(self, backend: str, health: Mapping[str, bool]) -> list[Action]:
        self._expect(Phase.CONNECTING, "connect_failed")
        return self._connect_next(health)

    def client_message(self, data: Payload) -> None:
        """A client message is about to be handed to the upstream."""
        self._inflight, self._inflight_resent = data, False

    def message_delivered(self) -> Sequence[Action]:
        """The in-flight message was written to the upstream."""
        resent = self._inflight_resent and self._inflight is not None
        self._inflight, self._inflight_resent = None, False
        if resent:
            return (Count("resent_messages"), Emit("message_resent", {"backend": self.backend}))
        return ()

    def client_closed(self, code: int | None) -> list[Action]:
        """The client connection is closed or closing with ``code`` (None: no close frame)."""
        if self.phase is Phase.DONE:
            return []
        attached = self.phase is Phase.RELAYING
        self.phase = Phase.DONE
        return [CloseUpstream(sendable(code), "client closed")] if attached else []

    def upstream_lost(
        self,
        code: int | None,
        reason: str,
        *,
        now: float,
        health: Mapping[str, bool],
        client_open: bool,
    ) -> list[Action]:
        """The attached upstream ended with ``code`` (None: no close frame, i.e. 1006)."""
        self._expect(Phase.RELAYING, "upstream_lost")
        failed = self.backend
        assert failed is not None
        self.backend = None
        code = code or CLOSE_ABNORMAL
        actions: list[Action] = [Count("upstreams_lost"), Emit("upstream_lost", {"backend": failed, "code": code})]
        if self._inflight is not None:
            if self._inflight_resent:
                actions.append(Count("dropped_inflight"))
            else:
                self._retry = self._inflight
            self._inflight, self._inflight_resent = None, False

        if ends_session(code):
            self._retry = None
            return actions + self._end(CloseClient(code, reason))

        actions += [MarkDown(failed, f"upstream closed with {code}"), Enter(ConnState.FAILING_OVER)]
        if not client_open:
            self.phase = Phase.DONE
            return actions
        if self._stopping:
            decision = Decision(False, REFUSED_SHUTTING_DOWN)
        else:
            decision = self._limiter().try_acquire(now)
        actions.append(Emit("failover_attempt", {"allowed": decision.allowed, "reason": decision.reason}))
        if not decision.allowed:
            actions.append(Count("failover_refused"))
            code_out = CLOSE_GOING_AWAY if self._stopping else CLOSE_TRY_AGAIN_LATER
            return actions + self._end(CloseClient(code_out, f"failover refused: {decision.reason}"))
        actions.append(Count("failover_allowed"))
        self._failing_over = True
        self._tried = {failed}
        return actions + self._connect_next(health)

    def shutdown(self) -> list[Action]:
        """The balancer is stopping: no more upstreams, the client gets 1001."""
        self._stopping = True
        if self.phase is Phase.DONE:
            return []
        if self.phase is not Phase.RELAYING:
            # Nothing attached, so nothing else will end the session.
            return self._end(CloseClient(CLOSE_GOING_AWAY, "balancer shutting down"))
        # The attached leg ends when the client's close completes, and its
        # client_closed or upstream_lost finishes the session.
        return self._order_client_close(CloseClient(CLOSE_GOING_AWAY, "balancer shutting down"))

    # -- helpers -----------------------------------------------------------

    def _expect(self, phase: Phase, event: str) -> None:
        if self.phase is not phase:
            raise IllegalEvent(f"{event} while {self.phase.value}; expected {phase.value}")

    def _next_backend(self, health: Mapping[str, bool]) -> str | None:
        healthy = choose_backend(self.backends, health, exclude=self._tried)
        if healthy is not None:
            return healthy
        # Health is only as fresh as the last probe, so the backends marked
        # down are still tried, last; a refused connect to one is cheap.
        return choose_backend(self.backends, {}, exclude=self._tried)

    def _connect_next(self, health: Mapping[str, bool]) -> list[Action]:
        nxt = None if self._stopping else self._next_backend(health)
        if nxt is None:
            if self._stopping:
                return self._end(CloseClient(CLOSE_GOING_AWAY, "balancer shutting down"))
            reason = "no backend reachable" if self._failing_over else "no backend available"
            return self._end(CloseClient(CLOSE_TRY_AGAIN_LATER, reason))
        self._tried.add(nxt)
        self.phase = Phase.CONNECTING
        return [Connect(nxt)]

    def _end(self, close: CloseClient) -> list[Action]:
        self.phase = Phase.DONE
        self._retry = None
        return self._order_client_close(close)

    def _order_client_close(self, close: CloseClient) -> list[Action]:
        # The first close ordered is the one the client gets.
        if self._client_close_ordered:
            return []
        self._client_close_ordered = True
        return [close]
