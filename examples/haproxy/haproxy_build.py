"""Run an unmodified HAProxy as a wschaos balancer build (docs/contract.md).

Usage: python examples/haproxy/haproxy_build.py CONFIG.json

Reads the contract's JSON config, writes an ``haproxy.cfg`` into a fresh temporary directory next
to it, and then *replaces itself* with ``haproxy -f haproxy.cfg -db`` (``os.execvp``), so the
process the harness supervises, signals and counts sockets of is HAProxy itself.

What maps onto HAProxy and what does not:

- ``listen``: the ``bind`` of an HTTP-mode frontend; WebSocket upgrades are tunnelled
  (``timeout tunnel``).
- ``backends``: one backend section; the first entry is the active server, the others are
  ``backup`` servers in config order (HAProxy uses the first backup that is up). Each server is
  health-checked every 500 ms with a WebSocket opening handshake on ``/`` and goes down after one
  failed check (``fall 1 rise 1``). Any HTTP answer below 500 counts as up (``101``, or a ``4xx``
  from a server such as the wschaos game backend that wants a client id in the path): the point
  is that the server process answers. A bare TCP check is not enough here: the harness puts a
  fault proxy in front of every backend, and that proxy accepts TCP while the backend behind it
  is dead (and the kernel accepts TCP for a SIGSTOPped process).
- ``admin``, ``failover``, ``ping_*``: validated, then not used. HAProxy has no ``/status`` in
  the contract's shape, writes no event lines, does not move a live connection to another
  server, and does not send WebSocket pings. This is a black-box build.

A config it cannot use: one line on stderr and exit code 2, as the contract requires.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

EXIT_CONFIG = 2
# A fixed key is fine for a health check: the server only has to answer HTTP.
WS_PROBE = (
    "GET / HTTP/1.1\\r\\n"
    "Host: {host}\\r\\n"
    "Upgrade: websocket\\r\\n"
    "Connection: Upgrade\\r\\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
    "Sec-WebSocket-Version: 13\\r\\n"
    "\\r\\n"
)


class ConfigError(Exception):
    """The config cannot be used; the message is the one stderr line."""


@dataclass(frozen=True)
class Backend:
    name: str
    host: str
    port: int
    tls: bool


@dataclass(frozen=True)
class BuildConfig:
    listen_host: str
    listen_port: int
    backends: list[Backend]


def fail(message: str) -> NoReturn:
    sys.stderr.write(f"haproxy_build: {message}\n")
    sys.stderr.flush()
    sys.exit(EXIT_CONFIG)


def parse_hostport(value: Any, field: str) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f'{field}: expected "HOST:PORT", got {value!r}')
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{field}: bad port in {value!r}")
    return host, int(port_text)


def non_negative(value: Any, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{field}: expected a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(f"{field}: too large") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{field}: must be a finite number >= 0, got {value!r}")


def parse_backend(index: int, raw: Any, seen: set[str]) -> Backend:
    field = f"backends[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{field}: expected an object with name and url")
    name = raw.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"{field}.name: expected a non-empty name of letters, digits, '-', '_' or '.', got {name!r}")
    if name in seen:
        raise ConfigError(f"{field}.name: duplicate backend name {name!r}")
    seen.add(name)
    url = raw.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"{field}.url: expected a ws:// or wss:// URL, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"{field}.url: expected a ws:// or wss:// URL, got {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        raise ConfigError(f"{field}.url: bad port in {url!r}") from None
    return Backend(name=name, host=parts.hostname, port=port, tls=parts.scheme == "wss")


def parse_config(text: str) -> BuildConfig:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"config is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a JSON object")
    if "listen" not in raw:
        raise ConfigError("listen: missing")
    listen_host, listen_port = parse_hostport(raw["listen"], "listen")
    if raw.get("admin") is not None:
        parse_hostport(raw["admin"], "admin")  # validated; this build has no admin endpoint
    backends_raw = raw.get("backends")
    if not isinstance(backends_raw, list) or not backends_raw:
        raise ConfigError("backends: expected a non-empty list")
    seen: set[str] = set()
    backends = [parse_backend(i, b, seen) for i, b in enumerate(backends_raw)]
    failover = raw.get("failover", {})
    if not isinstance(failover, dict):
        raise ConfigError("failover: expected an object")
    for key in ("max_attempts", "window_s", "min_interval_s"):
        if key in failover:
            non_negative(failover[key], f"failover.{key}")
    for key in ("ping_interval_s", "ping_timeout_s"):
        if key in raw:
            non_negative(raw[key], key)
    return BuildConfig(listen_host=listen_host, listen_port=listen_port, backends=backends)


def check_listen_free(host: str, port: int) -> None:
    """HAProxy's own bind error is several lines and exit 1; the contract wants one line and 2."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"listen: {host}:{port} is already in use") from None
            raise ConfigError(f"listen: cannot bind {host}:{port}: {exc.strerror}") from None


