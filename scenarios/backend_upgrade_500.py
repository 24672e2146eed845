"""The secondary answers every upgrade with 500 while the primary is down: nothing to fail over to, so 1013 at once."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step
from scenarios._upgrade import UPGRADE_LIMITS

SCENARIO = Scenario(
    name="backend_upgrade_500",
    description=(
        "The secondary refuses every WebSocket upgrade with HTTP 500 for 5 s; 0.5 s in, the primary is "
        "killed for 2.5 s. Sessions lose the primary, fail over to the secondary and meet the 500: with no "
        "backend left the build must close them with 1013 at once (no retry loop, no hang), and every "
        "reconnect meets the same until the primary is back."
    ),
    steps=(
        Step(at_s=0.3, fault=fault("backend_upgrade_refused", "secondary", status=500), duration_s=5.0),
        Step(at_s=0.8, fault=fault("kill", "primary"), duration_s=2.5),
    ),
    limits=UPGRADE_LIMITS,
    expect=Expect(close_codes=(1013,), failover_deadline_s=4.0),
    tags=("process", "upgrade", "backend_upgrade"),
)
