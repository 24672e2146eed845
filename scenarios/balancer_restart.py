"""A balancer restart: every client connection drops, clients reconnect, nothing leaks."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step

SCENARIO = Scenario(
    name="balancer_restart",
    description="Restart the balancer itself; clients reconnect and resume, and no socket or table entry leaks.",
    steps=(Step(at_s=1.0, fault=fault("restart", "balancer", graceful=True)),),
    phases=Phases(faults_s=2.0),
    # A graceful restart is a SIGTERM: the contract (section 8) requires every client to be closed
    # with 1001, never dropped (1006).
    expect=Expect(close_codes=(1001,), failover_deadline_s=6.0),
    tags=("process", "balancer"),
)
