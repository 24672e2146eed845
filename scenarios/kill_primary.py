"""The seed's demonstration: kill the primary while 4 clients play; all move to the secondary in place."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="kill_primary",
    description="SIGKILL the primary backend under 4 playing clients; every client fails over in place.",
    workload=Workload(clients=4, rate_hz=10.0),
    steps=(Step(at_s=0.5, fault=fault("kill", "primary")),),
    phases=Phases(faults_s=1.5),
    expect=Expect(failover_deadline_s=5.0),
    tags=("quick", "process", "kill_primary"),
)
