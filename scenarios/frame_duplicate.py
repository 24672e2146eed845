"""One frame per connection sent twice on the client link, each way: the backend acknowledges the
repeated move as a dup, the repeated ack is one more reply, and nobody is disconnected."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="frame_duplicate",
    description=(
        "Uncompressed clients. On every client connection the second move on its way to the "
        "balancer is sent twice; later, the third reply on its way back. A correct balancer relays "
        "both copies as they are and disconnects nobody. The backend acknowledges the repeated move "
        "with dup true and applies it once (single_upstream allows one extra delivery per frame "
        "repeated upstream); a repeated ack is one more reply to the client, not a second "
        "acknowledgement. Only the client link is hit: a build may deflate its backend leg, where "
        "a repeated frame corrupts the stream."
    ),
    workload=Workload(clients=4, rate_hz=10.0, compression=False),
    steps=(
        Step(at_s=0.5, fault=fault("frame_duplicate", "lb", nth=2, stream="upstream"), duration_s=1.0),
        Step(at_s=2.0, fault=fault("frame_duplicate", "lb", nth=3, stream="downstream"), duration_s=1.0),
    ),
    phases=Phases(faults_s=3.5),
    expect=Expect(failover_deadline_s=4.0),
    tags=("network", "frames", "frame_duplicate"),
)
