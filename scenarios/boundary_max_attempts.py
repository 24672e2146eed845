"""max_attempts at its edge: two failovers inside the window are allowed, the third is refused."""

from harness.faults import fault
from harness.scenario import Expect, Limits, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="boundary_max_attempts",
    description=(
        "max_attempts 2 in a 30 s window, min_interval 0.5 s. Take the clients' backend down three "
        "times, 0.8 s apart (primary, secondary, primary): the first two failovers must be allowed "
        "(refusals_justified), the third refused with 1013 (reconnect_limits)."
    ),
    limits=Limits(max_attempts=2, window_s=30.0, min_interval_s=0.5),
    workload=Workload(clients=4, probe_clients=1),
    steps=(
        Step(at_s=0.3, fault=fault("down", "primary"), duration_s=0.5),
        Step(at_s=1.1, fault=fault("down", "secondary"), duration_s=0.5),
        Step(at_s=1.9, fault=fault("down", "primary"), duration_s=0.5),
    ),
    phases=Phases(warmup_s=0.5, deadline_s=8.0, quiesce_s=5.0),
    expect=Expect(close_codes=(1013,), failover_deadline_s=4.0, backends_reachable=True),
    tags=("quick", "network", "limits", "boundary"),
)
