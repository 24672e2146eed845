"""One frame per connection held back on the client link and from the primary: order kept, nothing lost."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="frame_delay",
    description=(
        "On every client connection the second move is held 200 ms on its way to the balancer, and on "
        "every connection from the primary the third reply is held 200 ms, everything behind each "
        "waiting too. A correct balancer relays in order, loses and repeats nothing, and nobody is "
        "disconnected (200 ms is under half the 0.5 s ping timeout)."
    ),
    workload=Workload(clients=4, rate_hz=10.0),
    steps=(
        Step(at_s=0.5, fault=fault("frame_delay", "lb", delay_ms=200, nth=2, stream="upstream"), duration_s=2.0),
        Step(at_s=0.5, fault=fault("frame_delay", "primary", delay_ms=200, nth=3, stream="downstream"), duration_s=2.0),
    ),
    phases=Phases(faults_s=3.0),
    expect=Expect(failover_deadline_s=4.8),
    tags=("network", "frames", "frame_delay"),
)
