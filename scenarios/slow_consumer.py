"""A slow consumer: the client side of the balancer is throttled; nothing may be lost or reordered."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step, Workload

SCENARIO = Scenario(
    name="slow_consumer",
    description="8 KB/s towards the clients for 3 s while 8 clients play at 10 moves/s; backlog, no loss.",
    workload=Workload(clients=8, rate_hz=10.0),
    steps=(Step(at_s=0.5, fault=fault("bandwidth", "lb", rate_kbps=8, stream="downstream"), duration_s=3.0),),
    expect=Expect(failover_deadline_s=8.0),
    tags=("network",),
)
