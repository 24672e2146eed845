"""A reconnect storm: 200 clients connect at once, and the primary dies under them."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="reconnect_storm",
    description="200 clients connect at once at 2 moves/s; the primary is killed under all of them.",
    workload=Workload(clients=200, rate_hz=2.0, connect_spread_s=0.0),
    steps=(Step(at_s=1.0, fault=fault("kill", "primary")),),
    phases=Phases(warmup_s=1.5, faults_s=2.0, deadline_s=15.0, quiesce_s=10.0),
    expect=Expect(failover_deadline_s=10.0, recovery_deadline_s=15.0),
    tags=("load", "process"),
)
