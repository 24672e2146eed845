"""The cluster under test: real processes wired through fault proxies.

    clients -> toxiproxy "lb" -> balancer -> toxiproxy "primary"   -> backend primary
                                          -> toxiproxy "secondary" -> backend secondary

The balancer is any build, started from a command template with ``{config}`` (docs/contract.md).
One cluster serves many runs: ``reset`` heals every fault and checks the cluster is clean again.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlparse

import psutil

from harness.backend import JOURNAL_PATH
from harness.ports import allocate_port, release_port
from harness.procs import (
    ManagedProcess,
    ProcessFailed,
    ReadyCheck,
    Supervisor,
    expand_command,
    raise_open_files_limit,
)
from harness.records import write_atomic
from harness.scenario import Keepalive, Limits
from harness.waiting import wait_until

REFERENCE_BALANCER_CMD = "python -m balancer {config}"
BALANCER_CMD_ENV = "WSCHAOS_BALANCER_CMD"
TOXIPROXY_URL_ENV = "TOXIPROXY_URL"
BACKEND_NAMES = ("primary", "secondary")
HOST = "127.0.0.1"
#: Fewer free blocks than this and the file system is full: a line that needs a new block fails.
FULL_DISK_BLOCKS = 2


class BuildFailed(ProcessFailed):
    """The balancer build did not start or never became ready (certify exits 2 on this)."""


class ToxiproxyUnusable(ProcessFailed):
    """The Toxiproxy server given by URL does not answer, or answers but is not a Toxiproxy."""


class NotToxiproxy(Exception):
    """Something answered at the Toxiproxy URL, but not as Toxiproxy does."""


def default_balancer_cmd() -> str:
    return os.environ.get(BALANCER_CMD_ENV) or REFERENCE_BALANCER_CMD


def default_toxiproxy_url() -> str | None:
    return os.environ.get(TOXIPROXY_URL_ENV) or None


@dataclass
class ClusterSpec:
    balancer_cmd: str = field(default_factory=default_balancer_cmd)
    toxiproxy_url: str | None = field(default_factory=default_toxiproxy_url)
    limits: Limits = field(default_factory=Limits)
    keepalive: Keepalive = field(default_factory=Keepalive)
    ready_timeout_s: float = 20.0


#: toxiproxy-python keeps the server address in class attributes: one process-wide setting. Lanes
#: (certify --parallel) talk to different servers from different threads, so pointing the client
#: at a server and using it must happen under one lock.
_CLIENT_LOCK = threading.RLock()

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _with_client_lock(method: _Method) -> _Method:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _CLIENT_LOCK:
            return method(*args, **kwargs)

    return cast(_Method, locked)


class ToxiproxyHandle:
    """Talks to a Toxiproxy server through the official toxiproxy-python client.

    toxiproxy-python keeps the server address in class attributes, so every call goes through
    ``_api`` which points it at this server first, under ``_CLIENT_LOCK``.
    """

    def __init__(self, url: str) -> None:
        parsed = urlparse(url if "//" in url else f"http://{url}")
        if not parsed.hostname or not parsed.port:
            raise ValueError(f"toxiproxy URL {url!r}: expected http://HOST:PORT")
        self.url = f"http://{parsed.hostname}:{parsed.port}"
        self.host = parsed.hostname
        self.port = parsed.port

    def _api(self) -> Any:
        from toxiproxy import Toxiproxy  # imported late: it drags in requests

        server = Toxiproxy()
        server.update_api_consumer(self.host, self.port)
        return server

    def version(self) -> str:
        """The server's version. Raises OSError when nothing answers (toxiproxy-python's own
        version() returns None then, which would hide a wrong URL until the first fault), and
        :class:`NotToxiproxy` when something else answers (Toxiproxy sends ``{"version": V}``)."""
        req = urllib.request.Request(f"{self.url}/version", headers={"Accept": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=5.0) as resp:
                body = resp.read(4096)
        except urllib.error.HTTPError as exc:
            raise NotToxiproxy(f"GET /version answered HTTP {exc.code} {exc.reason}") from None
        try:
            data = json.loads(body.decode("utf-8"))
        except ValueError:
            data = None
        if not isinstance(data, dict) or "version" not in data:
            raise NotToxiproxy(f'GET /version answered {body[:100]!r}, not {{"version": ...}}')
        return str(data["version"])

    @_with_client_lock
    def create(self, name: str, listen: str, upstream: str) -> Any:
        server = self._api()
        existing = server.get_proxy(name)
        if existing is not None:
            existing.destroy()
        return server.create(upstream=upstream, name=name, listen=listen)

    @_with_client_lock
    def proxy(self, name: str) -> Any:
        proxy = self._api().get_proxy(name)
        if proxy is None:
            raise KeyError(f"toxiproxy has no proxy named {name!r}")
        return proxy

    @_with_client_lock
    def add_toxic(self, proxy: str, *, name: str, type: str, stream: str, attributes: dict[str, Any]) -> None:
        self.proxy(proxy).add_toxic(name=name, type=type, stream=stream, attributes=attributes)

    @_with_client_lock
    def remove_toxic(self, proxy: str, name: str) -> None:
        self.proxy(proxy).destroy_toxic(name)

    @_with_client_lock
    def toxics(self, proxy: str) -> list[str]:
        return list(self.proxy(proxy).toxics())

    @_with_client_lock
    def set_enabled(self, proxy: str, enabled: bool) -> None:
        p = self.proxy(proxy)
        if enabled:
            p.enable()
        else:
            p.disable()

    @_with_client_lock
    def heal(self, proxy: str) -> None:
        """Removes this proxy's toxics and enables it; other users' proxies are left alone."""
        p = self.proxy(proxy)
        for toxic in list(p.toxics()):
            p.destroy_toxic(toxic)
        p.enable()

    @_with_client_lock
    def destroy(self, proxy: str) -> None:
        with contextlib.suppress(Exception):
            self.proxy(proxy).destroy()


def http_get_json(url: str, timeout: float = 1.0) -> Any:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


#: Every inet socket on the machine by inode: (protocol file, local port, TCP state in hex).
SocketTable = dict[int, tuple[str, int, str]]
INET_TABLES = ("tcp", "tcp6", "udp", "udp6")
TCP_TABLES = ("tcp", "tcp6")
TCP_ESTABLISHED = "01"  # as /proc/net/tcp writes the state


def read_socket_table(proc_net: Path = Path("/proc/net")) -> SocketTable | None:
    """The machine's inet sockets, read once from ``/proc/net``; None where there is no such thing
    (not Linux): callers then ask psutil. psutil reads the whole table on every call, for every
    process, and a busy shared machine holds tens of thousands of sockets: 2.2 s a call measured
    at a load average of 29 with 15,894 TCP sockets, three calls per poll of a quiescing run."""
    if not (proc_net / "tcp").exists():
        return None
    table: SocketTable = {}
    for name in INET_TABLES:
        try:
            lines = (proc_net / name).read_text(encoding="ascii", errors="replace").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # inode 0: a socket no process holds (TIME_WAIT), most of a busy machine's table.
            if len(fields) < 10 or not fields[9].isdigit() or fields[9] == "0":
                continue
            local = fields[1].rsplit(":", 1)
            if len(local) == 2:
                with contextlib.suppress(ValueError):
                    table[int(fields[9])] = (name, int(local[1], 16), fields[3])
    return table


def _socket_inodes(pid: int) -> list[int]:
    """The inode of each socket file descriptor a process holds (one per descriptor, as psutil counts)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return []
    inodes = []
    for fd in fds:
        try:
            link = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link.endswith("]"):
            with contextlib.suppress(ValueError):
                inodes.append(int(link[8:-1]))
    return inodes


