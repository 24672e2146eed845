"""Every WebSocket frame on the client link written in 16 TCP pieces: transparent."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step, Workload

SCENARIO = Scenario(
    name="split_frames",
    description=(
        "Write every data frame on the client link, both ways, as 16 TCP segments 200 µs apart "
        "for 1.5 s (about 60 moves and acks). The balancer reassembles them: every message arrives "
        "whole and in order, and no client is disconnected. The clients offer no compression, so a "
        "build that parses frames itself (the reference's frame-level data path) has to reassemble "
        "them too."
    ),
    workload=Workload(compression=False),
    steps=(
        Step(at_s=0.5, fault=fault("split_frames", "lb", segments=16, delay_us=200, stream="both"), duration_s=1.5),
    ),
    expect=Expect(failover_deadline_s=4.0),
    tags=("protocol", "websocket"),
)
