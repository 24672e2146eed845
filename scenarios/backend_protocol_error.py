"""The primary sends frames of invalid UTF-8: the balancer treats it as lost and fails over."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step

SCENARIO = Scenario(
    name="backend_protocol_error",
    description=(
        "Inject a text frame of invalid UTF-8 into every connection from the primary toward the "
        "balancer. The balancer's upstream leg fails with 1007; it treats the primary as lost and "
        "fails every session over to the secondary in place, without closing a client or crashing."
    ),
    steps=(Step(at_s=0.5, fault=fault("backend_protocol_error", "primary", error="invalid_utf8"), duration_s=1.5),),
    expect=Expect(failover_deadline_s=4.0),
    tags=("protocol", "websocket"),
)
