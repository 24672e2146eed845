"""One frame per connection lost on the client link, each way: the game's gap shows a lost move,
the client re-sends, a lost ack leaves one move unacknowledged, and nobody is disconnected."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

SCENARIO = Scenario(
    name="frame_drop",
    description=(
        "Uncompressed clients that answer a gap. On every client connection the second move on its "
        "way to the balancer is lost; later, the third reply on its way back. A balancer cannot "
        "recover a lost frame and must not try: it relays what follows as it is, closes nobody and "
        "fails over from nobody. The backend answers the next move with a gap, the client re-sends "
        "from the lost seq, and the game goes on from where it was; a lost ack leaves just that move "
        "unacknowledged. Only the client link is hit: its compression is the workload's to choose, "
        "while a build may deflate its backend leg, where a lost frame corrupts the stream."
    ),
    workload=Workload(clients=4, rate_hz=10.0, compression=False, resend_on_gap=True),
    steps=(
        Step(at_s=0.5, fault=fault("frame_drop", "lb", nth=2, stream="upstream"), duration_s=1.0),
        Step(at_s=2.0, fault=fault("frame_drop", "lb", nth=3, stream="downstream"), duration_s=1.0),
    ),
    phases=Phases(faults_s=3.5),
    expect=Expect(failover_deadline_s=4.0),
    tags=("network", "frames", "frame_drop"),
)
