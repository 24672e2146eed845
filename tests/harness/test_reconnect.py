"""The workload's reconnect policy: waits, seeded jitter, and validation that names the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.reconnect import ReconnectPolicy
from harness.scenario import Scenario, ScenarioError, Workload
from harness.swarm import main as swarm_main
from harness.swarm import swarm_argv


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    policy = ReconnectPolicy(base_s=0.1, cap_s=1.0)
    rng = policy.rng_for("c001")
    assert [policy.delay_s(k, rng) for k in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_the_default_is_the_clients_old_backoff() -> None:
    # 0.1 s doubling to 1 s without jitter: what every scenario written before the policy got.
    assert ReconnectPolicy() == Workload().reconnect_policy == ReconnectPolicy("backoff", 0.1, 1.0, 0.0, 0)


def test_immediate_never_waits() -> None:
    policy = ReconnectPolicy(kind="immediate")
    assert {policy.delay_s(k, policy.rng_for("c")) for k in range(1, 20)} == {0.0}


def test_jitter_stays_within_its_fraction_of_the_delay() -> None:
    policy = ReconnectPolicy(base_s=0.2, cap_s=3.2, jitter=0.5, seed=7)
    for cid in ("c000", "c001", "c999"):
        rng = policy.rng_for(cid)
        for k in range(1, 10):
            ceiling = min(3.2, 0.2 * 2 ** (k - 1))
            assert 0.5 * ceiling <= policy.delay_s(k, rng) <= ceiling


def test_jitter_replays_per_seed_and_client_and_differs_between_clients() -> None:
    policy = ReconnectPolicy(base_s=1.0, cap_s=1.0, jitter=1.0, seed=42)

    def draws(p: ReconnectPolicy, cid: str) -> list[float]:
        rng = p.rng_for(cid)
        return [p.delay_s(1, rng) for _ in range(5)]

    assert draws(policy, "c001") == draws(policy, "c001")
    assert draws(policy, "c001") != draws(policy, "c002")
    assert draws(policy, "c001") != draws(ReconnectPolicy(base_s=1.0, cap_s=1.0, jitter=1.0, seed=43), "c001")
    # Full jitter spreads a herd over the whole interval, not around one instant.
    spread = [draws(policy, f"c{i:03d}")[0] for i in range(1000)]
    assert min(spread) < 0.05 and max(spread) > 0.95


@pytest.mark.parametrize(
    ("workload", "field"),
    [
        ({"reconnect": "sometimes"}, "workload.reconnect"),
        ({"reconnect": 3}, "workload.reconnect"),
        ({"backoff_base_s": 0}, "workload.backoff_base_s"),
        ({"backoff_base_s": -1}, "workload.backoff_base_s"),
        ({"backoff_cap_s": 0.05}, "workload.backoff_cap_s"),
        ({"backoff_jitter": 1.5}, "workload.backoff_jitter"),
        ({"backoff_jitter": "lots"}, "workload.backoff_jitter"),
        ({"reconnect_seed": 1.5}, "workload.reconnect_seed"),
        ({"reconnect_seed": True}, "workload.reconnect_seed"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(workload: dict[str, object], field: str) -> None:
    with pytest.raises(ScenarioError, match=rf"^{field}: "):
        Scenario.from_dict({"name": "x", "workload": workload})


def test_immediate_needs_no_base() -> None:
    w = Workload(reconnect="immediate", backoff_base_s=0.0, backoff_cap_s=0.0)
    assert w.reconnect_policy.delay_s(3, w.reconnect_policy.rng_for("c")) == 0.0


def test_the_policy_survives_a_round_trip_through_json() -> None:
    s = Scenario(
        "herd", workload=Workload(reconnect="backoff", backoff_base_s=0.25, backoff_cap_s=4.0, backoff_jitter=1.0,
                                  reconnect_seed=9)
    )  # fmt: skip
    again = Scenario.from_json(s.to_json())
    assert again.workload.reconnect_policy == s.workload.reconnect_policy


def test_the_swarm_command_carries_the_policy_and_refuses_a_bad_one(capsys: pytest.CaptureFixture[str]) -> None:
    policy = ReconnectPolicy(base_s=0.25, cap_s=4.0, jitter=1.0, seed=9)
    argv = swarm_argv("ws://127.0.0.1:1/play", 3, history_dir=Path("/tmp"), reconnect=policy)
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--reconnect"] == "backoff"
    assert float(flags["--backoff-jitter"]) == 1.0 and flags["--reconnect-seed"] == "9"
    with pytest.raises(SystemExit) as exc:
        swarm_main(["--url", "ws://127.0.0.1:1", "--clients", "1", "--backoff-base", "2", "--backoff-cap", "1"])
    assert exc.value.code == 2
    assert "cap_s: must be >= the base" in capsys.readouterr().err
