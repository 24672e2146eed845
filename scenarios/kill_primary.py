"""The seed's demonstration: kill the primary while 4 clients play; all move to the secondary in place."""

from harness.faults import fault
from harness.recovery import RecoveryGoals
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="kill_primary",
    description="SIGKILL the primary backend under 4 playing clients; every client fails over in place.",
    workload=Workload(clients=4, rate_hz=10.0),
    steps=(Step(at_s=0.5, fault=fault("kill", "primary")),),
    phases=Phases(faults_s=1.5),
    # Recovery goals at the scenario's own failover deadline, above what a correct build is promised
    # (harness.expectations.recovery_goals_for: 4.1 s); the loss is seen at once, so clients
    # measured recover in a fraction of it. Nothing may be lost: in-flight moves are re-sent.
    expect=Expect(
        failover_deadline_s=5.0,
        recovery=RecoveryGoals(p99_recover_s=5.0, longest_gap_s=5.0, max_lost=0),
    ),
    tags=("quick", "process", "kill_primary"),
)
