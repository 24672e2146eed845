"""max_connections at its edge: that many clients are admitted, the next one gets HTTP 503."""

from harness.scenario import Expect, Phases, Scenario, Workload
from scenarios._limits import PROBED_LIMITS

SCENARIO = Scenario(
    name="boundary_max_connections",
    description=(
        "max_connections 5 with 2 playing clients: a probe opens and holds connections one at a time; "
        "the 3 that bring the count to 5 must be admitted, the next one refused with HTTP 503."
    ),
    workload=Workload(clients=2, probe_clients=1),
    # The three probe scenarios share their limits: the build is not restarted between them.
    limits=PROBED_LIMITS,
    phases=Phases(warmup_s=0.3, deadline_s=6.0, quiesce_s=5.0),
    expect=Expect(failover_deadline_s=4.0),
    probes=("max_connections",),
    tags=("quick", "limits", "boundary"),
)
