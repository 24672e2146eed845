"""A ping flood on the client link, both ways: answered or ignored, never a disconnect."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step

SCENARIO = Scenario(
    name="ping_flood",
    description=(
        "Inject 1000 pings of 125 bytes into every client connection, toward the balancer and "
        "toward the client, for 3 s. The balancer answers or ignores them; no client is "
        "disconnected and play goes on."
    ),
    steps=(Step(at_s=0.5, fault=fault("ping_flood", "lb", count=1000, size=125, stream="both"), duration_s=3.0),),
    expect=Expect(failover_deadline_s=4.0),
    tags=("protocol", "websocket"),
)