def process_tree_sockets(pid: int, table: SocketTable | None = None) -> int:
    """Inet sockets held by a process and its descendants (a build may be a wrapper script).
    ``table`` (:func:`read_socket_table`) lets several counts share one read of the machine's."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    count = 0
    for proc in procs:
        if table is None:
            with contextlib.suppress(psutil.Error):
                count += len(proc.net_connections(kind="inet"))
        else:
            count += sum(1 for inode in _socket_inodes(proc.pid) if inode in table)
    return count


def established_on_port(pid: int, port: int, table: SocketTable | None = None) -> int:
    """Established TCP connections a process holds on a local port."""
    if table is not None:
        return sum(
            1
            for inode in _socket_inodes(pid)
            if (entry := table.get(inode)) is not None
            and entry[0] in TCP_TABLES
            and entry[1] == port
            and entry[2] == TCP_ESTABLISHED
        )
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return 0
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)


class Cluster:
    def __init__(self, root: Path, spec: ClusterSpec | None = None) -> None:
        self.root = Path(root)
        # A copy: the cluster records its build's current limits in it (write_config), and a spec
        # shared with another cluster (certify's lanes) would then say another build's limits.
        self.spec = replace(spec) if spec is not None else ClusterSpec()
        self.logs = self.root / "logs"
        self.journals = self.root / "journals"
        self.supervisor = Supervisor(self.logs)
        self.tag = uuid.uuid4().hex[:8]
        self.ports: dict[str, int] = {}
        self.toxiproxy: ToxiproxyHandle | None = None
        self.config_path = self.root / "balancer.json"
        self.config: dict[str, Any] = {}
        self._started = False
        self._client_blocks = 0
        self.open_files_limit: int | None = None

    def client_id_offset(self, clients: int = 1, block: int = 1000) -> int:
        """Fresh client ids for ``clients`` clients, in whole blocks: backends remember game state
        per client id across runs on a reused cluster, so no two runs may share an id."""
        self._client_blocks += 1
        offset = self._client_blocks * block
        self._client_blocks += max(0, -(-clients // block) - 1)
        return offset

    # -- naming -------------------------------------------------------------------------------
    def proxy_name(self, link: str) -> str:
        # Unique per cluster: an external Toxiproxy may be shared by parallel workers.
        return f"wschaos-{self.tag}-{link}"

    @property
    def lb_url(self) -> str:
        return f"ws://{HOST}:{self.ports['lb']}"

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.ports['admin']}"

    @property
    def balancer(self) -> ManagedProcess:
        return self.supervisor["balancer"]

    def process(self, target: str) -> ManagedProcess:
        """The process behind a fault target or backend name: primary, secondary or balancer."""
        return self.supervisor[target]

    def journal_path(self, name: str) -> Path:
        return self.journals / f"{name}.jsonl"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Cluster:
        # Every process started from here inherits it: a big swarm needs thousands of sockets in
        # the Toxiproxy, the build and the backends.
        self.open_files_limit = raise_open_files_limit()
        self.root.mkdir(parents=True, exist_ok=True)
        self.journals.mkdir(parents=True, exist_ok=True)
        for name in ("balancer", "admin", "lb", *BACKEND_NAMES, *(f"{n}_proxy" for n in BACKEND_NAMES)):
            self.ports[name] = allocate_port(HOST)
        self._started = True
        try:
            self._start_toxiproxy()
            for name in BACKEND_NAMES:
                self._start_backend(name)
            assert self.toxiproxy is not None
            for name in BACKEND_NAMES:
                self.toxiproxy.create(
                    self.proxy_name(name),
                    listen=f"{HOST}:{self.ports[name + '_proxy']}",
                    upstream=f"{HOST}:{self.ports[name]}",
                )
            self.write_config(self.spec.limits, self.spec.keepalive)
            self._start_balancer()
            self.toxiproxy.create(
                self.proxy_name("lb"), listen=f"{HOST}:{self.ports['lb']}", upstream=f"{HOST}:{self.ports['balancer']}"
            )
        except BaseException:
            self.close()
            raise
        return self

    def _start_toxiproxy(self) -> None:
        if self.spec.toxiproxy_url:
            url = self.spec.toxiproxy_url
            try:
                self.toxiproxy = ToxiproxyHandle(url)
                self.toxiproxy.version()
            except NotToxiproxy as exc:
                raise ToxiproxyUnusable(f"toxiproxy at {url} answers, but is not a Toxiproxy server: {exc}") from None
            except ValueError as exc:
                raise ToxiproxyUnusable(str(exc)) from None
            except (OSError, http.client.HTTPException) as exc:
                # URLError is an OSError; an HTTPException is a peer that does not speak HTTP.
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                raise ToxiproxyUnusable(f"toxiproxy at {url} does not answer: {reason}") from None
            return
        port = allocate_port(HOST)
        self.ports["toxiproxy"] = port
        self.supervisor.spawn(
            "toxiproxy",
            [sys.executable, "-m", "harness.toxiproxy", "--host", HOST, "--port", str(port)],
            ready=ReadyCheck(HOST, port),
            ready_timeout=self.spec.ready_timeout_s,
        )
        self.toxiproxy = ToxiproxyHandle(f"http://{HOST}:{port}")

    def _start_backend(self, name: str) -> None:
        port = self.ports[name]
        self.supervisor.spawn(
            name,
            [
                sys.executable, "-m", "harness.backend",
                "--host", HOST, "--port", str(port),
                "--instance-name", name,
                "--journal", str(self.journal_path(name)),
            ],
            ready=ReadyCheck(HOST, port),
            ready_timeout=self.spec.ready_timeout_s,
        )  # fmt: skip

    def write_config(self, limits: Limits, keepalive: Keepalive) -> None:
        self.config = {
            "listen": f"{HOST}:{self.ports['balancer']}",
            "admin": f"{HOST}:{self.ports['admin']}",
            "backends": [{"name": name, "url": f"ws://{HOST}:{self.ports[name + '_proxy']}"} for name in BACKEND_NAMES],
            "failover": {
                "max_attempts": limits.max_attempts,
                "window_s": limits.window_s,
                "min_interval_s": limits.min_interval_s,
            },
            "ping_interval_s": keepalive.ping_interval_s,
            "ping_timeout_s": keepalive.ping_timeout_s,
            "drain_timeout_s": limits.drain_timeout_s,
        }
        # Sent only when a scenario sets them (its boundary probes, its upgrade faults); otherwise
        # the build's default.
        for key in ("max_size", "max_connections", "open_timeout_s"):
            if getattr(limits, key):
                self.config[key] = getattr(limits, key)
        # Whole or not at all: a full disk must not leave a torn config for the build's next start.
        write_atomic(self.config_path, json.dumps(self.config, indent=2).encode())
        self.spec.limits = limits
        self.spec.keepalive = keepalive

    def _start_balancer(self) -> None:
        try:
            argv = expand_command(self.spec.balancer_cmd, config=str(self.config_path))
        except ValueError as exc:
            raise BuildFailed(f"balancer command {self.spec.balancer_cmd!r}: {exc}") from None
        try:
            self.supervisor.spawn(
                "balancer",
                argv,
                ready=ReadyCheck(HOST, self.ports["balancer"]),
                ready_timeout=self.spec.ready_timeout_s,
                stdout_name="balancer.stdout",
                stderr_name="balancer.stderr",
            )
        except ProcessFailed as exc:
            raise BuildFailed(str(exc)) from None

    def reconfigure(self, limits: Limits, keepalive: Keepalive) -> bool:
        """Restarts the balancer if the scenario needs other limits. Returns whether it did."""
        if limits == self.spec.limits and keepalive == self.spec.keepalive and self.balancer.running:
            return False
        self.write_config(limits, keepalive)
        self.balancer.stop()
        try:
            self.balancer.start()
            self.balancer.wait_ready(self.spec.ready_timeout_s)
        except ProcessFailed as exc:
            raise BuildFailed(str(exc)) from None
        return True

    # -- observation --------------------------------------------------------------------------
    def status(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The build's /status, or None if it has none (a black-box build)."""
        try:
            data = http_get_json(f"{self.admin_url}/status", timeout=timeout)
        except (OSError, ValueError, urllib.error.URLError, http.client.HTTPException):
            # Not answering, or answering something that is not HTTP/JSON: no usable /status.
            return None
        return data if isinstance(data, dict) else None

    def balancer_sockets(self, table: SocketTable | None = None) -> int:
        pid = self.balancer.pid
        return process_tree_sockets(pid, table or read_socket_table()) if pid and self.balancer.running else 0

    def backend_open_connections(self, table: SocketTable | None = None) -> dict[str, int]:
        table = table or read_socket_table()
        out = {}
        for name in BACKEND_NAMES:
            proc = self.process(name)
            out[name] = established_on_port(proc.pid, self.ports[name], table) if proc.pid and proc.running else 0
        return out

    def _backend_journal_health(self, timeout: float) -> dict[str, dict[str, Any] | str]:
        """Each running backend's answer to ``GET /journal``, or why it gave none."""
        out: dict[str, dict[str, Any] | str] = {}
        for name in BACKEND_NAMES:
            if not self.process(name).running:
                continue
            try:
                health = http_get_json(f"http://{HOST}:{self.ports[name]}{JOURNAL_PATH}", timeout=timeout)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                out[name] = str(exc)
                continue
            out[name] = health if isinstance(health, dict) else f"answered {health!r}, not a JSON object"
        return out

    def backend_unjournaled_closes(self) -> dict[str, int | None]:
        """Per running backend, the connections whose close it has not journaled yet (None: it did not say).

        Its sockets can be gone while its handler still runs; the journal, which ``cleanup_complete``
        judges, says closed only once the handler has ended, so the quiesce waits for this too."""
        out: dict[str, int | None] = {}
        for name, health in self._backend_journal_health(timeout=1.0).items():
            count = health.get("open") if isinstance(health, dict) else None
            out[name] = count if isinstance(count, int) else None
        return out

    def journal_losses(self) -> list[str]:
        """Why a running backend's journal lost lines (a full disk under the cluster), or []."""
        lost = []
        for name, health in self._backend_journal_health(timeout=2.0).items():
            if isinstance(health, str):
                lost.append(f"backend {name} did not say whether its journal is whole: {health}")
            elif health.get("lost"):
                lost.append(f"backend {name}'s journal: {health['lost']}; {health.get('dropped')} line(s) dropped")
        return lost

    def disk_full(self) -> str | None:
        """Says so when the cluster's journals and logs are on a full file system, else None.

        The build's event lines and the backends' stdout/stderr go straight to files there; a line
        lost on a full disk leaves no other trace, so a full file system is the evidence."""
        try:
            fs = os.statvfs(self.root)
        except OSError:
            return None
        # Root may write into the blocks reserved for it; anyone else stops at f_bavail.
        free_blocks = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail
        if free_blocks >= FULL_DISK_BLOCKS:
            return None
        free = free_blocks * fs.f_frsize
        return f"disk full: {free} bytes free on the file system of the cluster's journals and logs ({self.root})"

    def backend_alive(self) -> dict[str, bool]:
        return {name: self.process(name).running for name in BACKEND_NAMES}

    # -- healing ------------------------------------------------------------------------------
    def heal_all(self) -> None:
        """Every fault healed: processes up and running, proxies enabled without toxics."""
        for name in ("toxiproxy", *BACKEND_NAMES):
            if name in self.supervisor.procs:
                self._ensure_running(self.supervisor[name])
        assert self.toxiproxy is not None
        for link in ("lb", *BACKEND_NAMES):
            self.toxiproxy.heal(self.proxy_name(link))
        self._ensure_running(self.balancer, build=True)

    def _ensure_running(self, proc: ManagedProcess, build: bool = False) -> None:
        if proc.paused:
            proc.resume()
        if not proc.running:
            try:
                proc.start()
                proc.wait_ready(self.spec.ready_timeout_s)
            except ProcessFailed as exc:
                raise (BuildFailed(str(exc)) if build else exc) from None

    def wait_balancer_sees_backends_healthy(self, timeout: float = 10.0) -> bool:
        """With /status, waits until the build marks every backend healthy again."""
        if self.status() is None:
            return False

        def all_healthy() -> bool:
            st = self.status()
            backends = (st or {}).get("backends") or []
            return bool(backends) and all(b.get("healthy") for b in backends if isinstance(b, dict))

        with contextlib.suppress(TimeoutError):
            wait_until(all_healthy, timeout=timeout, interval=0.05, what="backends healthy")
            return True
        return False

    def close(self) -> None:
        if self.toxiproxy is not None and self.spec.toxiproxy_url:
            for link in ("lb", *BACKEND_NAMES):
                self.toxiproxy.destroy(self.proxy_name(link))
        self.supervisor.close()
        for port in self.ports.values():
            release_port(port)

    def __enter__(self) -> Cluster:
        return self.start() if not self._started else self

    def __exit__(self, *exc: object) -> None:
        self.close()
