"""Both backends down: clients get 1013, then recover once the backends are back."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step

SCENARIO = Scenario(
    name="both_down",
    description="Kill both backends; every client is closed with 1013, and plays again after the heal.",
    steps=(
        Step(at_s=0.5, fault=fault("kill", "primary")),
        Step(at_s=0.5, fault=fault("kill", "secondary")),
    ),
    phases=Phases(faults_s=2.5),
    expect=Expect(close_codes=(1013,), failover_deadline_s=6.0),
    tags=("quick", "process", "limits"),
)
