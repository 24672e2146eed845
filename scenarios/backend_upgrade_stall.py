"""The primary accepts every upgrade's TCP connection and never answers: sessions move on at the open timeout."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step
from scenarios._upgrade import CLIENTS_RECONNECT, UPGRADE_LIMITS

SCENARIO = Scenario(
    name="backend_upgrade_stall",
    description=(
        "The primary's upgrades stall for 6 s: the TCP connection is accepted and the request never "
        "answered (live sessions are untouched); meanwhile the lb link drops every client for 0.3 s. Each "
        "reconnecting client's new session must give up on the primary at the build's open timeout "
        "(1.5 s) and be welcomed by the secondary within 3.5 s."
    ),
    steps=(
        Step(at_s=0.3, fault=fault("backend_upgrade_stalled", "primary"), duration_s=6.0),
        CLIENTS_RECONNECT,
    ),
    limits=UPGRADE_LIMITS,
    # Derived: a stalled backend with clients dropped is a blackhole for as long as it lasts (+6 s);
    # upgrade_failover holds each session to the open timeout instead.
    expect=Expect(close_codes=(1006, 1011), failover_deadline_s=10.0, backends_reachable=True),
    tags=("network", "upgrade", "backend_upgrade"),
)
