"""The failover target dies just after the sessions moved to it: kill the secondary once they failed over."""

from harness.faults import Fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="kill_after_failover",
    description=(
        "SIGKILL the primary under 4 playing clients; as soon as a client has failed over to the "
        "secondary, SIGKILL the secondary too. The primary is back 2 s after its kill: the balancer "
        "refuses with 1013 while nothing is up (or holds on), and every client plays again on the primary."
    ),
    workload=Workload(clients=4, rate_hz=10.0),
    steps=(
        Step(at_s=0.5, fault=Fault.from_dict({"kind": "kill", "target": "primary"}), duration_s=2.0),
        Step(
            at_s=0.5,
            fault=Fault.from_dict(
                {
                    "kind": "kill",
                    "target": "secondary",
                    "trigger": {"after": "failovers", "failovers": 1, "within_s": 5.0},
                }
            ),
        ),
    ),
    phases=Phases(faults_s=3.0),
    expect=Expect(close_codes=(1013,), failover_deadline_s=4.0),
    tags=("process", "trigger", "kill_after_failover"),
)
