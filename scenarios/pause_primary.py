"""Pause the primary (SIGSTOP): a hung process keeps its sockets open, only keepalive can tell."""

from harness.faults import fault
from harness.scenario import Expect, Scenario, Step
from scenarios._keepalive import FAULT_AT_S, held_until_failover

FAILOVER_DEADLINE_S = 4.5

SCENARIO = Scenario(
    name="pause_primary",
    description="SIGSTOP the primary; keepalive must notice the hung upstream and fail over.",
    steps=(Step(at_s=FAULT_AT_S, fault=fault("pause", "primary")),),
    phases=held_until_failover(FAILOVER_DEADLINE_S),
    # Keepalive (0.5 + 0.5 s, 1 s close timeout) notices in about 2 s; the fault outlasts the
    # deadline so a build without keepalive stalls past it instead of being rescued by the heal.
    expect=Expect(failover_deadline_s=FAILOVER_DEADLINE_S),
    tags=("quick", "process", "keepalive", "partition_primary"),
)
