"""The fault-kind registry and fault validation: pure, no processes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.expectations import derive_expect
from harness.faults import KINDS, LINK_KINDS, PROCESS_KINDS, STREAMS, Fault, FaultError, FaultKind, fault
from harness.faults.kinds import ToxicKind
from harness.faults.model import FAILOVER_WAIT_S
from harness.scenario import Keepalive, Scenario, ScenarioError, Step, Workload, workload_for
from harness.strategies import BOUNDS, INTENSITIES, Intensity

KA = Keepalive()
FAST = settings(max_examples=50, deadline=None, database=None)


def test_every_kind_is_registered_once_under_its_name() -> None:
    assert len(KINDS) == len(set(KINDS))
    for name, kind in KINDS.items():
        assert isinstance(kind, FaultKind)
        assert kind.name == name
        assert kind.family in ("process", "link")
        assert kind.targets
    assert set(PROCESS_KINDS) | set(LINK_KINDS) == set(KINDS)
    assert not set(PROCESS_KINDS) & set(LINK_KINDS)


@pytest.mark.parametrize("name", list(KINDS))
def test_defaults_validate_and_round_trip(name: str) -> None:
    kind = KINDS[name]
    for target in kind.targets:
        f = fault(name, target)
        assert f.params == {p: spec.default for p, spec in kind.params.items()}
        assert Fault.from_dict(json.loads(json.dumps(f.to_dict()))) == f


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("intensity", INTENSITIES, ids=lambda i: i.name)
def test_the_kind_strategy_draws_valid_params(name: str, intensity: Intensity) -> None:
    kind = KINDS[name]

    @FAST
    @given(kind.params_strategy(intensity, BOUNDS))
    def check(params: dict[str, Any]) -> None:
        assert set(params) <= set(kind.params)
        f = fault(name, kind.targets[0], **params)  # validates every drawn value
        assert {k: f.params[k] for k in params} == params

    check()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "explode", "target": "primary"}, "fault.kind: unknown fault kind 'explode'"),
        ({"kind": "kill", "target": "lb"}, "fault.target: kill cannot target 'lb'"),
        ({"kind": "partition", "target": "balancer"}, "fault.target: partition cannot target 'balancer'"),
        ({"kind": "kill", "target": "primary", "params": {"x": 1}}, "fault.params.x: unknown parameter for kill"),
        ({"kind": "latency", "target": "lb", "params": {"latency_ms": "1"}}, "latency_ms: expected an integer"),
        ({"kind": "latency", "target": "lb", "params": {"latency_ms": True}}, "latency_ms: expected an integer"),
        ({"kind": "latency", "target": "lb", "params": {"latency_ms": -1}}, "latency_ms: must be >= 0"),
        ({"kind": "latency", "target": "lb", "params": {"stream": "sideways"}}, "stream: must be one of"),
        ({"kind": "restart", "target": "primary", "params": {"graceful": 1}}, "graceful: expected true or false"),
        ({"kind": "bandwidth", "target": "lb", "params": {"rate_kbps": 0}}, "rate_kbps: must be >= 1"),
        ({"kind": "slicer", "target": "lb", "params": {"average_size": 4, "size_variation": 4}}, "smaller than"),
        ({"kind": "down", "target": "lb", "params": []}, "fault.params: expected an object"),
        ("kill", "fault: expected an object"),
    ],
)
def test_bad_faults_name_the_field(data: Any, message: str) -> None:
    with pytest.raises(FaultError, match=message.replace("(", r"\(")):
        Fault.from_dict(data)


def test_a_bad_fault_in_a_scenario_names_the_step() -> None:
    with pytest.raises(ScenarioError, match=r"steps\[0\]\.fault\.params\.stream: must be one of"):
        Scenario.from_dict({"name": "x", "steps": [{"fault": {"kind": "reset_peer", "target": "lb",
                                                              "params": {"stream": "up"}}}]})  # fmt: skip


def test_null_params_are_the_defaults() -> None:
    assert Fault.from_dict({"kind": "partition", "target": "lb", "params": None}) == fault("partition", "lb")


# -- what each kind says about a correct build ------------------------------------------------


def test_disruptiveness() -> None:
    for kind in PROCESS_KINDS:
        f = fault(kind, KINDS[kind].targets[0])  # primary, except drain: the balancer only
        assert f.spec.is_disruptive(f, KA)
    harmless = {"bandwidth", "slicer", "ping_flood", "split_frames", "frame_delay"}
    # Upgrade faults meet only new handshakes: a live session never notices them.
    harmless |= {"backend_upgrade_refused", "backend_upgrade_stalled", "backend_upgrade_slow"}
    # One data frame lost or repeated: the game's seq/ack shows it, and no connection ends.
    harmless |= {"frame_drop", "frame_duplicate"}
    # Latency and idle_timeout depend on the keepalive (their own tests below).
    for kind in set(LINK_KINDS) - {"latency", "idle_timeout", "client_protocol_error"}:
        f = fault(kind, "primary")
        assert f.spec.is_disruptive(f, KA) == (kind not in harmless), kind
    # It ends the hit client's connection, but with one allowed code, not the 1006/1011 of a drop.
    f = fault("client_protocol_error", "lb")
    assert not f.spec.is_disruptive(f, KA)


def test_idle_timeout_is_disruptive_only_when_it_beats_the_keepalive() -> None:
    idle = fault("idle_timeout", "lb", timeout_ms=2000)
    assert not idle.spec.is_disruptive(idle, KA)  # a ping every 0.5 s keeps the flow busy
    assert idle.spec.is_disruptive(idle, Keepalive(ping_interval_s=2.0, ping_timeout_s=1.0))
    assert idle.spec.is_disruptive(fault("idle_timeout", "lb", timeout_ms=400), KA)
    slow = Keepalive(ping_interval_s=3.0, ping_timeout_s=1.0)
    assert idle.spec.detect_s(idle, slow) == pytest.approx(2.0 + 3.0 + 1.0 + 1.0)
    assert idle.spec.blackhole and not idle.spec.generated


# -- aimed faults -------------------------------------------------------------------------------


def test_an_aim_round_trips_and_shows_only_when_set() -> None:
    plain = fault("latency", "lb")
    assert "aim" not in plain.to_dict()
    for aim in ({"clients": ["c1", "c2"]}, {"fraction": 0.3, "seed": 9}, {"first": 2}):
        data = {**plain.to_dict(), "aim": aim}
        aimed = Fault.from_dict(json.loads(json.dumps(data)))
        assert aimed.aim is not None and aimed.to_dict()["aim"] == aim
        assert Fault.from_dict(aimed.to_dict()) == aimed
    seeded = Fault.from_dict({**plain.to_dict(), "aim": {"fraction": 0.5}})
    assert seeded.to_dict()["aim"] == {"fraction": 0.5, "seed": 0}
    assert "at the first 2 connections" in Fault.from_dict({**plain.to_dict(), "aim": {"first": 2}}).describe()


@pytest.mark.parametrize(
    ("aim", "message"),
    [
        ([], "steps[0].fault.aim: expected an object, got list"),
        ({}, "steps[0].fault.aim: give exactly one of clients, fraction, first (got 0)"),
        ({"clients": "c1"}, "steps[0].fault.aim.clients: expected a non-empty list of client ids"),
        ({"fraction": -0.1}, "steps[0].fault.aim.fraction: expected a number from 0 to 1, got -0.1"),
        ({"fraction": 0.5, "seed": "x"}, "steps[0].fault.aim.seed: expected an integer, got 'x'"),
        ({"first": True}, "steps[0].fault.aim.first: expected an integer, got True"),
    ],
)
def test_a_bad_aim_is_named_in_the_scenario(aim: Any, message: str) -> None:
    data = {"name": "x", "steps": [{"fault": {"kind": "latency", "target": "lb", "aim": aim}}]}
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(data)
    assert str(info.value) == message


def test_only_toxic_kinds_can_be_aimed() -> None:
    aimable = {k for k, v in KINDS.items() if v.aimable}
    assert aimable == {k for k, v in KINDS.items() if isinstance(v, ToxicKind)}
    for kind in ("kill", "down"):
        target = KINDS[kind].targets[0]
        for key, value in (("aim", {"first": 1}), ("trigger", {"after": "upgrade"})):
            expected = rf"fault.{key}: {kind} acts on no single connection \(kinds that do: "
            with pytest.raises(FaultError, match=expected):
                Fault.from_dict({"kind": kind, "target": target, key: value})


def test_a_trigger_round_trips_and_is_validated() -> None:
    plain = fault("latency", "lb")
    triggered = Fault.from_dict({**plain.to_dict(), "trigger": {"after": "upgrade"}})
    assert triggered.to_dict()["trigger"] == {"after": "upgrade"} and "trigger" not in plain.to_dict()
    assert Fault.from_dict(json.loads(json.dumps(triggered.to_dict()))) == triggered
    assert triggered.describe().endswith(" after the upgrade")
    assert triggered.extensions() == {"trigger": {"after": "upgrade"}} and plain.extensions() == {}
    # "frames" and "failovers" became triggers too; an unknown event is still named with the known ones.
    unknown_event = r"^fault.trigger.after: must be one of upgrade, frames, failovers, got 'moon'$"
    with pytest.raises(FaultError, match=unknown_event):
        Fault.from_dict({**plain.to_dict(), "trigger": {"after": "moon"}})


def test_a_frame_trigger_round_trips_and_goes_to_the_proxy() -> None:
    data = {"kind": "reset_peer", "target": "lb", "trigger": {"after": "frames", "frames": 3}}
    triggered = Fault.from_dict(data)
    assert triggered.trigger is not None and triggered.trigger.frames == 3
    assert triggered.to_dict()["trigger"] == {"after": "frames", "frames": 3}
    assert triggered.extensions() == {"trigger": {"after": "frames", "frames": 3}}
    assert Fault.from_dict(json.loads(json.dumps(triggered.to_dict()))) == triggered
    assert triggered.describe().endswith(" after 3 data frame(s)")


def test_a_failover_trigger_waits_in_the_harness_and_any_kind_may_have_one() -> None:
    trigger = {"after": "failovers", "failovers": 2, "clients": ["c1", "c2"], "within_s": 4}
    for kind, target in (("kill", "secondary"), ("latency", "lb")):
        waits = Fault.from_dict({"kind": kind, "target": target, "trigger": trigger})
        assert waits.after_failovers is not None and waits.trigger is None
        assert waits.after_failovers.count == 2 and waits.after_failovers.clients == ("c1", "c2")
        assert waits.extensions() == {}  # never sent to the proxy
        assert waits.to_dict()["trigger"] == {**trigger, "within_s": 4.0}
        assert Fault.from_dict(json.loads(json.dumps(waits.to_dict()))) == waits
        assert "once c1, c2 have each failed over 2 time(s) (waiting up to 4 s)" in waits.describe()
    default = Fault.from_dict({"kind": "kill", "target": "primary", "trigger": {"after": "failovers", "failovers": 1}})
    assert default.after_failovers is not None and default.after_failovers.within_s == FAILOVER_WAIT_S
    assert default.describe().endswith("once a client has failed over 1 time(s) (waiting up to 10 s)")


COUNT_ERROR = "expected an integer >= 1 (how many failovers), got"


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ({"after": "frames"}, ".frames: required when after is 'frames' (how many data frames)"),
        ({"after": "frames", "frames": 0}, ".frames: must be >= 1, got 0"),
        ({"after": "failovers"}, f".failovers: {COUNT_ERROR} None"),
        ({"after": "failovers", "failovers": 0}, f".failovers: {COUNT_ERROR} 0"),
        ({"after": "failovers", "failovers": True}, f".failovers: {COUNT_ERROR} True"),
        ({"after": "failovers", "failovers": 1, "clients": []},
         ".clients: expected a non-empty list of client ids, got []"),
        ({"after": "failovers", "failovers": 1, "clients": ["c1", ""]},
         ".clients[1]: expected a non-empty string, got ''"),
        ({"after": "failovers", "failovers": 1, "within_s": 0}, ".within_s: expected seconds in (0, 600], got 0"),
        ({"after": "failovers", "failovers": 1, "within_s": "5"}, ".within_s: expected seconds in (0, 600], got '5'"),
        ({"after": "failovers", "failovers": 1, "frames": 2},
         ".frames: unknown field (known: after, failovers, clients, within_s)"),
        ({"after": "nothing"}, ".after: must be one of upgrade, frames, failovers, got 'nothing'"),
    ],
)  # fmt: skip
def test_a_bad_trigger_is_named_in_the_scenario(trigger: dict[str, Any], message: str) -> None:
    # A frame trigger needs a kind that acts per connection; a failover trigger suits any kind.
    kind, target = ("latency", "lb") if trigger.get("after") == "frames" else ("kill", "primary")
    data = {"name": "x", "steps": [{"fault": {"kind": kind, "target": target, "trigger": trigger}}]}
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(data)
    assert str(info.value) == "steps[0].fault.trigger" + message


def test_an_aimed_step_survives_the_scenario_round_trip() -> None:
    step = Step(at_s=0.5, fault=Fault.from_dict({"kind": "partition", "target": "lb", "aim": {"clients": ["c3"]}}))
    scenario = Scenario(name="aimed", steps=(step,))
    again = Scenario.from_json(scenario.to_json())
    assert again == scenario and again.steps[0].fault.aim is not None


def test_detection_times() -> None:
    silent = KA.ping_interval_s + KA.ping_timeout_s + 1.0
    for kind in ("partition", "pause", "latency"):
        f = fault(kind, "primary")
        assert f.spec.detect_s(f, KA) == silent
    slower = Keepalive(ping_interval_s=2.0, ping_timeout_s=3.0)
    f = fault("partition", "primary")
    assert f.spec.detect_s(f, slower) == 6.0
    reset = fault("reset_peer", "primary", timeout_ms=250)
    assert reset.spec.detect_s(reset, KA) == 0.25
    limit = fault("limit_data", "primary")
    assert math.isinf(limit.spec.detect_s(limit, KA))
    for kind in ("kill", "terminate", "restart", "down"):
        f = fault(kind, "primary")
        assert f.spec.detect_s(f, KA) == 0.0


def test_schedule_properties() -> None:
    assert [k for k, v in KINDS.items() if not v.healable] == ["restart", "drain"]
    assert {k for k, v in KINDS.items() if v.blocks_on_apply} == {"restart", "drain"}
    assert {k for k, v in KINDS.items() if v.blocks_on_heal} == {"kill", "terminate"}
    assert {k for k, v in KINDS.items() if v.swizzles} == {"partition", "down"}


def test_balancer_close_codes() -> None:
    kill = fault("kill", "balancer")
    assert kill.spec.balancer_close_codes(kill) == (1006,)
    for kind in ("terminate", "restart"):
        f = fault(kind, "balancer")
        assert f.spec.balancer_close_codes(f) == (1001, 1006, 1011, 1012)
    # A drain ends sessions with 1001 or 1012 (contract section 8a), never by dropping them.
    drain = fault("drain", "balancer")
    assert drain.spec.balancer_close_codes(drain) == (1001, 1012)


def test_drain_targets_the_balancer_only_and_is_not_drawn_in_plans() -> None:
    with pytest.raises(FaultError, match="drain cannot target 'primary'"):
        fault("drain", "primary")
    with pytest.raises(FaultError, match="unknown parameter"):
        fault("drain", "balancer", timeout_s=1)
    assert not KINDS["drain"].generated


@FAST
@given(st.sampled_from(STREAMS), st.integers(0, 500), st.integers(0, 500))
def test_latency_effect_counts_each_direction(stream: str, latency: int, jitter: int) -> None:
    f = fault("latency", "lb", latency_ms=latency, jitter_ms=jitter, stream=stream)
    one_way = (latency + jitter) / 1000
    assert f.spec.latency_s(f) == pytest.approx(one_way * (2 if stream == "both" else 1))


# -- one_way_partition: the worked example of adding a kind -----------------------------------


def test_one_way_partition_validates_one_direction() -> None:
    f = fault("one_way_partition", "primary")
    assert f.params == {"stream": "upstream"}
    assert fault("one_way_partition", "lb", stream="downstream").params == {"stream": "downstream"}
    assert KINDS["one_way_partition"].targets == ("lb", "primary", "secondary")
    with pytest.raises(FaultError, match=r"params\.stream: must be one of upstream, downstream"):
        fault("one_way_partition", "primary", stream="both")
    with pytest.raises(FaultError, match="cannot target 'balancer'"):
        fault("one_way_partition", "balancer")


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
def test_one_way_partition_blackholes_only_its_stream(stream: str) -> None:
    kind = KINDS["one_way_partition"]
    assert isinstance(kind, ToxicKind)
    assert kind.toxic_type == "timeout"  # Toxiproxy's blackhole, as partition uses it
    assert kind.toxic({"stream": stream}) == ({"timeout": 0}, (stream,))


def test_one_way_partition_is_noticed_like_a_partition() -> None:
    one_way = fault("one_way_partition", "primary", stream="downstream")
    both = fault("partition", "primary")
    assert one_way.spec.is_disruptive(one_way, KA)
    assert one_way.spec.blackhole and not one_way.spec.swizzles and one_way.spec.healable
    for ka in (KA, Keepalive(ping_interval_s=2.0, ping_timeout_s=3.0)):
        assert one_way.spec.detect_s(one_way, ka) == both.spec.detect_s(both, ka)


def test_one_way_partition_expectations_match_a_partition() -> None:
    for target in ("primary", "lb"):
        for timed in (None, 2.0):
            one_way = derive_expect([Step(1.0, fault("one_way_partition", target), timed)], fault_phase_s=6.0)
            both = derive_expect([Step(1.0, fault("partition", target), timed)], fault_phase_s=6.0)
            assert one_way == both


def test_only_a_boolean_draining_in_status_declares_drain() -> None:
    from harness.faults.kinds import declares_drain

    assert declares_drain({"sessions": 0, "draining": False})
    assert declares_drain({"draining": True})
    for status in (None, {}, {"sessions": 0}, {"draining": "no"}, {"draining": 0}, ["draining"]):
        assert not declares_drain(status), status


# -- upgrade faults ------------------------------------------------------------------------------

UPGRADE_KINDS = ("backend_upgrade_refused", "backend_upgrade_stalled", "backend_upgrade_slow")


@pytest.mark.parametrize(
    ("name", "params", "attributes"),
    [
        ("backend_upgrade_refused", {}, {"mode": 0, "status": 503}),
        ("backend_upgrade_refused", {"status": 500}, {"mode": 0, "status": 500}),
        ("backend_upgrade_stalled", {}, {"mode": 1}),
        ("backend_upgrade_slow", {"delay_ms": 250}, {"mode": 2, "delay": 250}),
    ],
)
def test_upgrade_kinds_put_one_ws_upgrade_toxic_on_the_request_stream(
    name: str, params: dict[str, Any], attributes: dict[str, int]
) -> None:
    f = fault(name, "secondary", **params)
    kind = f.spec
    assert isinstance(kind, ToxicKind) and kind.toxic_type == "ws_upgrade"
    assert kind.toxic(f.params) == (attributes, ("upstream",))


def test_upgrade_kinds_target_backends_only_and_refuse_other_statuses() -> None:
    for name in UPGRADE_KINDS:
        for target in ("lb", "balancer"):
            with pytest.raises(FaultError, match=f"{name} cannot target '{target}'"):
                fault(name, target)
    with pytest.raises(FaultError, match=r"fault.params.status: must be one of 500, 503"):
        fault("backend_upgrade_refused", "primary", status=501)
    with pytest.raises(FaultError, match=r"fault.params.status: must be >= 500, got 404"):
        fault("backend_upgrade_refused", "primary", status=404)
    with pytest.raises(FaultError, match=r"fault.params.delay_ms: must be >= 0"):
        fault("backend_upgrade_slow", "primary", delay_ms=-1)


def test_upgrade_kinds_never_end_a_live_session_and_say_what_a_handshake_costs() -> None:
    refused, stalled = fault("backend_upgrade_refused", "primary"), fault("backend_upgrade_stalled", "primary")
    slow = fault("backend_upgrade_slow", "primary", delay_ms=800)
    for f in (refused, stalled, slow):
        assert not f.spec.is_disruptive(f, KA) and f.spec.detect_s(f, KA) == 0.0
        assert f.spec.aimable and not f.spec.generated and f.spec.balancer_close_codes(f) == ()
    assert stalled.spec.blackhole and not refused.spec.blackhole and not slow.spec.blackhole
    assert slow.spec.latency_s(slow) == 0.8 and refused.spec.latency_s(refused) == 0.0
    cost = {f.kind: f.spec.handshake_cost_s(f, 1.5) for f in (refused, stalled, slow)}  # type: ignore[attr-defined]
    assert cost == {"backend_upgrade_refused": 0.0, "backend_upgrade_stalled": 1.5, "backend_upgrade_slow": 0.8}
    long_slow = fault("backend_upgrade_slow", "primary", delay_ms=5000)
    assert long_slow.spec.handshake_cost_s(long_slow, 1.5) == 1.5  # type: ignore[attr-defined]


def test_upgrade_faults_on_one_backend_allow_no_1013_and_on_both_do() -> None:
    one = derive_expect([Step(0.5, fault("backend_upgrade_refused", "primary"), 3.0)], fault_phase_s=4.0)
    assert one.close_codes == () and one.failover_deadline_s == 4.0
    both = derive_expect(
        [
            Step(0.5, fault("backend_upgrade_refused", "primary"), 3.0),
            Step(0.5, fault("backend_upgrade_stalled", "secondary"), 3.0),
        ],
        fault_phase_s=4.0,
    )
    # Nothing to fail over to: 1013; and a stalled backend may hold a session as long as it lasts.
    assert both.close_codes == (1013,) and both.failover_deadline_s == 7.0


# -- frame_drop and frame_duplicate: one data frame lost or repeated --------------------------


@pytest.mark.parametrize(("kind", "toxic_type"), [("frame_drop", "ws_drop"), ("frame_duplicate", "ws_duplicate")])
@pytest.mark.parametrize("stream", STREAMS)
def test_frame_drop_and_duplicate_put_one_toxic_per_stream(kind: str, toxic_type: str, stream: str) -> None:
    f = fault(kind, "lb", nth=3, stream=stream)
    spec = f.spec
    assert isinstance(spec, ToxicKind) and spec.toxic_type == toxic_type
    attrs, streams = spec.toxic(f.params)
    assert attrs == {"nth": 3}
    assert streams == ({"both": ("upstream", "downstream")}.get(stream) or (stream,))
    # Nothing closes and nothing fails over: no code allowed, and the expectations add none.
    assert spec.balancer_close_codes(f) == ()
    assert derive_expect([Step(at_s=0.5, fault=f, duration_s=1.0)], keepalive=KA, fault_phase_s=3.0).close_codes == ()


def test_only_frame_duplicate_explains_extra_deliveries() -> None:
    assert [name for name, kind in KINDS.items() if kind.repeats_upstream_frames] == ["frame_duplicate"]


def test_a_lost_or_repeated_frame_is_refused_on_a_compressed_workload() -> None:
    for kind in ("frame_drop", "frame_duplicate"):
        data = {"name": "x", "steps": [{"at_s": 0.5, "fault": {"kind": kind, "target": "lb"}}]}
        with pytest.raises(
            ScenarioError, match=rf"^workload\.compression: steps\[0\] \({kind}\) needs compression false: "
        ):
            Scenario.from_dict(data)
    # A lost move is recovered only by clients that answer the gap.
    data = {
        "name": "x",
        "workload": {"compression": False},
        "steps": [{"at_s": 0.5, "fault": {"kind": "frame_drop", "target": "primary"}}],
    }
    with pytest.raises(
        ScenarioError, match=r"^workload\.resend_on_gap: steps\[0\] \(frame_drop\) needs resend_on_gap true"
    ):
        Scenario.from_dict(data)
    data["workload"] = {"compression": False, "resend_on_gap": True}
    assert Scenario.from_dict(data).steps[0].fault.kind == "frame_drop"


@pytest.mark.parametrize("field", ["compression", "resend_on_gap"])
@pytest.mark.parametrize("value", ["no", 0, None])
def test_the_workload_switches_take_only_booleans(field: str, value: Any) -> None:
    with pytest.raises(ScenarioError, match=rf"^workload\.{field}: expected true or false, got "):
        Scenario.from_dict({"name": "x", "workload": {field: value}})


def test_the_workload_switches_round_trip() -> None:
    step = Step(at_s=0.5, fault=fault("frame_drop", "lb"), duration_s=1.0)
    scenario = Scenario(name="x", workload=workload_for([step]), steps=(step,))
    assert (scenario.workload.compression, scenario.workload.resend_on_gap) == (False, True)
    again = Scenario.from_json(scenario.to_json())
    assert again == scenario
    assert json.loads(scenario.to_json())["workload"]["compression"] is False
    # Defaults: what every client did before the switches existed.
    assert (Workload().compression, Workload().resend_on_gap) == (True, False)


def test_a_generated_plan_gets_the_workload_its_steps_need() -> None:
    plain = [Step(at_s=0.5, fault=fault("latency", "lb"), duration_s=1.0)]
    assert workload_for(plain) == Workload()
    repeated = [*plain, Step(at_s=1.0, fault=fault("frame_duplicate", "primary"), duration_s=1.0)]
    assert workload_for(repeated) == Workload(compression=False)
    base = Workload(clients=9)
    assert workload_for(repeated, base) == Workload(clients=9, compression=False)


def test_a_fault_phase_ended_by_failover_needs_steps_that_fault_one_backend() -> None:
    from harness.scenario import Phases

    pause = Step(at_s=0.5, fault=fault("pause", "primary"))
    ok = Scenario("ok", steps=(pause,), phases=Phases(faults_s=6.5, faults_end_on_failover=True))
    assert Scenario.from_dict(ok.to_dict()) == ok
    for steps in (
        (),  # nothing faulted: no failover to wait for
        (pause, Step(at_s=1.0, fault=fault("pause", "secondary"))),  # two backends
        (Step(at_s=0.5, fault=fault("partition", "lb")),),  # not a backend
        (Step(at_s=0.5, fault=fault("latency", "primary", latency_ms=100), duration_s=2.0),),  # healed by itself
    ):
        with pytest.raises(ScenarioError, match=r"^phases\.faults_end_on_failover: needs steps that all fault one"):
            Scenario("bad", steps=steps, phases=Phases(faults_s=6.5, faults_end_on_failover=True))
    with pytest.raises(ScenarioError, match=r"phases\.faults_end_on_failover: expected true or false"):
        Phases(faults_end_on_failover=1)  # type: ignore[arg-type]
