"""An idle-timeout middlebox on both hops: flows idle longer than 1.5 s are silently forgotten."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step, Workload

#: Shorter than a client's pause between moves, longer than the keepalive interval (0.5 s).
IDLE_TIMEOUT_MS = 1500

SCENARIO = Scenario(
    name="idle_timeout",
    description=(
        "A NAT gateway or cloud load balancer on the client link and on the primary's link forgets any "
        "flow idle for 1.5 s: no FIN, no RST, every later packet dropped. Clients move only every 2.5 s, "
        "so only keepalive traffic keeps the flows alive; with it, nothing is lost and nobody fails over."
    ),
    # One move every 2.5 s: the game traffic alone leaves every flow idle 1 s past the timeout.
    workload=Workload(clients=4, rate_hz=0.4),
    steps=(
        Step(at_s=0.5, fault=fault("idle_timeout", "lb", timeout_ms=IDLE_TIMEOUT_MS)),
        Step(at_s=0.5, fault=fault("idle_timeout", "primary", timeout_ms=IDLE_TIMEOUT_MS)),
    ),
    # Two pauses between moves per client while the middlebox is in place.
    phases=Phases(faults_s=5.5),
    # Derived (harness.expectations) from the fault phase; a build with keepalive never comes near it.
    expect=Expect(failover_deadline_s=9.0),
    tags=("network", "keepalive", "idle_timeout"),
)
