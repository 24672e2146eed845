"""One frame per connection lost on the client link and on each way to and from the primary: the
game's gap shows the loss, the client re-sends, nobody is disconnected."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="frame_drop",
    description=(
        "Uncompressed clients that answer a gap. On every client connection the second move on its "
        "way to the balancer is lost; then, on every connection to the primary, the second move on "
        "its way to it; then the third reply from it. A balancer cannot recover a lost frame and "
        "must not try: it relays what follows as it is, closes nobody and fails over from nobody. "
        "The backend answers the next move with a gap, the client re-sends from the lost seq, and "
        "the game goes on from where it was; a lost ack leaves just that move unacknowledged."
    ),
    workload=Workload(clients=4, rate_hz=10.0, compression=False, resend_on_gap=True),
    steps=(
        Step(at_s=0.5, fault=fault("frame_drop", "lb", nth=2, stream="upstream"), duration_s=1.0),
        Step(at_s=1.5, fault=fault("frame_drop", "primary", nth=2, stream="upstream"), duration_s=1.0),
        Step(at_s=2.5, fault=fault("frame_drop", "primary", nth=3, stream="downstream"), duration_s=1.0),
    ),
    phases=Phases(faults_s=4.0),
    expect=Expect(failover_deadline_s=4.0),
    tags=("network", "frames", "frame_drop"),
)
