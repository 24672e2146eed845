"""Toxics as the API sees them: the schema, its validation and its JSON shape.

A :class:`ToxicSpec` is what ``POST /proxies/{p}/toxics`` creates and ``GET`` shows; the
data path (``toxics``) turns one into a stage per link. Decoding follows Go's
``ToxicWrapper`` and each toxic's struct, error texts and all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from . import gojson
from .errors import ApiError, bad_body
from .extensions import NO_EXTRAS, ExtensionError, ToxicExtras, ToxicState, decode_extras

UPSTREAM = 0
DOWNSTREAM = 1

# Attribute names in the order Go's structs declare (and marshal) them.
TOXIC_ATTRIBUTES: dict[str, dict[str, gojson.FieldType]] = {
    "latency": {"latency": "int64", "jitter": "int64"},
    "bandwidth": {"rate": "int64"},
    "slow_close": {"delay": "int64"},
    "timeout": {"timeout": "int64"},
    "reset_peer": {"timeout": "int64"},
    "slicer": {"average_size": "int", "size_variation": "int", "delay": "int"},
    "limit_data": {"bytes": "int64"},
    "noop": {},
    # Extension (docs/toxiproxy-extensions.md): silently blackhole a connection idle that long.
    "idle_timeout": {"timeout": "int64"},
    # Extensions (harness.toxiproxy.ws_toxics): frame-aware toxics for WebSocket links.
    "ws_drop": {"nth": "int"},
    "ws_duplicate": {"nth": "int"},
    "ws_delay": {"nth": "int", "delay": "int"},
    "ws_split": {"nth": "int", "segments": "int", "delay": "int"},
    "ws_ping": {"nth": "int", "count": "int", "size": "int"},
    "ws_protocol_error": {"nth": "int", "kind": "int", "size": "int", "connections": "int"},
    "ws_close": {"nth": "int", "code": "int", "connections": "int"},
    # Extension (harness.toxiproxy.ws_toxics.UpgradeStage): a backend refusing or stalling upgrades.
    "ws_upgrade": {"mode": "int", "status": "int", "delay": "int"},
}

# Attributes whose default is not Go's zero value (only extensions have any).
TOXIC_DEFAULTS: dict[str, dict[str, int]] = {
    "ws_drop": {"nth": 1},
    "ws_duplicate": {"nth": 1},
    "ws_delay": {"nth": 1, "delay": 1000},
    "ws_split": {"nth": 1, "segments": 8},
    "ws_ping": {"nth": 1, "count": 1},
    "ws_protocol_error": {"nth": 1, "size": 1024 * 1024 + 1},
    "ws_close": {"nth": 1, "code": 1000},
    "ws_upgrade": {"mode": 0, "status": 503, "delay": 1000},
}

# Inclusive ranges of the frame-aware toxics' attributes; see ws_toxics for their meaning.
WS_ATTRIBUTE_RANGES: dict[str, tuple[int, int]] = {
    "nth": (0, 2**31 - 1),
    "delay": (0, 3_600_000),
    "segments": (1, 65536),
    "count": (1, 100_000),
    "size": (0, 64 * 1024 * 1024),
    "kind": (0, 2),
    "code": (1000, 4999),
    "connections": (0, 2**31 - 1),
    "mode": (0, 2),
    # An answer of the proxy's own: never 1xx (101 would be an upgrade), always a full response.
    "status": (200, 599),
}

# Toxic types of our own (docs/toxiproxy-extensions.md); a stock 2.x server knows none of them.
EXTENSION_TYPES = frozenset({"idle_timeout", *(t for t in TOXIC_ATTRIBUTES if t.startswith("ws_"))})

# Go type names, used in decode error messages.
TOXIC_GO_TYPES = {
    "latency": "toxics.LatencyToxic",
    "bandwidth": "toxics.BandwidthToxic",
    "slow_close": "toxics.SlowCloseToxic",
    "timeout": "toxics.TimeoutToxic",
    "reset_peer": "toxics.ResetToxic",
    "slicer": "toxics.SlicerToxic",
    "limit_data": "toxics.LimitDataToxic",
    "noop": "toxics.NoopToxic",
    "idle_timeout": "toxics.IdleTimeoutToxic",
    "ws_drop": "toxics.WsDropToxic",
    "ws_duplicate": "toxics.WsDuplicateToxic",
    "ws_delay": "toxics.WsDelayToxic",
    "ws_split": "toxics.WsSplitToxic",
    "ws_ping": "toxics.WsPingToxic",
    "ws_protocol_error": "toxics.WsProtocolErrorToxic",
    "ws_close": "toxics.WsCloseToxic",
    "ws_upgrade": "toxics.WsUpgradeToxic",
}

_WRAPPER_FIELDS: dict[str, gojson.FieldType] = {
    "attributes": "raw",
    "name": "string",
    "type": "string",
    "stream": "string",
    "toxicity": "float32",
}
_UPDATE_FIELDS: dict[str, gojson.FieldType] = {"attributes": "raw", "toxicity": "float32"}
_UPDATE_TYPE = "struct { Attributes interface {}; Toxicity float32 }"


def parse_direction(stream: str) -> int | None:
    lowered = stream.lower()
    if lowered == "upstream":
        return UPSTREAM
    if lowered == "downstream":
        return DOWNSTREAM
    return None


def validate_attributes(toxic_type: str, attrs: dict[str, int]) -> str | None:
    """Reject values for which Toxiproxy would panic or loop forever; None if fine.

    Go accepts these and then crashes the link (negative slice bounds) or recurses
    without end (slicer with average_size 0), so a 400 is the only safe answer.
    """
    if toxic_type.startswith("ws_"):
        return _validate_ws(toxic_type, attrs)
    if toxic_type == "bandwidth" and attrs["rate"] < 0:
        return f"bandwidth rate must not be negative, got {attrs['rate']}"
    if toxic_type == "slicer":
        average, variation = attrs["average_size"], attrs["size_variation"]
        if average <= 0:
            return f"slicer average_size must be positive, got {average}"
        if variation < 0:
            return f"slicer size_variation must not be negative, got {variation}"
        if variation >= average:
            return (
                "slicer size_variation must be smaller than average_size,"
                f" got size_variation {variation} and average_size {average}"
            )
    if toxic_type == "idle_timeout" and attrs["timeout"] <= 0:
        return f"idle_timeout timeout must be positive, got {attrs['timeout']}"
    return None


def _validate_ws(toxic_type: str, attrs: dict[str, int]) -> str | None:
    for name, value in attrs.items():
        low, high = WS_ATTRIBUTE_RANGES[name]
        if not low <= value <= high:
            return f"{toxic_type} {name} must be between {low} and {high}, got {value}"
    if toxic_type == "ws_ping" and attrs["size"] > 125:
        return f"ws_ping size must be at most 125 (a control frame's payload), got {attrs['size']}"
    if toxic_type == "ws_close" and not sendable_close_code(attrs["code"]):
        return f"ws_close code {attrs['code']} may not be sent in a close frame (RFC 6455 section 7.4)"
    return None


# Close codes an endpoint may send below 3000 (1005, 1006 and 1015 are never on the wire).
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def sendable_close_code(code: int) -> bool:
    """Whether an endpoint may put ``code`` in a close frame (RFC 6455 section 7.4): what ``ws_close`` sends."""
    return code in _SENDABLE_CLOSE_CODES or 3000 <= code <= 4999


@dataclass(frozen=True)
class ToxicSpec:
    """A toxic as the API sees it; updates build a new one."""

    name: str
    type: str
    stream: str
    direction: int
    toxicity: float
    attributes: dict[str, int] = field(default_factory=dict)
    # Extensions: absent (NO_EXTRAS) unless the create body asked; updates keep both.
    extras: ToxicExtras = NO_EXTRAS
    state: ToxicState = field(default_factory=ToxicState, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": gojson.Float32(self.toxicity),
            **self.extras.to_json(),
        }


def decode_fields(value: Any, fields: dict[str, gojson.FieldType], type_name: str) -> dict[str, Any]:
    """Go's json.Unmarshal of ``value`` into a struct; a mismatch is a 400."""
    try:
        return gojson.decode_struct(value, fields, type_name)
    except gojson.DecodeError as exc:
        raise bad_body(exc) from None


