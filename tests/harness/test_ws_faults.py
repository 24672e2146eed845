"""The frame-aware fault kinds: what they ask of Toxiproxy is valid, and what they expect is derived."""

from __future__ import annotations

import pytest

from harness.expectations import derive_expect
from harness.faults import KINDS, fault
from harness.faults.kinds import WS_ERROR_CLOSE_CODES, ToxicKind
from harness.scenario import Keepalive, Step
from harness.toxiproxy.toxic_spec import new_toxic
from harness.toxiproxy.ws_toxics import PROTOCOL_ERRORS

WS_KINDS = ("client_protocol_error", "backend_protocol_error", "ping_flood", "split_frames")


def test_every_injected_error_has_its_close_code() -> None:
    assert set(WS_ERROR_CLOSE_CODES) == set(PROTOCOL_ERRORS)


@pytest.mark.parametrize("name", WS_KINDS)
def test_the_toxics_a_kind_creates_pass_the_api_validation(name: str) -> None:
    kind = KINDS[name]
    assert isinstance(kind, ToxicKind)
    f = fault(name, kind.targets[0])
    attributes, streams = kind.toxic(f.params)
    for stream in streams:
        spec = new_toxic({"type": kind.toxic_type, "stream": stream, "attributes": attributes}, lambda _: False)
        assert spec.attributes.items() >= attributes.items()


@pytest.mark.parametrize(("error", "code"), [("reserved_opcode", 1002), ("invalid_utf8", 1007), ("oversized", 1009)])
def test_a_client_protocol_error_allows_exactly_its_close_code(error: str, code: int) -> None:
    step = Step(at_s=0.5, fault=fault("client_protocol_error", "lb", error=error), duration_s=2.0)
    assert derive_expect([step], fault_phase_s=3.0).close_codes == (code,)


def test_a_backend_protocol_error_is_a_lost_upstream_the_client_must_not_see() -> None:
    f = fault("backend_protocol_error", "primary")
    assert f.params == {"error": "reserved_opcode", "nth": 1}
    assert f.spec.is_disruptive(f, Keepalive())
    assert f.spec.toxic(f.params)[1] == ("downstream",)  # from the backend toward the balancer
    assert derive_expect([Step(at_s=0.5, fault=f, duration_s=2.0)], fault_phase_s=3.0).close_codes == ()


def test_client_errors_go_toward_the_balancer_and_spare_the_others() -> None:
    f = fault("client_protocol_error", "lb", clients=2)
    attributes, streams = f.spec.toxic(f.params)
    assert streams == ("upstream",)
    assert attributes["connections"] == 2


@pytest.mark.parametrize("name", ["ping_flood", "split_frames"])
def test_harmless_kinds_allow_no_close(name: str) -> None:
    for target in ("lb", "primary"):
        step = Step(at_s=0.5, fault=fault(name, target), duration_s=2.0)
        assert derive_expect([step], fault_phase_s=3.0).close_codes == ()


def test_oversized_is_not_a_backend_error() -> None:
    with pytest.raises(ValueError, match="error: must be one of reserved_opcode, invalid_utf8"):
        fault("backend_protocol_error", "primary", error="oversized")


def test_a_ping_burst_that_can_delay_keepalive_pongs_counts_as_disruptive() -> None:
    ka = Keepalive(ping_interval_s=0.5, ping_timeout_s=0.5)
    small = fault("ping_flood", "lb", count=100, stream="both")
    big = fault("ping_flood", "lb", count=1000, stream="both")
    assert not small.spec.is_disruptive(small, ka)
    assert big.spec.is_disruptive(big, ka)  # 1000 each way closed every client with 1011 at 0.5 s
    assert not big.spec.is_disruptive(big, Keepalive(ping_interval_s=0.5, ping_timeout_s=3.0))
    step = Step(at_s=0.5, fault=big, duration_s=2.0)
    assert set(derive_expect([step], keepalive=ka, fault_phase_s=3.0).close_codes) == {1006, 1011}


# -- frame_close and frame_delay ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["frame_close", "frame_delay"])
def test_the_frame_kinds_toxics_pass_the_api_validation_on_every_target(name: str) -> None:
    kind = KINDS[name]
    assert isinstance(kind, ToxicKind)
    for target in kind.targets:
        f = fault(name, target)
        attributes, streams = kind.toxic(f.params)
        for stream in streams:
            spec = new_toxic({"type": kind.toxic_type, "stream": stream, "attributes": attributes}, lambda _: False)
            assert spec.attributes.items() >= attributes.items()


@pytest.mark.parametrize(
    ("target", "code", "allowed", "disruptive"),
    [
        ("lb", 1001, (1001,), False),  # a middlebox closing toward the client: exactly its code
        ("lb", 4000, (4000,), False),
        ("primary", 1001, (), True),  # a backend going away: a failover, no close for the client
        ("primary", 1011, (), True),
        ("primary", 1000, (1000,), True),  # a backend ending the session: its code, no failover
        ("secondary", 4321, (4321,), True),
    ],
)
def test_frame_close_allows_what_the_contract_says_and_nothing_more(
    target: str, code: int, allowed: tuple[int, ...], disruptive: bool
) -> None:
    f = fault("frame_close", target, code=code)
    assert f.spec.toxic(f.params) == ({"code": code, "nth": 1, "connections": 1}, ("downstream",))
    assert f.spec.is_disruptive(f, Keepalive()) is disruptive
    expect = derive_expect([Step(at_s=0.5, fault=f, duration_s=2.0)], fault_phase_s=3.0)
    # A disruptive fault on a backend link never lets the client see 1006/1011: only the contract's code.
    assert expect.close_codes == allowed


@pytest.mark.parametrize("code", [999, 1005, 1006, 1015, 2999, 5000])
def test_frame_close_refuses_codes_no_endpoint_may_send(code: int) -> None:
    with pytest.raises(ValueError, match=r"params.code: "):
        fault("frame_close", "lb", code=code)


def test_a_frame_delay_is_disruptive_only_when_it_can_hold_a_pong_past_half_the_timeout() -> None:
    ka = Keepalive(ping_interval_s=0.5, ping_timeout_s=0.5)
    short = fault("frame_delay", "lb", delay_ms=200)
    assert short.spec.toxic(short.params) == ({"delay": 200, "nth": 1}, ("upstream",))
    assert not short.spec.is_disruptive(short, ka)
    held_once = derive_expect([Step(at_s=0.5, fault=short, duration_s=2.0)], keepalive=ka, fault_phase_s=3.0)
    assert held_once.close_codes == ()
    both = fault("frame_delay", "lb", delay_ms=150, stream="both")  # a move and its ack each held
    assert both.spec.latency_s(both) == pytest.approx(0.3) and both.spec.is_disruptive(both, ka)
    long = fault("frame_delay", "lb", delay_ms=2000)
    assert set(derive_expect([Step(at_s=0.5, fault=long, duration_s=3.0)], keepalive=ka, fault_phase_s=4.0)
               .close_codes) == {1006, 1011}  # fmt: skip