def render(cfg: BuildConfig) -> str:
    bind_host = f"[{cfg.listen_host}]" if ":" in cfg.listen_host else cfg.listen_host
    lines = [
        "global",
        "    log stderr format raw local0 info",
        "    maxconn 4096",
        # On SIGUSR1 (soft stop) do not wait for tunnels forever. SIGTERM stops at once.
        "    hard-stop-after 5s",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-request 10s",
        "    timeout client-fin 1s",
        "    timeout server-fin 1s",
        "    timeout tunnel 1h",
        "    retries 2",
        "    option redispatch 1",
        "",
        "frontend ws_in",
        f"    bind {bind_host}:{cfg.listen_port}",
        "    default_backend ws_servers",
        "",
        "backend ws_servers",
        # Priority order: the first backend is the only active server; the others are backups,
        # and without `option allbackups` HAProxy uses the first backup that is up.
        "    balance first",
        "    option tcp-check",
        "    tcp-check connect default",  # the server line's address and TLS settings
    ]
    # tcp-check rules are per backend, so the probe's Host header is the first server's; the game
    # backend and most WebSocket servers do not care.
    probe_host = cfg.backends[0].host
    lines += [
        f'    tcp-check send "{WS_PROBE.format(host=probe_host)}"',
        '    tcp-check expect rstring "^HTTP/1\\.[01] [1-4][0-9][0-9] "',
        "    default-server check inter 500ms fall 1 rise 1",
    ]
    for i, backend in enumerate(cfg.backends):
        server_addr = f"[{backend.host}]" if ":" in backend.host else backend.host
        tls = f" ssl verify required ca-file @system-ca sni str({backend.host}) check-ssl" if backend.tls else ""
        backup = " backup" if i > 0 else ""
        lines.append(f"    server {backend.name} {server_addr}:{backend.port}{tls}{backup}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        fail("usage: haproxy_build.py CONFIG.json")
    config_path = Path(argv[1])
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read config {str(config_path)!r}: {exc}")
    try:
        cfg = parse_config(text)
        check_listen_free(cfg.listen_host, cfg.listen_port)
    except ConfigError as exc:
        fail(str(exc))
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        fail("haproxy: not found on PATH (apt-get install haproxy)")
    workdir = Path(tempfile.mkdtemp(prefix="haproxy-", dir=config_path.resolve().parent))
    cfg_file = workdir / "haproxy.cfg"
    cfg_file.write_text(render(cfg), encoding="utf-8")
    # Validate before exec: a config HAProxy rejects (e.g. a host name it cannot resolve) is a
    # config error of this build, one line and exit 2, not HAProxy's multi-line alert and exit 1.
    check = subprocess.run([haproxy, "-c", "-f", str(cfg_file)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        alerts = [line for line in (check.stderr + check.stdout).splitlines() if "ALERT" in line]
        detail = (alerts[0] if alerts else (check.stderr or check.stdout).strip().replace("\n", " "))[:300]
        fail(f"haproxy rejected the generated config {str(cfg_file)!r}: {detail}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(haproxy, ["haproxy", "-f", str(cfg_file), "-db"])


if __name__ == "__main__":
    main(sys.argv)
