"""The things a benchmark talks to: backends, and the proxies in front of them.

Every process is started under the harness's ``Supervisor`` (own process group, reaped on every
exit path, tagged with ``WSCHAOS_OWNER``), listens on 127.0.0.1 only, and is found again by its
``Popen`` handle, never by name. A target is one of:

* ``direct``: the client talks to the primary backend itself (no proxy; the ceiling);
* ``reference``: ``python -m balancer CONFIG.json`` from this checkout (docs/contract.md);
* ``haproxy``: HAProxy in HTTP mode, where an Upgrade turns the stream into a tunnel, with the
  secondary as a ``backup`` server and an active check on the primary;
* ``nginx``: nginx with the usual WebSocket ``Upgrade``/``Connection`` headers, the secondary as a
  ``backup`` server.

HAProxy and nginx run one thread / one worker, like the reference balancer's one event loop,
so "proxy CPU per round trip" compares one core with one core.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `harness` importable from a checkout
    sys.path.insert(0, str(ROOT))

from harness.ports import allocate_port  # noqa: E402
from harness.procs import ManagedProcess, ReadyCheck, Supervisor  # noqa: E402

HOST = "127.0.0.1"
TARGETS = ("direct", "reference", "haproxy", "nginx")  # the default set
# The reference balancer with its data path forced (its config's "data_path"), so both
# paths can be measured side by side in one run: --targets reference-messages,reference-frames.
REFERENCE_VARIANTS = {"reference-messages": "messages", "reference-frames": "frames"}
ALL_TARGETS = (*TARGETS, *REFERENCE_VARIANTS)
PROXIES = ("reference", "haproxy", "nginx", *REFERENCE_VARIANTS)
BENCH = Path(__file__).resolve().parent


@dataclass
class Backend:
    name: str
    port: int
    proc: ManagedProcess

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def cpu_seconds(self) -> float:
        try:
            times = psutil.Process(self.proc.pid or 0).cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return times.user + times.system

    def stats_lines(self) -> list[dict[str, Any]]:
        """The backend's ``{"t", "open", "accepted"}`` lines, in order (see echo_backend.py)."""
        return read_json_lines(self.proc.stdout_path)


@dataclass
class Target:
    kind: str
    port: int
    proc: ManagedProcess | None  # None for direct
    admin_port: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/bench"

    def processes(self) -> list[psutil.Process]:
        """The proxy's whole process tree (nginx has a master and a worker)."""
        if self.proc is None or self.proc.pid is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.processes():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
    return out


def last_json(proc: ManagedProcess) -> dict[str, Any]:
    """The last JSON line a process printed: its result (loadgen, echo backend)."""
    lines = read_json_lines(proc.stdout_path)
    if not lines:
        raise RuntimeError(f"{proc.name} printed no result; see {proc.stderr_path}")
    return lines[-1]


def start_backend(sup: Supervisor, name: str, port: int | None = None) -> Backend:
    port = port or allocate_port()
    argv = [sys.executable, str(BENCH / "echo_backend.py"), "--host", HOST, "--port", str(port)]
    proc = sup.spawn(name, argv, ready=ReadyCheck(HOST, port))
    return Backend(name, port, proc)


def restart_backend(backend: Backend) -> None:
    backend.proc.restart()


