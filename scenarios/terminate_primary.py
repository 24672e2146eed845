"""SIGTERM the primary: it closes its connections with 1001 (going away), which must fail over."""

from harness.faults import fault
from harness.recovery import RecoveryGoals
from harness.scenario import Expect, Phases, Scenario, Step

SCENARIO = Scenario(
    name="terminate_primary",
    description="SIGTERM the primary; its 1001 closes are an upstream loss, not the end of the game.",
    steps=(Step(at_s=0.5, fault=fault("terminate", "primary")),),
    phases=Phases(faults_s=1.5),
    # Recovery goals at the scenario's own failover deadline, above what a correct build is promised
    # (harness.expectations.recovery_goals_for: 4.1 s); the loss is seen at once, so clients
    # measured recover in a fraction of it. Nothing may be lost: in-flight moves are re-sent.
    expect=Expect(
        failover_deadline_s=5.0,
        recovery=RecoveryGoals(p99_recover_s=5.0, longest_gap_s=5.0, max_lost=0),
    ),
    tags=("quick", "process"),
)
