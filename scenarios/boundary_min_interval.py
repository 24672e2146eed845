"""min_interval at its edge: a failover just over it after the last one is allowed, one just under
it is refused."""

from harness.faults import fault
from harness.scenario import Expect, Limits, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="boundary_min_interval",
    description=(
        "min_interval 1.0 s, max_attempts 5 in 30 s. Take the clients' backend down at 0.3 s, 1.6 s "
        "(1.3 s later: just over, must be allowed) and 2.3 s (0.7 s later: just under, must be "
        "refused with 1013)."
    ),
    limits=Limits(max_attempts=5, window_s=30.0, min_interval_s=1.0),
    workload=Workload(clients=4, probe_clients=1),
    steps=(
        Step(at_s=0.3, fault=fault("down", "primary"), duration_s=0.4),
        Step(at_s=1.6, fault=fault("down", "secondary"), duration_s=0.4),
        Step(at_s=2.3, fault=fault("down", "primary"), duration_s=0.4),
    ),
    phases=Phases(warmup_s=0.5, deadline_s=8.0, quiesce_s=5.0),
    expect=Expect(close_codes=(1013,), failover_deadline_s=4.0, backends_reachable=True),
    tags=("quick", "network", "limits", "boundary"),
)