def missing_proxies(install: bool) -> dict[str, str]:
    """HAProxy and nginx that cannot be run, with the reason; installs them first when allowed."""
    wanted = {"haproxy": "haproxy", "nginx": "nginx"}
    absent = [name for name, program in wanted.items() if shutil.which(program) is None]
    if absent and install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *absent], env=env, check=False, capture_output=True, timeout=600
        )
    reasons: dict[str, str] = {}
    for name, program in wanted.items():
        if shutil.which(program) is None:
            why = "not installed"
            if not install:
                why += " (--no-install)"
            elif os.geteuid() != 0:
                why += " and this is not root, so apt-get was not tried"
            else:
                why += " and apt-get install failed"
            reasons[name] = why
    return reasons


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": sys.version.split()[0]}
    for module in ("websockets", "picows", "uvloop"):
        try:
            found[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            found[module] = "?"
    for program, argv in (("haproxy", ["haproxy", "-v"]), ("nginx", ["nginx", "-v"])):
        if shutil.which(program):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = (done.stdout + done.stderr).strip().splitlines()
            found[program] = text[0] if text else "?"
    return found


def start_target(
    sup: Supervisor,
    kind: str,
    primary: str,
    secondary: str,
    workdir: Path,
    *,
    tag: str = "",
    balancer: dict[str, Any] | None = None,
) -> Target:
    """Starts one proxy (or none, for direct) in front of ``primary`` with ``secondary`` as backup.

    ``primary``/``secondary`` are ``HOST:PORT`` (the primary may be a Toxiproxy listener).
    ``balancer`` overrides keys of the reference balancer's config.
    """
    name = f"{kind}{tag}"
    if kind == "direct":
        return Target(kind, int(primary.rsplit(":", 1)[1]), None)
    workdir.mkdir(parents=True, exist_ok=True)
    port = allocate_port()
    if kind == "reference" or kind in REFERENCE_VARIANTS:
        admin = allocate_port()
        config = {
            "listen": f"{HOST}:{port}",
            "admin": f"{HOST}:{admin}",
            "backends": [
                {"name": "primary", "url": f"ws://{primary}"},
                {"name": "secondary", "url": f"ws://{secondary}"},
            ],
            "max_connections": 20000,
            **({"data_path": REFERENCE_VARIANTS[kind]} if kind in REFERENCE_VARIANTS else {}),
            **(balancer or {}),
        }
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(config, indent=2))
        proc = sup.spawn(name, [sys.executable, "-m", "balancer", str(path)], ready=ReadyCheck(HOST, port), cwd=ROOT)
        return Target(kind, port, proc, admin_port=admin)
    if kind == "haproxy":
        path = workdir / f"{name}.cfg"
        path.write_text(haproxy_config(port, primary, secondary))
        proc = sup.spawn(name, ["haproxy", "-db", "-f", str(path)], ready=ReadyCheck(HOST, port))
        return Target(kind, port, proc)
    if kind == "nginx":
        prefix = workdir / name
        prefix.mkdir(parents=True, exist_ok=True)
        path = prefix / "nginx.conf"
        path.write_text(nginx_config(port, primary, secondary, prefix))
        argv = ["nginx", "-p", str(prefix), "-c", str(path), "-g", "daemon off;"]
        proc = sup.spawn(name, argv, ready=ReadyCheck(HOST, port))
        return Target(kind, port, proc)
    raise ValueError(f"unknown target {kind!r}; expected one of {', '.join(ALL_TARGETS)}")


def haproxy_config(port: int, primary: str, secondary: str) -> str:
    # HTTP mode: HAProxy sees the Upgrade, and after the 101 the connection is a tunnel
    # (`timeout tunnel` applies). The check on the primary is what makes the backup take over:
    # a backup server is used only when every normal server is marked down.
    return f"""global
    nbthread 1
    maxconn 9900
    log stderr format raw local0 err

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    option redispatch
    retries 2

frontend bench
    bind {HOST}:{port}
    default_backend echo

backend echo
    server primary {primary} check inter 1s fall 1 rise 2
    server secondary {secondary} check inter 1s backup
"""


def nginx_config(port: int, primary: str, secondary: str, prefix: Path) -> str:
    # Passive health: one failed connect marks the primary down for 10 s and the request goes
    # to the backup (proxy_next_upstream error). An established tunnel is never moved.
    return f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
worker_rlimit_nofile 20000;
events {{ worker_connections 19000; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream echo {{
        server {primary} max_fails=1 fail_timeout=10s;
        server {secondary} backup;
    }}
    server {{
        listen {HOST}:{port};
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_connect_timeout 2s;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""
