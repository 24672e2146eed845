"""What the keepalive scenarios share: a fault only keepalive can notice, held until every client
has failed over, and long enough that a build which never notices cannot be excused."""

from harness.analysis import inexcusable_stall_s
from harness.scenario import Phases

#: When the silent fault lands, into the fault phase.
FAULT_AT_S = 0.5


def held_until_failover(failover_deadline_s: float) -> Phases:
    """The phase ends once every client is served by the other backend, which a correct build
    does within about 2 s. A build that never fails over stalls for the whole phase: past the
    deadline at the largest slowness stretch, so that even on a loaded machine its stall is a
    violation, not inconclusive (at 6.5 s, six certify lanes on 2 cores measured x2.4-3.9 and set
    the stall aside)."""
    return Phases(faults_s=FAULT_AT_S + inexcusable_stall_s(failover_deadline_s) + 1.0, faults_end_on_failover=True)
