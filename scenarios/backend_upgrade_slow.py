"""The primary answers every upgrade 0.8 s late: inside the open timeout, so sessions wait it out."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step
from scenarios._upgrade import CLIENTS_RECONNECT, UPGRADE_LIMITS

SCENARIO = Scenario(
    name="backend_upgrade_slow",
    description=(
        "The primary's upgrade requests are held 0.8 s for 5 s (the handshake only; live sessions are "
        "untouched); meanwhile the lb link drops every client for 0.3 s. The delay is inside the build's "
        "open timeout (1.5 s), so a reconnecting client is welcomed, by either backend, within 2.8 s."
    ),
    steps=(
        Step(at_s=0.3, fault=fault("backend_upgrade_slow", "primary", delay_ms=800), duration_s=5.0),
        CLIENTS_RECONNECT,
    ),
    limits=UPGRADE_LIMITS,
    # Derived: the delay counts as latency once per handshake (2 x 0.8 s on the base 4.0 s).
    expect=Expect(close_codes=(1006, 1011), failover_deadline_s=5.6, backends_reachable=True),
    tags=("network", "upgrade", "backend_upgrade"),
)
