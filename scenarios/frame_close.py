"""Close frames nobody asked for: one client's connection closed by a middlebox, then the primary
"going away" on every balancer connection."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="frame_close",
    description=(
        "A middlebox on the client link closes one client's connection with 4000 in place of its "
        "first move (the balancer only sees the socket end); later every connection from the primary "
        "gets a close frame with 1001 (going away) in place of its next reply. The hit client sees "
        "4000 and plays again after reconnecting; the 1001 is a lost upstream: every session fails "
        "over in place and no client sees it."
    ),
    workload=Workload(clients=4, rate_hz=10.0),
    steps=(
        Step(at_s=0.5, fault=fault("frame_close", "lb", code=4000, connections=1), duration_s=1.0),
        Step(at_s=2.0, fault=fault("frame_close", "primary", code=1001, connections=0), duration_s=1.5),
    ),
    phases=Phases(faults_s=4.0),
    expect=Expect(close_codes=(4000,), failover_deadline_s=4.0),
    tags=("network", "frames", "frame_close"),
)
