"""JSON decoding and encoding with the observable behaviour of Go's ``encoding/json``.

Toxiproxy clients were written against a Go server, so the edge cases they may hit
(trailing data after the body, case-insensitive field names, ``null`` leaving a field
unchanged, integers that must not have a fraction, float32 toxicity) follow Go's rules
here rather than Python's. Error texts imitate Go's so that clients which show them to
users read the same thing.
"""

from __future__ import annotations

import json
import math
import re
import struct
from decimal import Decimal
from typing import Any, Literal

FieldType = Literal["string", "bool", "int64", "int", "float32", "raw"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_FLOAT32_MAX = 3.4028234663852886e38


class DecodeError(Exception):
    """The request body cannot be decoded; ``str(exc)`` is the Go-style reason."""


class _JsonFloat(float):
    """A float that remembers its JSON literal, so errors can quote it as Go does."""

    literal: str


class _JsonInt(int):
    literal: str


def _parse_float(text: str) -> _JsonFloat:
    value = _JsonFloat(text)
    value.literal = text
    return value


def _parse_int(text: str) -> _JsonInt:
    value = _JsonInt(text)
    value.literal = text
    return value


class _BadConstant(ValueError):
    pass


def _parse_constant(name: str) -> Any:
    # Python accepts NaN and Infinity; Go (and the JSON spec) do not.
    raise _BadConstant(name)


_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant)
_WS = " \t\r\n"


def _quote_char(ch: str) -> str:
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    if ch.isprintable():
        return f"'{ch}'"
    return "'" + json.dumps(ch)[1:-1] + "'"


def decode(body: bytes) -> Any:
    """Decode the first JSON value of ``body`` like ``json.NewDecoder(r).Decode``.

    Trailing bytes after the first value are ignored, exactly as Go's decoder does.
    """
    text = body.decode("utf-8", "replace")
    start = 0
    while start < len(text) and text[start] in _WS:
        start += 1
    if start == len(text):
        raise DecodeError("EOF")
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except _BadConstant as exc:
        first = str(exc)[0]
        if first == "-":
            raise DecodeError("invalid character 'I' in numeric literal") from None
        raise DecodeError(f"invalid character {_quote_char(first)} looking for beginning of value") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(_go_syntax_error(text, exc)) from None
    except RecursionError:
        raise DecodeError("exceeded max depth") from None
    return value


def _go_syntax_error(text: str, exc: json.JSONDecodeError) -> str:
    pos = exc.pos
    rest = text[pos:].rstrip(_WS)
    if not rest:
        return "unexpected EOF"
    ch = _quote_char(text[pos])
    msg = exc.msg
    if msg.startswith("Expecting property name"):
        return f"invalid character {ch} looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {ch} after object key"
    if msg.startswith("Expecting ','"):
        return f"invalid character {ch} after object key:value pair"
    if msg.startswith("Invalid control character"):
        return f"invalid character {ch} in string literal"
    if msg.startswith("Invalid \\escape") or msg.startswith("Invalid \\u"):
        return f"invalid character {ch} in string escape code"
    if msg.startswith("Unterminated string"):
        return "unexpected EOF"
    return f"invalid character {ch} looking for beginning of value"


def kind(value: Any) -> str:
    """Go's name for a JSON value's kind in ``cannot unmarshal X`` messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        literal = getattr(value, "literal", None) or repr(value)
        return f"number {literal}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _kind_short(value: Any) -> str:
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else kind(value)


def convert(value: Any, ftype: FieldType, where: str) -> Any:
    """Convert one decoded JSON value into a Go field type, or raise Go's type error.

    ``where`` names the destination as Go does, e.g. ``Go struct field Proxy.name``.
    """
    if ftype == "raw":
        return value
    if ftype == "string":
        if isinstance(value, str):
            return _clean_str(value)
        raise DecodeError(f"json: cannot unmarshal {_kind_short(value)} into {where} of type string")
    if ftype == "bool":
        if isinstance(value, bool):
            return value
        raise DecodeError(f"json: cannot unmarshal {_kind_short(value)} into {where} of type bool")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"json: cannot unmarshal {_kind_short(value)} into {where} of type {ftype}")
    if ftype == "float32":
        number = float(value) if not isinstance(value, int) or abs(value) < 2**1000 else math.inf
        if math.isinf(number) or abs(number) > _FLOAT32_MAX:
            raise DecodeError(f"json: cannot unmarshal {kind(value)} into {where} of type float32")
        return float32(number)
    if isinstance(value, float) or not _INT64_MIN <= value <= _INT64_MAX:
        raise DecodeError(f"json: cannot unmarshal {kind(value)} into {where} of type {ftype}")
    return int(value)


_SURROGATES = re.compile("[\ud800-\udfff]")


def _clean_str(value: str) -> str:
    # Go replaces lone surrogates from \\u escapes with U+FFFD; Python keeps them and
    # would then fail to encode the reply.
    return _SURROGATES.sub("\ufffd", value)


def decode_struct(value: Any, fields: dict[str, FieldType], type_name: str, prefix: str = "") -> dict[str, Any]:
    """Decode a JSON object into the named fields of a Go struct.

    Field names match exactly or, failing that, case-insensitively; unknown keys are
    ignored and ``null`` leaves a field unset, all as Go does. Only present fields are
    returned, so callers can merge them over defaults.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(f"json: cannot unmarshal {_kind_short(value)} into Go value of type {type_name}")
    folded = {name.casefold(): name for name in fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = key if key in fields else folded.get(key.casefold())
        if name is None or item is None:
            continue
        short = type_name.rsplit(".", 1)[-1]
        out[name] = convert(item, fields[name], f"Go struct field {short}.{prefix}{name}")
    return out


def float32(value: float) -> float:
    """Round to the nearest float32, as storing into a Go ``float32`` does."""
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def format_float32(value: float) -> str:
    """Format a float32 the way Go's ``encoding/json`` does (shortest round trip)."""
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits = repr(value)
    for precision in range(1, 10):
        candidate = f"{value:.{precision}g}"
        if float32(float(candidate)) == value:
            digits = candidate
            break
    magnitude = abs(value)
    if magnitude < 1e-6 or magnitude >= 1e21:
        mantissa, _, exponent = f"{Decimal(digits):e}".partition("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        exp = int(exponent)
        return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return format(Decimal(digits), "f")


class Float32(float):
    """Marker type: encode as a Go float32."""


def _encode_value(value: Any, out: list[str]) -> None:
    if isinstance(value, Float32):
        out.append(format_float32(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key))
            out.append(":")
            _encode_value(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode_value(item, out)
        out.append("]")
    elif isinstance(value, str):
        out.append(_encode_str(value))
    else:
        out.append(json.dumps(value))


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def _encode_str(value: str) -> str:
    text = json.dumps(_clean_str(value), ensure_ascii=False)
    # Go's encoder HTML-escapes these characters; copying it keeps replies byte-identical.
    return _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], text)


def encode(value: Any) -> bytes:
    """Encode like ``json.Marshal``: compact, keys in the given order, Go escaping."""
    out: list[str] = []
    _encode_value(value, out)
    return "".join(out).encode("utf-8")
