"""reset_peer armed on the primary's link, acting only after 5 data frames on each connection."""

from harness.faults import Fault
from harness.scenario import Expect, Scenario, Step

RESET_AFTER = {"kind": "reset_peer", "target": "primary", "params": {"timeout_ms": 0, "stream": "upstream"},
               "trigger": {"after": "frames", "frames": 5}}  # fmt: skip

SCENARIO = Scenario(
    name="reset_after_frames",
    description=(
        "A reset_peer toxic is armed on the primary's link but lets the first 5 data frames (moves "
        "relayed by the balancer) through on each connection; the 6th is met with an RST. The balancer "
        "fails over to the secondary in place, with no close seen by any client."
    ),
    steps=(Step(at_s=0.5, fault=Fault.from_dict(RESET_AFTER), duration_s=2.0),),
    expect=Expect(failover_deadline_s=4.0),
    tags=("network", "trigger", "reset_after_frames"),
)
