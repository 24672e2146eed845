"""Blackhole partition of the primary link: half-open connections that still look OPEN."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step

SCENARIO = Scenario(
    name="partition_primary",
    description="Blackhole both directions between balancer and primary; keepalive notices, clients fail over.",
    steps=(Step(at_s=0.5, fault=fault("partition", "primary")),),
    # The phase ends once every client is served by the secondary (faults_s at the latest): a build
    # that never fails over still stalls for the whole 6.5 s.
    phases=Phases(faults_s=6.5, faults_end_on_failover=True),
    # Keepalive (0.5 + 0.5 s, 1 s close timeout) notices in about 2 s; the fault outlasts the
    # deadline so a build without keepalive stalls past it instead of being rescued by the heal.
    expect=Expect(failover_deadline_s=4.5),
    tags=("quick", "network", "keepalive", "partition_primary"),
)
