"""The pure parts of the limit probes: scenario fields, the backend's end_with, config keys."""

from __future__ import annotations

import pytest

from harness.backend import end_code_of
from harness.catalog import named_scenarios
from harness.probes import PROBE_KINDS, probe_path
from harness.scenario import Expect, Limits, Scenario, ScenarioError


def test_probes_limits_and_expectations_round_trip() -> None:
    s = Scenario(
        name="x",
        limits=Limits(max_size=100, max_connections=3),
        expect=Expect(backends_reachable=True),
        probes=("max_size", "max_connections", "close_codes"),
    )
    again = Scenario.from_json(s.to_json())
    assert again == s
    assert again.to_dict()["limits"]["max_size"] == 100


def test_an_unknown_probe_is_named() -> None:
    with pytest.raises(ScenarioError, match="probes: unknown probe 'nope'"):
        Scenario.from_dict({"name": "x", "probes": ["nope"]})


@pytest.mark.parametrize("probe", ["max_size", "max_connections"])
def test_a_probe_needs_the_limit_it_probes(probe: str) -> None:
    with pytest.raises(ScenarioError, match=rf"probes: {probe} needs limits\.{probe} >= 1"):
        Scenario.from_dict({"name": "x", "probes": [probe]})


def test_backends_reachable_must_be_a_boolean() -> None:
    with pytest.raises(ScenarioError, match=r"expect\.backends_reachable: expected true or false"):
        Scenario.from_dict({"name": "x", "expect": {"backends_reachable": 1}})


def test_end_with_asks_the_backend_for_a_close_code() -> None:
    assert end_code_of("/play?client=c1") is None
    assert end_code_of(probe_path("p-1", end_with="4321")) == 4321
    assert end_code_of("/play?client=c1&end_with=1000") == 1000
    for bad in ("1006", "2999", "5000", "abc"):
        with pytest.raises(ValueError):
            end_code_of(f"/play?client=c1&end_with={bad}")


def test_every_probe_kind_has_a_named_scenario() -> None:
    probed = {p for s in named_scenarios().values() for p in s.probes}
    assert probed == set(PROBE_KINDS)
