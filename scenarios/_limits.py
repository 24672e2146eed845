"""Limits shared by the probe scenarios, so that the build is configured once for all of them."""

from harness.scenario import Limits

#: 2 playing clients, a probe client after the heal and the probe's own connections fit under 5.
PROBED_LIMITS = Limits(max_connections=5, max_size=4096)
