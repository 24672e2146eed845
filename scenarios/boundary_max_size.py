"""max_size at its edge: a message of exactly max_size bytes passes, one byte more gets 1009."""

from harness.scenario import Expect, Phases, Scenario, Workload
from scenarios._limits import PROBED_LIMITS

SCENARIO = Scenario(
    name="boundary_max_size",
    description=(
        "max_size 4096 bytes: a probe client sends a 4096-byte message (it must be relayed: the "
        "backend's reply comes back) and then a 4097-byte one (the build must close with 1009)."
    ),
    workload=Workload(clients=2, probe_clients=1),
    # The three probe scenarios share their limits: the build is not restarted between them.
    limits=PROBED_LIMITS,
    phases=Phases(warmup_s=0.3, deadline_s=6.0, quiesce_s=5.0),
    expect=Expect(failover_deadline_s=4.0),
    probes=("max_size",),
    tags=("quick", "limits", "boundary"),
)
