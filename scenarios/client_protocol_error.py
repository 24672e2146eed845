"""One client sends a frame with a reserved opcode: only that client is closed, with 1002."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step

SCENARIO = Scenario(
    name="client_protocol_error",
    description=(
        "Inject a frame with a reserved opcode (0x3) into one client's stream toward the balancer. "
        "The balancer closes that client with 1002 (protocol error); every other client keeps "
        "playing without a disconnect, and the hit client plays again after reconnecting."
    ),
    steps=(
        Step(
            at_s=0.5,
            fault=fault("client_protocol_error", "lb", error="reserved_opcode", clients=1),
            duration_s=3.0,
        ),
    ),
    expect=Expect(close_codes=(1002,), failover_deadline_s=4.0),
    tags=("protocol", "websocket"),
)
