"""A slow failover: moves the clients send while it lasts wait in their connections and arrive."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="slow_failover",
    description=(
        "250 ms each way on the secondary link, then the primary goes down: opening the new upstream "
        "takes over half a second, and every move sent meanwhile must reach the secondary "
        "(failover_delivery), none twice more than allowed (single_upstream)."
    ),
    workload=Workload(clients=4, probe_clients=1),
    steps=(
        Step(at_s=0.0, fault=fault("latency", "secondary", latency_ms=250), duration_s=1.8),
        Step(at_s=0.2, fault=fault("down", "primary"), duration_s=1.0),
    ),
    phases=Phases(warmup_s=0.5, deadline_s=8.0, quiesce_s=5.0),
    expect=Expect(failover_deadline_s=5.0),
    tags=("quick", "network", "delivery"),
)
