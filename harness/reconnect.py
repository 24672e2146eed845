"""How a game client waits before it reconnects: the workload's reconnect policy (pure).

Two policies, chosen per scenario (``Workload.reconnect``):

- ``immediate``: no wait at all, after a drop or a failed attempt. The worst thundering herd: every
  client comes back at the same instant, and keeps hammering a refusing endpoint.
- ``backoff``: exponential backoff, ``base * 2**k`` capped at ``cap`` for the k-th failure in a row,
  reset once a connection is welcomed. With ``jitter`` j in [0, 1], each wait is drawn uniformly
  from ``[(1 - j) * d, d]`` (j = 1 is "full jitter"), from a generator seeded by the scenario's
  ``reconnect_seed`` and the client id, so a run replays the same waits.

No clock and no I/O here: the client asks for the next delay and does the waiting itself.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

IMMEDIATE = "immediate"
BACKOFF = "backoff"
POLICIES = (IMMEDIATE, BACKOFF)


class PolicyError(ValueError):
    """A reconnect policy that cannot be used; ``field`` is the one at fault, the message says why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class ReconnectPolicy:
    kind: str = BACKOFF
    base_s: float = 0.1
    cap_s: float = 1.0
    jitter: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise PolicyError("kind", f"unknown reconnect policy {self.kind!r} (known: {', '.join(POLICIES)})")
        for name in ("base_s", "cap_s", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise PolicyError(name, f"expected a number >= 0, got {value!r}")
        if self.kind == BACKOFF and self.base_s <= 0:
            raise PolicyError("base_s", f"backoff needs a base > 0, got {self.base_s!r}")
        if self.cap_s < self.base_s:
            raise PolicyError("cap_s", f"must be >= the base ({self.base_s:g}), got {self.cap_s!r}")
        if self.jitter > 1:
            raise PolicyError("jitter", f"a fraction of the delay in [0, 1], got {self.jitter!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise PolicyError("seed", f"expected an integer, got {self.seed!r}")

    def rng_for(self, client_id: str) -> random.Random:
        """The client's own jitter stream: the same seed and id draw the same waits in every run."""
        return random.Random(f"{self.seed}:{client_id}")

    def delay_s(self, failures: int, rng: random.Random) -> float:
        """The wait before the next attempt, after ``failures`` (>= 1) attempts in a row that ended
        without a welcome (the drop of a welcomed connection counts as the first)."""
        if self.kind == IMMEDIATE:
            return 0.0
        ceiling = min(self.cap_s, self.base_s * 2.0 ** max(0, failures - 1))
        if self.jitter <= 0:
            return ceiling
        return rng.uniform((1.0 - self.jitter) * ceiling, ceiling)

    def argv(self) -> list[str]:
        """The swarm's command-line flags for this policy."""
        return [
            "--reconnect", self.kind,
            "--backoff-base", repr(self.base_s),
            "--backoff-cap", repr(self.cap_s),
            "--backoff-jitter", repr(self.jitter),
            "--reconnect-seed", str(self.seed),
        ]  # fmt: skip