def _decode_attributes(toxic_type: str, raw: Any) -> dict[str, int]:
    return decode_fields(raw, TOXIC_ATTRIBUTES[toxic_type], TOXIC_GO_TYPES[toxic_type])


def _validated(toxic_type: str, attributes: dict[str, int]) -> dict[str, int]:
    problem = validate_attributes(toxic_type, attributes)
    if problem is not None:
        raise bad_body(problem)
    return attributes


def new_toxic(body: Any, taken: Callable[[str], bool], extensions: bool = True) -> ToxicSpec:
    """The toxic a create body describes, checked in Go's order; ``taken`` names in use."""
    wrapper = decode_fields(body, _WRAPPER_FIELDS, "toxics.ToxicWrapper")
    raw_attributes = wrapper.get("attributes")
    if raw_attributes is not None and not isinstance(raw_attributes, dict):
        # Go first decodes attributes into a NoopToxic, which needs an object.
        raise bad_body(
            f"json: cannot unmarshal {gojson.kind(raw_attributes).split()[0]}"
            " into Go struct field ToxicWrapper.attributes of type toxics.NoopToxic"
        )
    stream = wrapper.get("stream", "downstream")
    direction = parse_direction(stream)
    if direction is None:
        raise ApiError(400, "stream was invalid, can be either upstream or downstream")
    toxic_type = wrapper.get("type", "")
    name = wrapper.get("name") or f"{toxic_type}_{stream}"
    if toxic_type not in TOXIC_ATTRIBUTES or (not extensions and toxic_type in EXTENSION_TYPES):
        raise ApiError(400, "invalid toxic type")
    if toxic_type == "ws_upgrade" and direction != UPSTREAM:
        raise ApiError(400, "ws_upgrade acts on the upgrade request: its stream must be upstream")
    if taken(name):
        raise ApiError(409, "toxic already exists")
    attributes = {key: 0 for key in TOXIC_ATTRIBUTES[toxic_type]}
    attributes.update(TOXIC_DEFAULTS.get(toxic_type, {}))
    attributes.update(_decode_attributes(toxic_type, raw_attributes))
    attributes = _validated(toxic_type, attributes)
    try:
        extras = decode_extras(body) if extensions else NO_EXTRAS  # after every 2.x check, so 2.x bodies fail as in Go
    except ExtensionError as exc:
        raise bad_body(exc) from None
    return ToxicSpec(
        name=name,
        type=toxic_type,
        stream=stream,
        direction=direction,
        toxicity=wrapper.get("toxicity", 1.0),
        attributes=attributes,
        extras=extras,
    )


def updated_toxic(spec: ToxicSpec, body: Any) -> ToxicSpec:
    """``spec`` with an update body merged in: missing attributes and toxicity are kept."""
    fields = decode_fields(body, _UPDATE_FIELDS, _UPDATE_TYPE)
    attributes = dict(spec.attributes)
    attributes.update(_decode_attributes(spec.type, fields.get("attributes")))
    return replace(
        spec,
        toxicity=fields.get("toxicity", spec.toxicity),
        attributes=_validated(spec.type, attributes),
    )
