"""A latency spike with jitter on the primary link: slower, never broken, never reordered."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step

SCENARIO = Scenario(
    name="latency_spike",
    description="150 ms ±50 ms each way on the primary link for 1.5 s; nothing is lost or reordered.",
    steps=(Step(at_s=0.5, fault=fault("latency", "primary", latency_ms=150, jitter_ms=50), duration_s=1.5),),
    expect=Expect(failover_deadline_s=5.0),
    tags=("network",),
)
