"""Blackhole partition of the primary link: half-open connections that still look OPEN."""

from harness.analysis import inexcusable_stall_s
from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step

FAULT_AT_S = 0.5
FAILOVER_DEADLINE_S = 4.5

SCENARIO = Scenario(
    name="partition_primary",
    description="Blackhole both directions between balancer and primary; keepalive notices, clients fail over.",
    steps=(Step(at_s=FAULT_AT_S, fault=fault("partition", "primary")),),
    # The phase ends once every client is served by the secondary (faults_s at the latest). A build
    # that never fails over stalls for the whole phase: past the deadline at the largest slowness
    # stretch, so that even on a loaded machine its stall is a violation, not inconclusive (at
    # 6.5 s, six certify lanes on 2 cores measured x2.4-3.9 and set the stall aside).
    phases=Phases(faults_s=FAULT_AT_S + inexcusable_stall_s(FAILOVER_DEADLINE_S) + 1.0, faults_end_on_failover=True),
    # Keepalive (0.5 + 0.5 s, 1 s close timeout) notices in about 2 s; the fault outlasts the
    # deadline so a build without keepalive stalls past it instead of being rescued by the heal.
    expect=Expect(failover_deadline_s=FAILOVER_DEADLINE_S),
    tags=("quick", "network", "keepalive", "partition_primary"),
)
