"""A one-way partition of the primary link: replies are swallowed while the link stays ESTABLISHED."""

from harness.analysis import inexcusable_stall_s
from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step

FAULT_AT_S = 0.5
FAILOVER_DEADLINE_S = 4.0

SCENARIO = Scenario(
    name="one_way_partition",
    description=(
        "Blackhole only the primary's replies (downstream): moves still reach it, nothing comes back and "
        "nothing is closed. Only keepalive can notice the half-open link; clients fail over."
    ),
    steps=(Step(at_s=FAULT_AT_S, fault=fault("one_way_partition", "primary", stream="downstream")),),
    # The phase ends once every client is served by the secondary (faults_s at the latest). A build
    # that never fails over stalls for the whole phase: past the deadline at the largest slowness
    # stretch, so that even on a loaded machine its stall is a violation, not inconclusive (at
    # 6.5 s, six certify lanes on 2 cores measured x2.4-3.9 and set the stall aside).
    phases=Phases(faults_s=FAULT_AT_S + inexcusable_stall_s(FAILOVER_DEADLINE_S) + 1.0, faults_end_on_failover=True),
    # Keepalive (0.5 + 0.5 s, 1 s close timeout) notices in about 2 s, plus 2 s to fail over and be
    # acknowledged: the derived 4.0 s. The fault outlasts it, so a build without keepalive stalls
    # past the deadline instead of being rescued by the heal (which closes the link).
    expect=Expect(failover_deadline_s=FAILOVER_DEADLINE_S),
    tags=("network", "keepalive", "one_way_partition"),
)
