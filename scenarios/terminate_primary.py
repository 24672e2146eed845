"""SIGTERM the primary: it closes its connections with 1001 (going away), which must fail over."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step

SCENARIO = Scenario(
    name="terminate_primary",
    description="SIGTERM the primary; its 1001 closes are an upstream loss, not the end of the game.",
    steps=(Step(at_s=0.5, fault=fault("terminate", "primary")),),
    phases=Phases(faults_s=1.5),
    expect=Expect(failover_deadline_s=5.0),
    tags=("quick", "process"),
)
