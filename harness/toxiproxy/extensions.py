"""wschaos extensions to the Toxiproxy 2.x API: optional toxic fields, aiming, per-toxic evidence.

Everything here is opt-in. A toxic created without the extension fields decodes, behaves and
renders exactly as in Toxiproxy 2.x; the official clients never send them, so they never see them.
The wire format is documented in docs/toxiproxy-extensions.md.

- ``duration_ms``: the proxy removes the toxic itself that long after creating it.
- ``aim``: the toxic acts only on some connections: the clients named, a seeded fraction of
  client ids, or the first N connections it meets. A connection's client id is the ``client``
  query parameter of the first request line on its upstream stream (a WebSocket upgrade).
- ``trigger``: the toxic acts on a connection only once an event happened on it; offered:
  ``{"after": "upgrade"}``, once the upstream's ``101`` response head has crossed the connection,
  and ``{"after": "frames", "frames": N}``, once the connection has upgraded and N WebSocket data
  frames have crossed it in the toxic's direction since the toxic met it.
- :class:`ToxicState`: what one toxic did (connections touched, bytes delayed, dropped, cut),
  shared by every version of the toxic as updates replace its spec.

Pure: no sockets, no clock. The harness imports :class:`Aim` from here too, so the proxy and the
scenario model agree on which client a seeded fraction picks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: URL prefix of every extension endpoint; Toxiproxy has no route under it (it answers 404).
PREFIX = "wschaos"
#: What this server offers, as ``GET /wschaos/capabilities`` lists it.
CAPABILITIES = ("aim", "duration_ms", "evidence", "idle_timeout", "trigger", "ws_upgrade")
#: The toxic body fields that are extensions, in the order replies show them.
EXTENSION_FIELDS = ("duration_ms", "aim", "trigger")
#: Longest request line the proxy looks at for a client id; longer lines leave it unknown.
REQUEST_LINE_LIMIT = 8192
#: Longest response head the proxy looks at for a ``101``; a longer one is not an upgrade.
RESPONSE_HEAD_LIMIT = 16384
#: The events a ``trigger`` may wait for.
TRIGGER_EVENTS = ("upgrade", "frames")


class ExtensionError(ValueError):
    """An extension field that cannot be used; the message names the field."""


def _integer(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExtensionError(f"{where}: expected an integer, got {value!r}")
    if value < minimum:
        raise ExtensionError(f"{where}: must be >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class Aim:
    """Which connections a toxic acts on; exactly one of ``clients``, ``fraction``, ``first``."""

    clients: tuple[str, ...] | None = None
    fraction: float | None = None
    seed: int = 0
    first: int | None = None

    def needs_client_id(self) -> bool:
        return self.first is None

    def matches(self, client_id: str | None) -> bool:
        """Whether a connection of ``client_id`` is aimed at (``first`` is decided per toxic)."""
        if client_id is None:
            return False
        if self.clients is not None:
            return client_id in self.clients
        if self.fraction is not None:
            return fraction_draw(self.seed, client_id) < self.fraction
        return False

    def to_json(self) -> dict[str, Any]:
        if self.clients is not None:
            return {"clients": list(self.clients)}
        if self.fraction is not None:
            return {"fraction": self.fraction, "seed": self.seed}
        return {"first": self.first}

    def describe(self) -> str:
        if self.clients is not None:
            return f"clients {', '.join(self.clients)}"
        if self.fraction is not None:
            return f"{self.fraction:g} of clients (seed {self.seed})"
        return f"the first {self.first} connections"

    @classmethod
    def from_json(cls, value: Any, where: str = "aim") -> Aim:
        if not isinstance(value, dict):
            raise ExtensionError(f"{where}: expected an object, got {type(value).__name__}")
        chosen = [key for key in ("clients", "fraction", "first") if key in value]
        if len(chosen) != 1:
            raise ExtensionError(f"{where}: give exactly one of clients, fraction, first (got {len(chosen)})")
        unknown = sorted(set(value) - {"clients", "fraction", "first", "seed"})
        if unknown:
            raise ExtensionError(f"{where}.{unknown[0]}: unknown field (known: clients, fraction, seed, first)")
        if "seed" in value and chosen[0] != "fraction":
            raise ExtensionError(f"{where}.seed: only a fraction is drawn from a seed")
        if chosen == ["clients"]:
            clients = value["clients"]
            if not isinstance(clients, list) or not clients:
                raise ExtensionError(f"{where}.clients: expected a non-empty list of client ids")
            for index, client in enumerate(clients):
                if not isinstance(client, str) or not client:
                    raise ExtensionError(f"{where}.clients[{index}]: expected a non-empty string, got {client!r}")
            return cls(clients=tuple(clients))
        if chosen == ["fraction"]:
            fraction = value["fraction"]
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
                raise ExtensionError(f"{where}.fraction: expected a number from 0 to 1, got {fraction!r}")
            seed = value.get("seed", 0)
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ExtensionError(f"{where}.seed: expected an integer, got {seed!r}")
            return cls(fraction=float(fraction), seed=seed)
        return cls(first=_integer(value["first"], f"{where}.first", minimum=1))


def fraction_draw(seed: int, client_id: str) -> float:
    """The client's uniform draw in [0, 1) for ``seed``: stable across runs, processes and hosts."""
    digest = hashlib.sha256(f"{seed}:{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Trigger:
    """The event after which a toxic acts on a connection: its upgrade, or N data frames after it."""

    after: str = "upgrade"
    #: With ``after == "frames"``: how many data frames (text, binary, continuation) must cross
    #: the toxic's stream first. Control frames (keepalive pings) are not counted, so a count
    #: means the same number of messages whatever the keepalive does.
    frames: int | None = None

    def to_json(self) -> dict[str, Any]:
        if self.frames is not None:
            return {"after": self.after, "frames": self.frames}
        return {"after": self.after}

    def describe(self) -> str:
        if self.frames is not None:
            return f"after {self.frames} data frame(s)"
        return f"after the {self.after}"

    @classmethod
    def from_json(cls, value: Any, where: str = "trigger") -> Trigger:
        if not isinstance(value, dict):
            raise ExtensionError(f"{where}: expected an object, got {type(value).__name__}")
        unknown = sorted(set(value) - {"after", "frames"})
        if unknown:
            raise ExtensionError(f"{where}.{unknown[0]}: unknown field (known: after, frames)")
        after = value.get("after")
        if after not in TRIGGER_EVENTS:
            raise ExtensionError(f"{where}.after: must be one of {', '.join(TRIGGER_EVENTS)}, got {after!r}")
        if after == "frames":
            if "frames" not in value:
                raise ExtensionError(f"{where}.frames: required when after is 'frames' (how many data frames)")
            return cls(after=after, frames=_integer(value["frames"], f"{where}.frames", minimum=1))
        if "frames" in value:
            raise ExtensionError(f"{where}.frames: only a trigger after 'frames' counts frames")
        return cls(after=after)


@dataclass(frozen=True)
class ToxicExtras:
    """The extension fields of one toxic; all None for a plain 2.x toxic."""

    duration_ms: int | None = None
    aim: Aim | None = None
    trigger: Trigger | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields a reply adds after the 2.x ones: none at all for a plain toxic."""
        out: dict[str, Any] = {}
        if self.duration_ms is not None:
            out["duration_ms"] = self.duration_ms
        if self.aim is not None:
            out["aim"] = self.aim.to_json()
        if self.trigger is not None:
            out["trigger"] = self.trigger.to_json()
        return out


NO_EXTRAS = ToxicExtras()


def decode_extras(body: Any) -> ToxicExtras:
    """The extension fields of a toxic create body (Go ignores them, so they never clash)."""
    if not isinstance(body, dict) or not any(key in body for key in EXTENSION_FIELDS):
        return NO_EXTRAS
    duration = body.get("duration_ms")
    raw_aim = body.get("aim")
    raw_trigger = body.get("trigger")
    return ToxicExtras(
        duration_ms=None if duration is None else _integer(duration, "duration_ms", minimum=1),
        aim=None if raw_aim is None else Aim.from_json(raw_aim),
        trigger=None if raw_trigger is None else Trigger.from_json(raw_trigger),
    )


@dataclass(eq=False)
class ToxicState:
    """What one toxic has done so far; every version of the toxic (updates) shares one.

    ``connections`` counts the connections (in the toxic's direction) on which it acted at least
    once; the byte counts say how: held back (``bytes_delayed``), discarded while the connection
    stayed up (``bytes_dropped``), or discarded because the toxic ended the stream (``bytes_cut``).
    ``cuts`` counts the connections it closed, reset or silenced.
    """

    connections: int = 0
    bytes_delayed: int = 0
    bytes_dropped: int = 0
    bytes_cut: int = 0
    cuts: int = 0
    #: Connection ordinals an ``aim.first`` toxic has taken, oldest first.
    claimed: list[int] = field(default_factory=list)
    #: The pending self-removal of a ``duration_ms`` toxic (a loop timer), if any.
    expiry: Any = None

    def evidence(self) -> dict[str, int]:
        return {
            "connections": self.connections,
            "bytes_delayed": self.bytes_delayed,
            "bytes_dropped": self.bytes_dropped,
            "bytes_cut": self.bytes_cut,
            "cuts": self.cuts,
        }

    def claim(self, ordinal: int, first: int) -> bool:
        """Whether connection ``ordinal`` is among the first ``first`` this toxic takes."""
        if ordinal in self.claimed:
            return True
        if len(self.claimed) < first:
            self.claimed.append(ordinal)
            return True
        return False


def client_id_of(request_line: bytes) -> str | None:
    """The ``client`` query parameter of an HTTP request line, or None.

    ``GET /play?client=c7 HTTP/1.1`` → ``c7``. Anything that is not such a line (another protocol,
    no query, an empty id) gives None: the connection is simply not identified.
    """
    parts = request_line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    values = parse_qs(urlsplit(target).query).get("client")
    return values[0] if values and values[0] else None


def is_upgrade(response_head: bytes) -> bool:
    """Whether an HTTP response head switches protocols (``HTTP/1.1 101 ...``)."""
    status = response_head.split(b"\r\n", 1)[0].split(b" ")
    return len(status) >= 2 and status[0].startswith(b"HTTP/1.") and status[1] == b"101"
