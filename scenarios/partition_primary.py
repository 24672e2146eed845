"""Blackhole partition of the primary link: half-open connections that still look OPEN."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step
from scenarios._keepalive import FAULT_AT_S, held_until_failover

FAILOVER_DEADLINE_S = 4.5

SCENARIO = Scenario(
    name="partition_primary",
    description="Blackhole both directions between balancer and primary; keepalive notices, clients fail over.",
    steps=(Step(at_s=FAULT_AT_S, fault=fault("partition", "primary")),),
    phases=held_until_failover(FAILOVER_DEADLINE_S),
    # Keepalive (0.5 + 0.5 s, 1 s close timeout) notices in about 2 s; the fault outlasts the
    # deadline so a build without keepalive stalls past it instead of being rescued by the heal.
    expect=Expect(failover_deadline_s=FAILOVER_DEADLINE_S),
    tags=("quick", "network", "keepalive", "partition_primary"),
)
