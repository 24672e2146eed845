"""The primary answers every upgrade with 503: new sessions must fail over to the secondary at once."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step
from scenarios._upgrade import CLIENTS_RECONNECT, UPGRADE_LIMITS

SCENARIO = Scenario(
    name="backend_upgrade_503",
    description=(
        "The primary refuses every WebSocket upgrade with HTTP 503 for 5 s (live sessions are untouched); "
        "meanwhile the lb link drops every client for 0.3 s. Each reconnecting client's new session must "
        "give up on the primary at its first 503 and be welcomed by the secondary within 2 s: no retry loop."
    ),
    steps=(
        Step(at_s=0.3, fault=fault("backend_upgrade_refused", "primary", status=503), duration_s=5.0),
        CLIENTS_RECONNECT,
    ),
    limits=UPGRADE_LIMITS,
    # 1006/1011 from the lb blip (derived); the secondary is up throughout, so no 1013.
    expect=Expect(close_codes=(1006, 1011), failover_deadline_s=4.0, backends_reachable=True),
    tags=("network", "upgrade", "backend_upgrade"),
)
