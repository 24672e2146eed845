"""One frame per connection sent twice on the client link and on each way to and from the primary:
the backend acknowledges the copy as a dup, nothing is applied twice, nobody is disconnected."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="frame_duplicate",
    description=(
        "Uncompressed clients. On every client connection the second move on its way to the "
        "balancer is sent twice; then the third reply from the primary on every connection to it; "
        "then the second move on its way to the primary. A correct balancer relays both copies as "
        "they are and disconnects nobody. The backend acknowledges a repeated move with dup true "
        "and applies it once; a repeated ack is one more reply to the client, not a second "
        "acknowledgement. single_upstream allows one extra delivery per frame repeated upstream."
    ),
    workload=Workload(clients=4, rate_hz=10.0, compression=False),
    steps=(
        Step(at_s=0.5, fault=fault("frame_duplicate", "lb", nth=2, stream="upstream"), duration_s=1.0),
        Step(at_s=1.5, fault=fault("frame_duplicate", "primary", nth=3, stream="downstream"), duration_s=1.0),
        Step(at_s=2.5, fault=fault("frame_duplicate", "primary", nth=2, stream="upstream"), duration_s=1.0),
    ),
    phases=Phases(faults_s=4.0),
    expect=Expect(failover_deadline_s=4.0),
    tags=("network", "frames", "frame_duplicate"),
)
