"""reset_peer in the middle of a message: the primary's connections are torn down by RST."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step

SCENARIO = Scenario(
    name="reset_peer",
    description="Reset the primary link's connections as data flows; the balancer fails over in place.",
    steps=(Step(at_s=0.5, fault=fault("reset_peer", "primary", timeout_ms=0, stream="upstream"), duration_s=2.0),),
    expect=Expect(failover_deadline_s=6.0),
    tags=("network",),
)
