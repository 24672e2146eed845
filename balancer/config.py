"""The balancer build contract's JSON config, as frozen dataclasses.

Pure: no sockets, no clock. Every problem is reported as a ``ConfigError`` whose
message is one line naming the field, so ``__main__`` can print it and exit 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ADMIN_HOST = "127.0.0.1"
# The send deadline when keepalive is disabled (see Config.send_deadline_s).
SEND_DEADLINE_CLOSE_TIMEOUTS = 10
MIN_SEND_DEADLINE_S = 1.0
DATA_PATHS = ("messages", "frames")
DEFAULT_DATA_PATH = "frames"
# 64 did best in a 400-client herd (docs/performance.md, "Shedding a herd"), but it turned away
# clients of an ordinary burst: 200 clients connecting at once beside three other certify lanes
# (reconnect_storm) got 125 refusals, retried into their own 5 s handshake timeouts, and 59 were
# never in within the 15 s their swarm allows. 256 leaves a burst of a few hundred alone and sheds
# only a herd.
DEFAULT_MAX_OPENING = 256
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class ConfigError(ValueError):
    """A config problem; ``str(err)`` is a single line meant for stderr."""


def is_loopback(host: str) -> bool:
    """Whether a listen host is reachable from this machine only (a name other than
    "localhost" is assumed reachable: what it resolves to can change)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BackendSpec:
    name: str
    url: str


@dataclass(frozen=True)
class FailoverConfig:
    max_attempts: int = 3
    window_s: float = 60.0
    min_interval_s: float = 5.0


@dataclass(frozen=True)
class Config:
    listen: Address
    backends: tuple[BackendSpec, ...]
    admin: Address | None = None
    failover: FailoverConfig = field(default_factory=FailoverConfig)
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    # Short on purpose: closing handshakes are waited for this long. (A
    # blackholed upstream no longer waits for one: Session._keepalive aborts
    # it on the missed pong, so it is noticed within ping_interval + ping_timeout.)
    close_timeout_s: float = 1.0
    # Must be positive: websockets reads 0/None as "no timeout", and a
    # handshake to a blackholed backend would then wait forever.
    open_timeout_s: float = 10.0
    # SIGHUP drains: live sessions keep running this long before they are closed
    # with 1001 (docs/contract.md, section 8a). 0 closes them at once.
    drain_timeout_s: float = 30.0
    max_size: int = 2**20
    max_connections: int = 1024
    # Admission control (balancer.admission): admitted clients whose first upstream open has not
    # finished; one more handshake is answered 503 at once. Measured in docs/performance.md.
    max_opening: int = DEFAULT_MAX_OPENING
    health_interval_s: float = 1.0
    health_probe: str = "ws"
    # "auto": uvloop when it is installed (it roughly halves the loop's own cost
    # per message), else asyncio's; "uvloop" insists on it; "asyncio" turns it off.
    event_loop: str = "auto"
    # "messages": each leg's messages are received and re-sent whole by websockets.
    # "frames": data frames are relayed as frames, re-masked but never decoded
    # (balancer.fastpath); a session whose client negotiated compression still
    # takes the messages path.
    data_path: str = DEFAULT_DATA_PATH

    # When set, /status and /metrics need "Authorization: Bearer <token>". Kept out of
    # repr so that a logged or printed Config does not reveal it.
    admin_token: str | None = field(default=None, repr=False)

    @property
    def admin_unguarded(self) -> bool:
        """An admin endpoint that other hosts can reach, with no admin_token to guard it."""
        return self.admin is not None and self.admin_token is None and not is_loopback(self.admin.host)

    @property
    def send_deadline_s(self) -> float:
        """How long one ``send()`` on either leg may take before the peer counts as dead.

        With keepalive on, a send outlasting ping_interval + ping_timeout is a
        stalled peer (websockets' ping is stuck behind the same flow control).
        With keepalive off there is no ping to compare with, but a peer that
        stops reading must still not hang the session forever, so the deadline
        falls back to a generous multiple of the close timeout, with a floor so
        that close_timeout_s = 0 does not make every blocked send fatal.
        """
        if self.ping_interval_s > 0 and self.ping_timeout_s > 0:
            return self.ping_interval_s + self.ping_timeout_s
        return max(SEND_DEADLINE_CLOSE_TIMEOUTS * self.close_timeout_s, MIN_SEND_DEADLINE_S)


