"""limit_data cuts the primary's connections after a few frames, mid-stream."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step

# 128 bytes, not the 2 KB this scenario once used: game frames are compressed (a few dozen bytes
# per ack), so 2 KB never crossed the link while the fault lasted and the fault never landed. The
# per-toxic evidence showed it: the toxic touched no connection, and the run was inconclusive.
SCENARIO = Scenario(
    name="limit_data",
    description="The primary link closes each connection after 128 more bytes towards the balancer; clients fail over.",
    steps=(Step(at_s=0.5, fault=fault("limit_data", "primary", bytes=128, stream="downstream"), duration_s=2.5),),
    expect=Expect(failover_deadline_s=6.0),
    tags=("network",),
)
