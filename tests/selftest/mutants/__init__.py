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

#: Mutants of the reference balancer rather than the minibalancer: each is a launcher ``<name>.py``
#: beside this file that patches one method of the ``balancer`` package, then runs it. For defects
#: only a build with its own frame parser can have (the minibalancer leaves framing to websockets).
REFERENCE_MUTANTS = ("partial_frame_dropped",)


def _cmd(defect: str | None) -> list[str]:
    if defect in REFERENCE_MUTANTS:
        return [sys.executable, str(Path(__file__).with_name(f"{defect}.py")), "{config}"]
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
            "slow_failover",
            "boundary_max_attempts",
            "boundary_min_interval",
            "boundary_window",
            "boundary_max_connections",
            "boundary_max_size",
            "backend_ends_session",
            "balancer_drain",
            "frame_close",
            "client_protocol_error",
            "backend_protocol_error",
            "ping_flood",
            "backend_upgrade_slow",
            "frame_delay",
            "frame_drop",
            "frame_duplicate",
            "split_frames",
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
        ["partition_primary", "pause_primary", "one_way_partition", "idle_timeout"],
        "the primary is blackholed (both ways, or only its replies) or paused: clients stall, no failover "
        "happens; an idle-timeout middlebox on the primary's link forgets the unpinged upstreams: the "
        "same stall, and the forgotten upstreams are never closed (cleanup_complete)",
    ),
    "max_attempts_plus_one": (
        "reconnect_limits",
        ["boundary_max_attempts"],
        "max_attempts + 1 failovers of one connection inside window_s: the last one is allowed",
    ),
    "max_attempts_minus_one": (
        "refusals_justified",
        ["boundary_max_attempts"],
        "the max_attempts-th failover inside window_s: it is refused although allowed",
    ),
    "min_interval_short": (
        "reconnect_limits",
        ["boundary_min_interval"],
        "a loss between min_interval_s - 0.4 s and min_interval_s after the last failover: it is allowed",
    ),
    "min_interval_long": (
        "refusals_justified",
        ["boundary_min_interval"],
        "a loss between min_interval_s and min_interval_s + 0.5 s after the last failover: it is refused",
    ),
    "window_short": (
        "reconnect_limits",
        ["boundary_window"],
        "with max_attempts used up, a loss between window_s / 2 and window_s later: it is allowed",
    ),
    "max_connections_plus_one": (
        "connection_limit",
        ["boundary_max_connections"],
        "a connection attempt with max_connections open: it is admitted",
    ),
    "no_503": (
        "connection_limit",
        ["boundary_max_connections"],
        "a connection attempt with max_connections open: the handshake succeeds, then close 1013",
    ),
    "max_size_plus_one": (
        "size_limit",
        ["boundary_max_size"],
        "a client message of max_size + 1 bytes: it is relayed instead of closed with 1009",
    ),
    "path_dropped_on_failover": (
        "path_forwarded",
        ["kill_primary"],
        "any failover: the new upstream gets `/?query`, not the client's path",
    ),
    "close_code_swallowed": (
        "close_passthrough",
        ["backend_ends_session"],
        "a backend closing with 1000 or 4000-4999: the build fails over, the client ends up with 1013",
    ),
    "queued_dropped": (
        "failover_delivery",
        ["slow_failover"],
        "moves the client sends while the new upstream is being opened: thrown away",
    ),
    "resent_twice": (
        "single_upstream",
        # Two: the defect shows only if a failover comes after the last move was acknowledged.
        # The clients' moves fall in step (they start together), so a SIGKILL now and then lands
        # while every client's last move is unanswered: re-sending it is then what a correct build
        # does too, and that run cannot tell them apart (CI at 3d88205: certified). The SIGTERM is a
        # second failover with timing of its own (it alone caught the defect in 5 runs of 5).
        ["kill_primary", "terminate_primary"],
        "any failover after an acknowledged move: the last message, already delivered to the old backend, "
        "is sent again",
    ),
    "half_open_unnoticed": (
        "clean_failover",
        ["partition_primary", "one_way_partition"],
        "the primary is blackholed (both ways, or only its replies): pings go unanswered and nothing acts "
        "on it, clients stall until the heal; on a slow machine the stall is inconclusive, never a pass",
    ),
    "drain_drops_all": (
        "drain_graceful",
        ["balancer_drain"],
        "SIGHUP while clients play: every live session is dropped at once (1006), not kept for drain_timeout_s",
    ),
    "drain_no_wait": (
        "drain_graceful",
        ["balancer_drain"],
        "SIGHUP while clients play: live sessions are closed with 1001 at once, not after drain_timeout_s",
    ),
    "drain_keeps_accepting": (
        "drain_graceful",
        ["balancer_drain"],
        "SIGHUP, then a new connection: the draining build still accepts it",
    ),
    "upgrade_retried_forever": (
        "upgrade_failover",
        ["backend_upgrade_503", "backend_upgrade_stall", "backend_upgrade_500"],
        "a session opening an upstream to a backend that answers its upgrade with 503 (asked again "
        "every 0.1 s until it agrees) or never answers (waited on: no open timeout)",
    ),
    "backend_close_passed": (
        "clean_failover",
        ["frame_close", "terminate_primary"],
        "a backend's close frame with a code that does not end the session (1001, 1011, 1012): "
        "the client is closed with it instead of failing over",
    ),
    "herd_cold_start": (
        "herd_recovered",
        ["thundering_herd"],
        "clients arriving within 1.5 s of a (re)start, as a herd does after a balancer restart: admitted, "
        "then dropped without a close frame (1006) instead of refused with 503",
    ),
    "protocol_error_bans_peer": (
        "others_unaffected",
        ["client_protocol_error"],
        "one client's frame with a reserved opcode: that client gets 1002, and every other client from "
        "its address (all of them, behind the lb link) is closed with 1008",
    ),
    "upstream_error_bad_gateway": (
        "clean_failover",
        ["backend_protocol_error"],
        "a backend's frame of invalid UTF-8 (or a reserved opcode): the client is closed with 1014 "
        "instead of failing over",
    ),
    "ping_flood_guard": (
        "clean_failover",
        ["ping_flood"],
        "more than 50 pings in 1 s from a client: its connection is failed with 1008 instead of the "
        "pings being answered",
    ),
    "open_budget_short": (
        "refusals_justified",
        ["backend_upgrade_slow"],
        "a new session whose first backend answers the upgrade 0.8 s late (open_timeout_s 1.5 s): "
        "given up after 0.5 s, no other backend tried, the client refused with 1013",
    ),
    "reply_deadline": (
        "clean_failover",
        ["frame_delay"],
        "one backend reply held 200 ms: more than 150 ms after the move it answers, the session is closed with 1011",
    ),
    "repeated_ack_crashes": (
        "clean_failover",
        ["frame_duplicate"],
        "a move or its ack repeated on a link (frame_duplicate): the second ack of one move crashes the "
        "session's relay, and the client is closed with 1011 instead of seeing one more reply",
    ),
    "partial_frame_dropped": (
        "clean_failover",
        ["split_frames"],
        "an uncompressed client's frame split across TCP segments (split_frames): the reference's frame "
        "splitter drops the part a read ends with, parses the next read from mid-frame, and the client "
        "is closed with 1002",
    ),
    "resend_filtered": (
        "clean_failover",
        ["frame_drop"],
        "a client re-sends moves after a frame of its was lost on the way (frame_drop): the build takes "
        "the re-sent move it had relayed once already for a duplicate and drops it, the backend keeps "
        "answering with a gap, and the client's game never moves on",
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

#: The correct minibalancer without SIGHUP drain, none declared in /status: drain_graceful is "not checked".
NO_DRAIN_CMD = " ".join(shlex.quote(a) for a in [sys.executable, MINIBALANCER, "--no-drain"]) + " {config}"

#: The correct minibalancer with no /status and no event lines: certified black-box.
BLACK_BOX_CMD = " ".join(shlex.quote(a) for a in [sys.executable, MINIBALANCER, "--black-box"]) + " {config}"
