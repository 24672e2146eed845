"""A balancer restart: every client connection drops, clients reconnect, nothing leaks."""

from harness.faults import fault
from harness.scenario import Expect, Phases, Scenario, Step

SCENARIO = Scenario(
    name="balancer_restart",
    description="Restart the balancer itself; clients reconnect and resume, and no socket or table entry leaks.",
    steps=(Step(at_s=1.0, fault=fault("restart", "balancer", graceful=True)),),
    phases=Phases(faults_s=2.0),
    expect=Expect(close_codes=(1001, 1006, 1011, 1012), failover_deadline_s=6.0),
    tags=("process", "balancer"),
)
