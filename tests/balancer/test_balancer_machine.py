"""Every transition of the relay's decision machine, without a socket or a clock."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from balancer.machine import (
    Action,
    CloseClient,
    CloseUpstream,
    Connect,
    Count,
    Emit,
    Enter,
    IllegalEvent,
    MarkDown,
    Phase,
    RelayMachine,
    Resend,
    ends_session,
    sendable,
)
from balancer.policy import FailoverLimiter
from balancer.state import ConnState

T0 = 1000.0  # far from 0, so "no attempt yet" can't hide behind t=0
ALL_UP: Mapping[str, bool] = {}


class Limiters:
    """Hands out one limiter, like SessionTable.limiter, and counts the calls."""

    def __init__(self, max_attempts: int = 3, window_s: float = 60.0, min_interval_s: float = 5.0) -> None:
        self.limiter = FailoverLimiter(max_attempts, window_s, min_interval_s)
        self.calls = 0

    def __call__(self) -> FailoverLimiter:
        self.calls += 1
        return self.limiter


def machine(backends: tuple[str, ...] = ("primary", "secondary"), limiters: Limiters | None = None) -> RelayMachine:
    return RelayMachine(backends, limiters or Limiters())


def relaying(m: RelayMachine, backend: str = "primary") -> RelayMachine:
    assert m.start(ALL_UP) == [Connect(backend)]
    m.upstream_opened(backend)
    return m


def lose(
    m: RelayMachine,
    code: int | None,
    now: float = T0,
    *,
    reason: str = "",
    health: Mapping[str, bool] = ALL_UP,
    client_open: bool = True,
) -> list[Action]:
    return m.upstream_lost(code, reason, now=now, health=health, client_open=client_open)


def failover_attempts(actions: list[Action]) -> list[Mapping[str, object]]:
    return [a.fields for a in actions if isinstance(a, Emit) and a.event == "failover_attempt"]


def closes(actions: list[Action]) -> list[CloseClient]:
    return [a for a in actions if isinstance(a, CloseClient)]


# -- connecting ----------------------------------------------------------------


def test_start_connects_to_the_first_healthy_backend_in_priority_order() -> None:
    m = machine(("p", "s", "t"))
    assert m.start({"p": False, "s": True}) == [Connect("s")]
    assert m.phase is Phase.CONNECTING


def test_upstream_opened_accounts_and_relays() -> None:
    m = machine()
    m.start(ALL_UP)
    assert m.upstream_opened("primary") == [
        Emit("upstream_open", {"backend": "primary"}),
        Enter(ConnState.CONNECTED),
    ]
    assert m.phase is Phase.RELAYING and m.backend == "primary"


def test_connect_order_healthy_first_then_marked_down_as_last_resort() -> None:
    # Moved from the removed policy.failover_order: same orders, now as the machine's Connects.
    health = {"p": False, "s": True, "t": True}
    m = machine(("p", "s", "t"))
    assert m.start(health) == [Connect("s")]
    assert m.connect_failed("s", health) == [Connect("t")]
    assert m.connect_failed("t", health) == [Connect("p")], "a backend marked down is still tried, last"
    assert m.connect_failed("p", health) == [CloseClient(1013, "no backend available")]
    assert m.finished


def test_each_connect_reads_fresh_health() -> None:
    m = machine(("p", "s", "t"))
    assert m.start({"p": False}) == [Connect("s")]
    assert m.connect_failed("s", {"p": True, "s": False}) == [Connect("p")], "p came back up meanwhile"


def test_no_backend_at_start_is_1013() -> None:
    m = machine(("only",))
    assert m.start(ALL_UP) == [Connect("only")]
    assert m.connect_failed("only", {"only": False}) == [CloseClient(1013, "no backend available")]
    assert m.finished


def test_client_gone_while_connecting_ends_quietly() -> None:
    m = machine()
    m.start(ALL_UP)
    assert m.client_closed(1000) == [], "no upstream to close, and the client is already gone"
    assert m.finished
    assert m.client_closed(1000) == [], "idempotent"


# -- the client leaves -----------------------------------------------------------


@pytest.mark.parametrize(
    ("client_code", "upstream_code"),
    [(1000, 1000), (1001, 1001), (4001, 4001), (3000, 3000), (None, 1001), (1006, 1001), (1011, 1001)],
)
def test_client_close_closes_the_upstream_with_a_sendable_code(client_code: int | None, upstream_code: int) -> None:
    m = relaying(machine())
    assert m.client_closed(client_code) == [CloseUpstream(upstream_code, "client closed")]
    assert m.finished


def test_sendable_and_ends_session() -> None:
    assert [sendable(c) for c in (1000, 1001, 1002, 1005, 1006, 2999, 3000, 4999, 5000, None)] == [
        1000, 1001, 1001, 1001, 1001, 1001, 3000, 4999, 1001, 1001,
    ]  # fmt: skip
    assert [ends_session(c) for c in (999, 1000, 1001, 3999, 4000, 4999, 5000)] == [
        False, True, False, False, True, True, False,
    ]  # fmt: skip


# -- the upstream is lost: passthrough ---------------------------------------------


@pytest.mark.parametrize("code", [1000, 4000, 4001, 4999])
def test_normal_and_application_closes_pass_through_without_failover(code: int) -> None:
    limiters = Limiters()
    m = relaying(machine(limiters=limiters))
    actions = lose(m, code, reason="game over")
    assert actions == [
        Count("upstreams_lost"),
        Emit("upstream_lost", {"backend": "primary", "code": code}),
        CloseClient(code, "game over"),
    ]
    assert m.finished and m.backend is None
    assert limiters.calls == 0, "no limiter (no reconnect_attempts entry) without a failover"


# -- the upstream is lost: failover --------------------------------------------------


@pytest.mark.parametrize(("code", "reported"), [(None, 1006), (1001, 1001), (1011, 1011), (1012, 1012), (3000, 3000)])
def test_abnormal_loss_fails_over_to_the_next_backend(code: int | None, reported: int) -> None:
    m = relaying(machine())
    assert lose(m, code) == [
        Count("upstreams_lost"),
        Emit("upstream_lost", {"backend": "primary", "code": reported}),
        MarkDown("primary", f"upstream closed with {reported}"),
        Enter(ConnState.FAILING_OVER),
        Emit("failover_attempt", {"allowed": True, "reason": "allowed"}),
        Count("failover_allowed"),
        Connect("secondary"),
    ]
    assert m.phase is Phase.CONNECTING
    assert m.upstream_opened("secondary")[-1] == Enter(ConnState.CONNECTED)
    assert m.backend == "secondary"


def test_failover_never_returns_to_the_backend_just_lost() -> None:
    m = relaying(machine(("primary", "secondary", "tertiary")))
    health = {"primary": True, "secondary": False}  # the shell reports health as the pool has it
    assert lose(m, 1006, health=health)[-1] == Connect("tertiary")
    assert m.connect_failed("tertiary", health) == [Connect("secondary")]
    assert m.connect_failed("secondary", health) == [CloseClient(1013, "no backend reachable")]
    assert m.finished


def test_no_other_backend_is_1013() -> None:
    m = relaying(machine(("only",)), "only")
    actions = lose(m, 1006)
    assert failover_attempts(actions) == [{"allowed": True, "reason": "allowed"}]
    assert actions[-1] == CloseClient(1013, "no backend reachable")
    assert m.finished


def test_loss_after_the_client_left_ends_without_a_failover_decision() -> None:
    limiters = Limiters()
    m = relaying(machine(limiters=limiters))
    actions = lose(m, 1006, client_open=False)
    assert actions[-1] == Enter(ConnState.FAILING_OVER)
    assert failover_attempts(actions) == [] and closes(actions) == []
    assert m.finished and limiters.calls == 0


# -- the limits ------------------------------------------------------------------------


def fail_over_at(m: RelayMachine, now: float) -> list[Action]:
    """Lose the current upstream at ``now``; if a failover is allowed, open the next one."""
    actions = lose(m, 1006, now=now)
    if isinstance(actions[-1], Connect):
        m.upstream_opened(actions[-1].backend)
    return actions


def test_third_failover_allowed_fourth_refused_with_1013() -> None:
    m = relaying(machine(("a", "b"), Limiters(max_attempts=3, window_s=60.0, min_interval_s=5.0)), "a")
    for i in range(3):
        assert failover_attempts(fail_over_at(m, T0 + 5 * i)) == [{"allowed": True, "reason": "allowed"}]
    actions = fail_over_at(m, T0 + 15)
    assert failover_attempts(actions) == [{"allowed": False, "reason": "max_attempts"}]
    assert actions[-2:] == [Count("failover_refused"), CloseClient(1013, "failover refused: max_attempts")]
    assert m.finished


def test_min_interval_edge() -> None:
    # Exactly min_interval_s apart is allowed; a millisecond less is refused.
    m = relaying(machine(("a", "b"), Limiters(max_attempts=5, window_s=60.0, min_interval_s=5.0)), "a")
    assert failover_attempts(fail_over_at(m, T0))[0]["allowed"]
    assert failover_attempts(fail_over_at(m, T0 + 5.0))[0]["allowed"]
    actions = fail_over_at(m, T0 + 9.999)
    assert failover_attempts(actions) == [{"allowed": False, "reason": "min_interval"}]
    assert closes(actions) == [CloseClient(1013, "failover refused: min_interval")]


def test_window_edge() -> None:
    # An attempt counts while now - t < window_s: it stops counting exactly window_s later.
    def run(second_at: float) -> list[Action]:
        m = relaying(machine(("a", "b"), Limiters(max_attempts=1, window_s=10.0, min_interval_s=0.0)), "a")
        fail_over_at(m, T0)
        return fail_over_at(m, second_at)

    assert failover_attempts(run(T0 + 9.999)) == [{"allowed": False, "reason": "max_attempts"}]
    assert failover_attempts(run(T0 + 10.0)) == [{"allowed": True, "reason": "allowed"}]


def test_zero_attempts_refuses_the_first_failover() -> None:
    m = relaying(machine(limiters=Limiters(max_attempts=0)))
    assert closes(lose(m, 1006)) == [CloseClient(1013, "failover refused: max_attempts")]


def test_one_limiter_per_session_taken_on_the_first_failover() -> None:
    limiters = Limiters()
    m = relaying(machine(("a", "b"), limiters), "a")
    fail_over_at(m, T0)
    fail_over_at(m, T0 + 5)
    assert limiters.calls == 2 and limiters.limiter.attempts_in_window(T0 + 5) == 2


# -- the in-flight message ---------------------------------------------------------------


def test_undelivered_message_is_resent_first_on_the_next_upstream() -> None:
    m = relaying(machine())
    m.client_message("move 1")
    m.message_delivered()
    m.client_message(b"move 2")
    actions = lose(m, 1006)
    assert Count("dropped_inflight") not in actions
    assert m.upstream_opened("secondary") == [
        Emit("upstream_open", {"backend": "secondary"}),
        Enter(ConnState.CONNECTED),
        Resend(b"move 2"),
    ]
    assert m.message_delivered() == (
        Count("resent_messages"),
        Emit("message_resent", {"backend": "secondary"}),
    )
    m.client_message("move 3")
    assert m.message_delivered() == (), "only the resent copy is reported"


def test_delivered_messages_are_not_resent() -> None:
    m = relaying(machine())
    m.client_message("move 1")
    assert m.message_delivered() == ()
    lose(m, 1006)
    assert not any(isinstance(a, Resend) for a in m.upstream_opened("secondary"))


def test_resent_message_lost_again_is_dropped_not_resent_twice() -> None:
    m = relaying(machine(("a", "b", "c")), "a")
    m.client_message("move")
    fail_over_at(m, T0)  # a -> b, "move" is resent on b
    actions = lose(m, 1006, now=T0 + 5, health={"a": False})  # b dies before "move" was written
    assert Count("dropped_inflight") in actions
    assert actions[-1] == Connect("c")
    assert not any(isinstance(a, Resend) for a in m.upstream_opened("c"))


def test_passthrough_forgets_the_undelivered_message() -> None:
    m = relaying(machine())
    m.client_message("move")
    assert closes(lose(m, 1000)) == [CloseClient(1000, "")]
    assert m.finished


def test_undelivered_message_survives_connect_failures_during_failover() -> None:
    m = relaying(machine(("a", "b", "c")), "a")
    m.client_message("move")
    assert lose(m, 1006)[-1] == Connect("b")
    assert m.connect_failed("b", {"b": False}) == [Connect("c")]
    assert m.upstream_opened("c")[-1] == Resend("move")


# -- shutdown ----------------------------------------------------------------------------


def test_shutdown_while_relaying_closes_the_client_with_1001() -> None:
    m = relaying(machine())
    assert m.shutdown() == [CloseClient(1001, "balancer shutting down")]
    assert m.shutdown() == [], "the first close ordered is the one the client gets"
    assert m.client_closed(1001) == [CloseUpstream(1001, "client closed")]
    assert m.finished


def test_upstream_lost_during_shutdown_is_refused_without_consuming_an_attempt() -> None:
    limiters = Limiters()
    m = relaying(machine(limiters=limiters))
    assert m.shutdown() == [CloseClient(1001, "balancer shutting down")]
    actions = lose(m, 1006)
    assert failover_attempts(actions) == [{"allowed": False, "reason": "shutting_down"}]
    assert Count("failover_refused") in actions
    assert closes(actions) == [], "the client already has its 1001"
    assert m.finished and limiters.calls == 0


def test_upstream_lost_then_shutdown_noticed_in_the_same_step() -> None:
    # The shell reports shutdown() first when it sees the balancer stopping at a loss.
    m = relaying(machine())
    actions = m.shutdown() + lose(m, 1011)
    assert closes(actions) == [CloseClient(1001, "balancer shutting down")]
    assert failover_attempts(actions) == [{"allowed": False, "reason": "shutting_down"}]


def test_shutdown_while_connecting_abandons_the_connect() -> None:
    m = machine()
    m.start(ALL_UP)
    assert m.shutdown() == [CloseClient(1001, "balancer shutting down")]
    assert m.finished
    with pytest.raises(IllegalEvent):
        m.upstream_opened("primary")


def test_shutdown_before_start_and_after_the_end() -> None:
    m = machine()
    assert m.shutdown() == [CloseClient(1001, "balancer shutting down")]
    assert m.finished
    done = relaying(machine())
    done.client_closed(1000)
    assert done.shutdown() == []


def test_passthrough_during_shutdown_keeps_the_1001() -> None:
    m = relaying(machine())
    m.shutdown()
    assert closes(lose(m, 4000)) == []


# -- misuse by the shell -----------------------------------------------------------------


def test_events_out_of_order_raise() -> None:
    m = machine()
    with pytest.raises(IllegalEvent, match="upstream_lost while idle"):
        lose(m, 1006)
    with pytest.raises(IllegalEvent):
        m.upstream_opened("primary")
    m.start(ALL_UP)
    with pytest.raises(IllegalEvent):
        m.start(ALL_UP)
    m.upstream_opened("primary")
    with pytest.raises(IllegalEvent):
        m.connect_failed("primary", ALL_UP)
