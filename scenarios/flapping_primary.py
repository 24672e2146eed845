"""A flapping primary: the second failover comes sooner than min_interval, so it must be refused."""

from harness.faults import fault
from harness.scenario import Expect, Limits, Phases, Scenario, Step

SCENARIO = Scenario(
    name="flapping_primary",
    description=(
        "Kill the primary, bring it back at once, then kill the secondary: the second failover comes "
        "sooner than min_interval (2 s here), so the build must refuse it with 1013, never fail over early."
    ),
    limits=Limits(max_attempts=3, window_s=6.0, min_interval_s=2.0),
    steps=(
        Step(at_s=0.3, fault=fault("kill", "primary"), duration_s=0.1),
        Step(at_s=1.2, fault=fault("kill", "secondary")),
    ),
    phases=Phases(faults_s=2.5),
    expect=Expect(close_codes=(1013,), failover_deadline_s=6.0),
    tags=("quick", "process", "limits", "flapping_primary"),
)
