"""A ping flood on the client link, both ways: answered or ignored, never a disconnect."""

from harness.faults import fault
from harness.scenario import Expect, Keepalive, Scenario, Step

SCENARIO = Scenario(
    name="ping_flood",
    description=(
        "Inject a burst of 100 pings of 125 bytes into every client connection, toward the balancer "
        "and toward the client, for 3 s. The balancer answers or ignores them; no client is "
        "disconnected and play goes on."
    ),
    # A burst has to be read and answered before the keepalive's own pong gets through: 1000 pings
    # each way took 0.7 s to clear on one connection of a loaded 2-core machine, and the balancer
    # then closed all 4 clients with 1011 (keepalive ping timeout) under the usual 0.5 s. A 2 s
    # timeout keeps judging the rule (no disconnect) without judging the machine's load.
    keepalive=Keepalive(ping_interval_s=0.5, ping_timeout_s=2.0),
    steps=(Step(at_s=0.5, fault=fault("ping_flood", "lb", count=100, size=125, stream="both"), duration_s=3.0),),
    expect=Expect(failover_deadline_s=5.5),
    tags=("protocol", "websocket"),
)
