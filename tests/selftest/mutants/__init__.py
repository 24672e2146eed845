"""Mutant balancer builds for the harness self-test (issue 5); see README.md.

``MUTANTS[name]`` holds:

- ``cmd``: the argv template of the build; ``"{config}"`` is replaced by the config path;
- ``cmd_str``: the same as one shell string, for ``--balancer-cmd``;
- ``expected_invariant``: the invariant the harness must report violated (``None`` for the
  correct control build, which must be certified);
- ``scenarios``: the faults that expose the defect (hints for picking fast scenarios);
- ``trigger``: what exactly has to happen for the defect to become visible.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

MINIBALANCER = str(Path(__file__).with_name("minibalancer.py"))


def _cmd(defect: str | None) -> list[str]:
    return [sys.executable, MINIBALANCER, *(["--defect", defect] if defect else []), "{config}"]


_LOSS_TWICE = (
    "one client connection loses its upstream twice (or more than max_attempts times) faster "
    "than min_interval_s: e.g. kill primary, restart it, kill secondary within min_interval_s"
)

_SPEC: dict[str, tuple[str | None, list[str], str]] = {
    "control": (
        None,
        [
            "kill_primary",
            "terminate_primary",
            "pause_primary",
            "partition_primary",
            "flapping_primary",
            "rolling_restart",
            "both_down",
        ],
        "none: the correct build, it must be certified",
    ),
    "second_reader": (
        "no_concurrent_recv",
        ["kill_primary"],
        "any failover while the client is idle (its reader is inside recv())",
    ),
    "async_for_shared": (
        "no_concurrent_recv",
        ["kill_primary"],
        "any failover while the client is idle (its reader is inside recv())",
    ),
    "no_rate_limit": ("reconnect_limits", ["rolling_restart", "flapping_primary"], _LOSS_TWICE),
    "no_min_interval": ("reconnect_limits", ["rolling_restart", "flapping_primary"], _LOSS_TWICE),
    "leaky_tables": (
        "cleanup_complete",
        ["kill_primary"],
        "any session ending; /status tables stay non-zero after clients leave",
    ),
    "upstream_left_open": (
        "cleanup_complete",
        ["kill_primary"],
        "any client leaving; its upstream stays open on the backend",
    ),
    "two_upstreams": (
        "single_upstream",
        ["pause_primary", "partition_primary"],
        "the primary stops answering pings (pause or blackhole) and later resumes: "
        "the kept old upstream receives duplicated moves",
    ),
    "no_keepalive": (
        "clean_failover",
        ["partition_primary", "pause_primary"],
        "the primary is blackholed or paused: clients stall, no failover happens",
    ),
}

MUTANTS: dict[str, dict[str, Any]] = {
    name: {
        "cmd": _cmd(None if name == "control" else name),
        "cmd_str": " ".join(
            a if a == "{config}" else shlex.quote(a) for a in _cmd(None if name == "control" else name)
        ),
        "expected_invariant": invariant,
        "scenarios": scenarios,
        "trigger": trigger,
    }
    for name, (invariant, scenarios, trigger) in _SPEC.items()
}

#: The correct minibalancer with no /status and no event lines: certified black-box.
BLACK_BOX_CMD = " ".join(shlex.quote(a) for a in [sys.executable, MINIBALANCER, "--black-box"]) + " {config}"
