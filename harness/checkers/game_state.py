"""The state an acknowledged sequence number must have produced: ``harness.game`` defines the game,
so it is the one source of the rule; this module only reads states off the records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness import game

from .base import integer

State = dict[str, int]
RULE_SOURCE = "harness.game.expected_state"


def normalise_state(obj: Any) -> State | None:
    """A state as {seq, x, y} ints, from a JSON dict or from an object with those attributes
    (harness.game returns a dataclass); None when it is not a readable state."""
    if isinstance(obj, Mapping):
        values = [integer(obj.get(k)) for k in ("seq", "x", "y")]
    elif all(hasattr(obj, k) for k in ("seq", "x", "y")):
        values = [integer(getattr(obj, k)) for k in ("seq", "x", "y")]
    else:
        return None
    seq, x, y = values
    if seq is None or x is None or y is None:
        return None
    return {"seq": seq, "x": x, "y": y}


def expected_state(seq: int) -> State | None:
    try:
        return normalise_state(game.expected_state(seq))
    except ValueError:  # a negative seq in a malformed record: reported by the caller
        return None
