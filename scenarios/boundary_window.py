"""window_s at its edge: inside the window the next failover is refused; once it has passed,
failovers are allowed again."""

from harness.faults import fault
from harness.scenario import Expect, Limits, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="boundary_window",
    description=(
        "max_attempts 1 per 1.0 s window, min_interval 0.2 s. A first failover at 0.2 s; the next "
        "loss 0.75 s later, inside the window, must be refused with 1013. The clients reconnect; their "
        "new connections fail over at 1.4 s and lose their backend again 1.25 s later, after the "
        "window: that failover must be allowed."
    ),
    limits=Limits(max_attempts=1, window_s=1.0, min_interval_s=0.2),
    workload=Workload(clients=4, probe_clients=1),
    steps=(
        Step(at_s=0.2, fault=fault("down", "primary"), duration_s=0.25),
        Step(at_s=0.95, fault=fault("down", "secondary"), duration_s=0.25),
        Step(at_s=1.4, fault=fault("down", "primary"), duration_s=0.25),
        Step(at_s=2.65, fault=fault("down", "secondary"), duration_s=0.25),
    ),
    phases=Phases(warmup_s=0.5, deadline_s=8.0, quiesce_s=5.0),
    expect=Expect(close_codes=(1013,), failover_deadline_s=4.0, backends_reachable=True),
    tags=("quick", "network", "limits", "boundary"),
)
