"""A SIGHUP drain of the balancer: live sessions go on for the drain timeout, new ones are refused,
then the rest are closed with 1001 or 1012, the process exits and a new one takes over."""

from harness.faults import fault
from harness.scenario import Expect, Limits, Phases, Scenario, Step

SCENARIO = Scenario(
    name="balancer_drain",
    description="SIGHUP the balancer: it drains (no new sessions, live ones go on for drain_timeout_s, then "
    "1001/1012) and exits; a new process starts on the same port and every client resumes there.",
    steps=(Step(at_s=1.0, fault=fault("drain", "balancer")),),
    phases=Phases(faults_s=2.0),
    # The harness always sends drain_timeout_s; spelled out because drain_graceful judges against it.
    limits=Limits(drain_timeout_s=2.0),
    # Contract section 8a: a drain ends live sessions with 1001 or 1012, never drops them (1006).
    expect=Expect(close_codes=(1001, 1012), failover_deadline_s=6.0),
    tags=("process", "balancer"),
)
