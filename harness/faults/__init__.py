"""The fault vocabulary: :class:`Fault` data and the :class:`FaultKind` registry.

A fault is (kind, target, params), pure data. Everything known about a kind (targets, parameter
schema, apply and heal, parameter strategy, disruptiveness, detection time) is one object in
:mod:`harness.faults.kinds`, registered in :data:`KINDS`.
"""

from harness.faults import kinds as _kinds  # noqa: F401  (registers the vocabulary)
from harness.faults.model import (
    CLOSE_TIMEOUT_S,
    KINDS,
    LINK_TARGETS,
    PROCESS_TARGETS,
    STREAM_DIRECTIONS,
    STREAMS,
    Applied,
    Fault,
    FaultError,
    FaultKind,
    Param,
    fault,
    keepalive_detect_s,
    kind_of,
)

PROCESS_KINDS: tuple[str, ...] = tuple(k for k, v in KINDS.items() if v.family == "process")
LINK_KINDS: tuple[str, ...] = tuple(k for k, v in KINDS.items() if v.family == "link")

__all__ = [
    "CLOSE_TIMEOUT_S",
    "KINDS",
    "LINK_KINDS",
    "LINK_TARGETS",
    "PROCESS_KINDS",
    "PROCESS_TARGETS",
    "STREAMS",
    "STREAM_DIRECTIONS",
    "Applied",
    "Fault",
    "FaultError",
    "FaultKind",
    "Param",
    "fault",
    "keepalive_detect_s",
    "kind_of",
]
