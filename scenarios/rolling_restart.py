"""A rolling restart of both backends, one after the other, as a deploy does it."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step

SCENARIO = Scenario(
    name="rolling_restart",
    description="Gracefully restart the primary, then the secondary; clients follow without a drop.",
    steps=(
        Step(at_s=0.5, fault=fault("restart", "primary", graceful=True)),
        Step(at_s=3.0, fault=fault("restart", "secondary", graceful=True)),
    ),
    phases=Phases(faults_s=4.5),
    expect=Expect(failover_deadline_s=6.0),
    tags=("process",),
)
