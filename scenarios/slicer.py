"""Slicer fragmentation: WebSocket frames arrive in tiny TCP pieces, both ways, on the client link."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step

SCENARIO = Scenario(
    name="slicer",
    description="Slice every TCP chunk on the client link into ~8-byte pieces for 1.5 s; frames still arrive whole.",
    steps=(
        Step(
            at_s=0.5,
            fault=fault("slicer", "lb", average_size=8, size_variation=4, delay_us=100, stream="both"),
            # 1.5 s: about 60 moves and their acks, every one in pieces.
            duration_s=1.5,
        ),
    ),
    expect=Expect(failover_deadline_s=6.0),
    tags=("network",),
)
