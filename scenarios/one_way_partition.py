"""A one-way partition of the primary link: replies are swallowed while the link stays ESTABLISHED."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step
from scenarios._keepalive import FAULT_AT_S, held_until_failover

FAILOVER_DEADLINE_S = 4.0

SCENARIO = Scenario(
    name="one_way_partition",
    description=(
        "Blackhole only the primary's replies (downstream): moves still reach it, nothing comes back and "
        "nothing is closed. Only keepalive can notice the half-open link; clients fail over."
    ),
    steps=(Step(at_s=FAULT_AT_S, fault=fault("one_way_partition", "primary", stream="downstream")),),
    phases=held_until_failover(FAILOVER_DEADLINE_S),
    # Keepalive (0.5 + 0.5 s, 1 s close timeout) notices in about 2 s, plus 2 s to fail over and be
    # acknowledged: the derived 4.0 s. The fault outlasts it, so a build without keepalive stalls
    # past the deadline instead of being rescued by the heal (which closes the link).
    expect=Expect(failover_deadline_s=FAILOVER_DEADLINE_S),
    tags=("network", "keepalive", "one_way_partition"),
)
