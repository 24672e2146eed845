"""Named fault scenarios: one module each, exposing ``SCENARIO``. See docs/writing-scenarios.md.

``ORDER`` fixes the order of the built-in scenarios in reports; modules added by users run after
them, alphabetically.
"""

ORDER = (
    "kill_primary",
    "terminate_primary",
    "pause_primary",
    "partition_primary",
    "latency_spike",
    "flapping_primary",
    "both_down",
    "rolling_restart",
    "reconnect_storm",
    "slow_consumer",
    "balancer_restart",
    "reset_peer",
    "slicer",
    "limit_data",
    "one_way_partition",
    # Default limits like those above, so no restart of the build between them.
    "slow_failover",
    "boundary_max_attempts",
    "boundary_min_interval",
    "boundary_window",
    "boundary_max_connections",
    "boundary_max_size",
    "backend_ends_session",
    "client_protocol_error",
    "backend_protocol_error",
    "ping_flood",
    "split_frames",
    "balancer_drain",
    # A shorter open timeout than those above (one build restart for the three).
    "backend_upgrade_503",
    "backend_upgrade_stall",
    "backend_upgrade_slow",
    "backend_upgrade_500",
    "kill_after_failover",
    "reset_after_frames",
    "frame_close",
    "frame_delay",
    "thundering_herd",
    "mass_failover",
    "frame_drop",
    "frame_duplicate",
)