# Keys of the JSON object that map onto plain numeric Config fields.
_FLOAT_FIELDS = (
    "ping_interval_s",
    "ping_timeout_s",
    "close_timeout_s",
    "open_timeout_s",
    "health_interval_s",
    "drain_timeout_s",
)
_INT_FIELDS = ("max_size", "max_connections", "max_opening")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def parse_address(value: Any, field_name: str, default_host: str | None = None) -> Address:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f'{field_name}: expected "HOST:PORT", got {value!r}')
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        if default_host is None:
            raise ConfigError(f'{field_name}: expected "HOST:PORT", got {value!r}')
        host, port_text = default_host, text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        if default_host is None:
            raise ConfigError(f"{field_name}: missing host in {value!r}")
        host = default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{field_name}: invalid port in {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{field_name}: port out of range in {value!r}")
    return Address(host, port)


def _number(raw: Mapping[str, Any], key: str, default: float, path: str) -> float:
    value = raw.get(key, default)
    # bool is an int subclass; "true" as a timeout is a mistake worth naming.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{path}: must not be negative, got {_short(value)}")
    try:
        # JSON integers are unbounded; float() (and math.isfinite) raise
        # OverflowError past ~1.8e308 instead of returning inf.
        number = float(value)
    except OverflowError:
        raise ConfigError(f"{path}: too large, got {_short(value)}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{path}: must be finite, got {value!r}")
    return number


def _short(value: int | float) -> str:
    """repr(value), unless it is an integer too long to be worth printing in full."""
    if isinstance(value, int) and value.bit_length() > 64:
        # Not str(value): past 4300 digits Python refuses to convert it.
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return repr(value)


def _integer(raw: Mapping[str, Any], key: str, default: int, path: str, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if value < 0:
        raise ConfigError(f"{path}: must not be negative, got {_short(value)}")
    if value < minimum:
        raise ConfigError(f"{path}: must be at least {minimum}, got {value!r}")
    return value


def _admin_token(raw: Mapping[str, Any]) -> str | None:
    """Optional; an RFC 6750 b64token. Errors never quote the value: it is a secret."""
    value = raw.get("admin_token")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"admin_token: expected a string, got {type(value).__name__}")
    if not _B64TOKEN.fullmatch(value):
        raise ConfigError(
            "admin_token: expected 1 or more of A-Z a-z 0-9 - . _ ~ + / then optional '=' padding"
            " (an RFC 6750 bearer token; it is sent in an HTTP header)"
        )
    return value


def _backend(raw: Any, index: int) -> BackendSpec:
    where = f"backends[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f'{where}: expected an object with "name" and "url"')
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name: expected a non-empty string, got {name!r}")
    url = raw.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"{where}.url: expected a ws:// or wss:// URL, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where}.url: bad URL {url!r}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"{where}.url: expected a ws:// or wss:// URL, got {url!r}")
    if port == 0:
        raise ConfigError(f"{where}.url: port 0 in {url!r}")
    return BackendSpec(name=name, url=url)


def from_dict(raw: Any) -> Config:
    if not isinstance(raw, Mapping):
        raise ConfigError("config: expected a JSON object at the top level")
    if "listen" not in raw:
        raise ConfigError('listen: missing (expected "HOST:PORT")')
    listen = parse_address(raw["listen"], "listen")
    admin_raw = raw.get("admin")
    admin = None if admin_raw is None else parse_address(admin_raw, "admin", DEFAULT_ADMIN_HOST)

    backends_raw = raw.get("backends")
    if backends_raw is None:
        raise ConfigError("backends: missing (expected a list of {name, url})")
    if not isinstance(backends_raw, Sequence) or isinstance(backends_raw, str | bytes):
        raise ConfigError("backends: expected a list of {name, url}")
    if not backends_raw:
        raise ConfigError("backends: no backends configured")
    backends = tuple(_backend(b, i) for i, b in enumerate(backends_raw))
    seen: set[str] = set()
    for b in backends:
        if b.name in seen:
            raise ConfigError(f"backends: duplicate backend name {b.name!r}")
        seen.add(b.name)

    fo_raw = raw.get("failover", {})
    if not isinstance(fo_raw, Mapping):
        raise ConfigError("failover: expected an object")
    defaults = FailoverConfig()
    failover = FailoverConfig(
        max_attempts=_integer(fo_raw, "max_attempts", defaults.max_attempts, "failover.max_attempts", 0),
        window_s=_number(fo_raw, "window_s", defaults.window_s, "failover.window_s"),
        min_interval_s=_number(fo_raw, "min_interval_s", defaults.min_interval_s, "failover.min_interval_s"),
    )

    base = Config(listen=listen, backends=backends)
    floats = {k: _number(raw, k, getattr(base, k), k) for k in _FLOAT_FIELDS}
    if floats["health_interval_s"] == 0:
        raise ConfigError("health_interval_s: must be positive")
    if floats["open_timeout_s"] == 0:
        # 0 would mean "no handshake timeout"; every wait must stay bounded.
        raise ConfigError("open_timeout_s: must be positive (0 would wait forever on a blackholed backend)")
    ints = {
        "max_size": _integer(raw, "max_size", base.max_size, "max_size", 1),
        "max_connections": _integer(raw, "max_connections", base.max_connections, "max_connections", 1),
        "max_opening": _integer(raw, "max_opening", base.max_opening, "max_opening", 1),
    }
    probe = raw.get("health_probe", base.health_probe)
    if probe not in ("ws", "tcp"):
        raise ConfigError(f'health_probe: expected "ws" or "tcp", got {probe!r}')
    event_loop = raw.get("event_loop", base.event_loop)
    if event_loop not in EVENT_LOOPS:
        raise ConfigError(f'event_loop: expected "auto", "uvloop" or "asyncio", got {event_loop!r}')
    data_path = raw.get("data_path", base.data_path)
    if data_path not in DATA_PATHS:
        raise ConfigError(f'data_path: expected "messages" or "frames", got {data_path!r}')
    return Config(
        listen=listen,
        admin=admin,
        backends=backends,
        failover=failover,
        health_probe=probe,
        event_loop=event_loop,
        data_path=data_path,
        admin_token=_admin_token(raw),
        **floats,  # type: ignore[arg-type]
        **ints,
    )


def read_json(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:
        # Not a JSONDecodeError: an integer longer than sys.get_int_max_str_digits()
        # (4300 by default) makes int() itself refuse it.
        raise ConfigError(f"{path}: not usable JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return raw


def load_config(path: str | Path) -> Config:
    return from_dict(read_json(path))


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; the contract wants one line and exit 2."""

    def error(self, message: str) -> Any:
        raise ConfigError(f"usage: {message}")


def build_arg_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="python -m balancer",
        description="wschaos reference WebSocket balancer with in-place failover.",
    )
    p.add_argument("config", nargs="?", help="JSON config (the build contract); optional")
    p.add_argument("--listen", help="HOST:PORT for client WebSocket connections")
    p.add_argument("--admin", help="HOST:PORT for /status, /metrics, /healthz")
    p.add_argument(
        "--backend",
        action="append",
        metavar="NAME=URL",
        help="backend in priority order; repeat; replaces the config's list",
    )
    p.add_argument("--max-attempts", type=int, help="failovers allowed per window")
    p.add_argument("--window-s", type=float, help="failover window (seconds)")
    p.add_argument("--min-interval-s", type=float, help="minimum gap between failovers")
    p.add_argument("--ping-interval-s", type=float)
    p.add_argument("--ping-timeout-s", type=float)
    p.add_argument("--close-timeout-s", type=float)
    p.add_argument("--open-timeout-s", type=float)
    p.add_argument("--drain-timeout-s", type=float, help="on SIGHUP, how long live sessions may go on")
    p.add_argument("--max-size", type=int, help="largest client message (bytes); else 1009")
    p.add_argument("--max-connections", type=int, help="more client connections get HTTP 503")
    p.add_argument("--max-opening", type=int, help="clients still opening their upstream; more get HTTP 503")
    p.add_argument("--health-interval-s", type=float, help="active probe period")
    p.add_argument("--health-probe", choices=("ws", "tcp"), help="active probe kind")
    p.add_argument("--event-loop", choices=EVENT_LOOPS, help="auto (uvloop if installed), uvloop or asyncio")
    p.add_argument("--data-path", choices=DATA_PATHS, help="relay whole messages or frames")
    return p


def config_from_args(argv: Sequence[str] | None = None) -> Config:
    """Config file (if given) first, then each flag given overrides its key."""
    args = build_arg_parser().parse_args(argv)
    raw: dict[str, Any] = read_json(args.config) if args.config else {}
    for key in ("listen", "admin", "health_probe", "event_loop", "data_path", *_FLOAT_FIELDS, *_INT_FIELDS):
        value = getattr(args, key)
        if value is not None:
            raw[key] = value
    if args.backend:
        backends = []
        for item in args.backend:
            name, sep, url = item.partition("=")
            if not sep or not name:
                raise ConfigError(f"--backend: expected NAME=URL, got {item!r}")
            backends.append({"name": name, "url": url})
        raw["backends"] = backends
    overrides = {
        key: getattr(args, key)
        for key in ("max_attempts", "window_s", "min_interval_s")
        if getattr(args, key) is not None
    }
    failover = raw.get("failover")
    # A non-object "failover" is left in place so from_dict names it.
    if overrides and (failover is None or isinstance(failover, Mapping)):
        raw["failover"] = {**(failover or {}), **overrides}
    return from_dict(raw)
