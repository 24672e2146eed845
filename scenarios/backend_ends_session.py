"""A backend that ends a session on purpose: its close code reaches the client, no failover."""

from harness.scenario import Expect, Phases, Scenario, Workload
from scenarios._limits import PROBED_LIMITS

SCENARIO = Scenario(
    name="backend_ends_session",
    description=(
        "A probe client asks the backend to end its session right after the welcome, once with 1000 "
        "and once with 4321: the build must pass each code to the client and not fail over."
    ),
    workload=Workload(clients=2, probe_clients=1),
    # The three probe scenarios share their limits: the build is not restarted between them.
    limits=PROBED_LIMITS,
    phases=Phases(warmup_s=0.3, deadline_s=6.0, quiesce_s=5.0),
    expect=Expect(failover_deadline_s=4.0),
    probes=("close_codes",),
    tags=("quick", "close_codes"),
)
