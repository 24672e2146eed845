"""What the upgrade-fault scenarios share: the build's open timeout, and the blip that makes every
client open a new session while the primary's upgrades are faulted (a live session never meets an
upgrade fault; only a new handshake does)."""

from harness.faults import fault
from harness.scenario import Limits, Step

#: Short, so a stalled handshake is given up well inside the run, and the same for the three
#: scenarios, so the build is configured once for all of them.
UPGRADE_LIMITS = Limits(open_timeout_s=1.5)
#: The lb link is down 0.3 s, from 0.5 s after the upgrade fault began: every client is dropped
#: and reconnects, and its new session must open an upstream while the fault is in place.
CLIENTS_RECONNECT = Step(at_s=0.8, fault=fault("down", "lb"), duration_s=0.3)
