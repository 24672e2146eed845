"""limit_data cuts the primary's connections after a few kilobytes, mid-stream."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step

SCENARIO = Scenario(
    name="limit_data",
    description="The primary link closes each connection after 2 KB more towards the balancer; clients fail over.",
    steps=(Step(at_s=0.5, fault=fault("limit_data", "primary", bytes=2048, stream="downstream"), duration_s=2.5),),
    expect=Expect(failover_deadline_s=6.0),
    tags=("network",),
)
