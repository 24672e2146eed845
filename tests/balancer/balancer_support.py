"""Helpers for the balancer tests: process handles, clients, deadline-based waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server

from harness.ports import allocate_port
from harness.waiting import wait_until_async

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# Short timings keep the suite fast; they are the "ping 0.2-0.5 s" of the brief.
FAST: dict[str, Any] = {
    "failover": {"max_attempts": 3, "window_s": 60.0, "min_interval_s": 0.2},
    "ping_interval_s": 0.3,
    "ping_timeout_s": 0.3,
    "close_timeout_s": 0.3,
    "open_timeout_s": 1.0,
    "health_interval_s": 0.2,
}


# The balancer's default keepalive (20 s / 20 s), for tests that are not about keepalive.
# FAST's 0.3 s pong deadline fails healthy connections with 1011 whenever a process is
# starved of CPU for 0.3 s, which a 2-core machine shared by several test runs does
# (seen at load 15-17: a new client in an idle test process got 1011), and under a burst
# a pong also waits behind the megabytes queued ahead of it.
# tests/balancer/test_balancer_failover.py covers keepalive.
DEFAULT_KEEPALIVE: dict[str, Any] = {"ping_interval_s": 20.0, "ping_timeout_s": 20.0}


def free_port() -> int:
    # Locked for this test process (harness.ports), and outside the ephemeral range: a port
    # picked by binding 0 and released was taken by another process's outgoing connection
    # before the balancer under test could bind it (seen under a mass-failover bench).
    return allocate_port()


async def wait_for(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 5.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """harness.waiting.wait_until_async, failing the test (AssertionError) at the deadline."""
    try:
        await wait_until_async(predicate, timeout=timeout, interval=interval, what=what)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class BalancerProc:
    proc: subprocess.Popen[bytes]
    listen: int
    admin: int
    stdout_path: Path
    stderr_path: Path
    config: dict[str, Any] = field(default_factory=dict)
    _baseline_fds: int | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.listen}"

    def _get(self, path: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}", headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """GET on the admin endpoint; sends the config's admin_token as a bearer token unless
        ``headers`` are given (then exactly those are sent)."""
        if headers is None:
            token = self.config.get("admin_token")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await asyncio.to_thread(self._get, path, headers)

    async def status(self) -> dict[str, Any]:
        code, body = await self.get("/status")
        assert code == 200, body
        return dict(json.loads(body))

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout_path.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    async def wait_empty(self, timeout: float = 5.0) -> dict[str, Any]:
        last: dict[str, Any] = {}

        async def empty() -> bool:
            nonlocal last
            last = await self.status()
            return (
                last["sessions"] == 0
                and all(v == 0 for v in last["tables"].values())
                and all(b["connection_count"] == 0 for b in last["backends"])
            )

        try:
            await wait_for(empty, timeout, what="an empty /status")
        except AssertionError:
            raise AssertionError(f"/status never emptied: {last}") from None
        assert last["errors"]["concurrent_recv"] == 0
        return last

    def open_sockets(self) -> list[Any]:
        """The balancer process's inet sockets, listening ones included (psutil).

        Slow on a busy machine (it parses the whole system's /proc/net/tcp, about 0.1 s
        with a few thousand sockets around), so the leak check counts descriptors instead.
        """
        return list(psutil.Process(self.proc.pid).net_connections(kind="inet"))

    def open_fds(self) -> int:
        """The balancer process's open file descriptors: its sockets plus a fixed few."""
        return int(psutil.Process(self.proc.pid).num_fds())

    async def baseline_fds(self, timeout: float = 5.0) -> int:
        """The leak baseline: open descriptors while only listening sockets are open.

        Measured once per process (the first call waits for an idle moment), so that a
        case that leaks cannot raise the baseline of the next.
        """
        if self._baseline_fds is None:
            await wait_until_async(
                lambda: all(c.status == psutil.CONN_LISTEN for c in self.open_sockets()),
                timeout=timeout,
                what="the balancer to hold only its listening sockets",
            )
            self._baseline_fds = self.open_fds()
        return self._baseline_fds

    async def assert_recovered(self, baseline_fds: int, timeout: float = 5.0) -> None:
        """The check after every bad-input case: /status tables are empty, the process's
        descriptors (so its sockets) are back to ``baseline_fds`` (see baseline_fds), and a
        new normal client is still served (backends answer as echo_backend does)."""
        await self.wait_empty(timeout)
        try:
            await wait_until_async(
                lambda: self.open_fds() == baseline_fds,
                timeout=timeout,
                what=f"the balancer's descriptors to return to {baseline_fds}",
            )
        except TimeoutError:
            raise AssertionError(
                f"descriptor leak: {baseline_fds} at baseline, {self.open_fds()} now; sockets: {self.open_sockets()}"
            ) from None
        assert self.proc.poll() is None, f"balancer exited with {self.proc.returncode}: {self.stderr()[-2000:]}"
        try:
            async with client(self.url + "/after-case") as ws:
                await ws.send("still serving?")
                assert (await recv_json(ws))["msg"] == "still serving?"
        except Exception as exc:
            failed = [e for e in self.events() if e["event"] == "upstream_connect_failed"][-3:]
            raise AssertionError(f"a new client was not served: {exc!r}; last connect failures: {failed}") from exc
        await self.wait_empty(timeout)

    async def backend_count(self, name: str) -> int:
        st = await self.status()
        return next(b["connection_count"] for b in st["backends"] if b["name"] == name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


async def wait_tcp(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    async def accepts() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited early with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
        return True

    await wait_for(accepts, timeout, what=f"port {port} to accept TCP")


def spawn(args: list[str], stdout: Any, stderr: Any) -> subprocess.Popen[bytes]:
    """Start a child with the repo importable; sync so fixtures can call it."""
    return subprocess.Popen(args, stdout=stdout, stderr=stderr, cwd=REPO, env=child_env())


async def launch_balancer(
    directory: Path, name: str, backends: list[tuple[str, str]], **overrides: Any
) -> BalancerProc:
    """Start ``python -m balancer`` with FAST timings plus ``overrides`` and wait until it listens.

    Its config, stdout and stderr are ``directory/NAME.json``, ``.stdout`` and ``.stderr``. The
    caller owns the process (``BalancerProc.stop``), also when this raises.
    """
    listen, admin = free_port(), free_port()
    cfg: dict[str, Any] = {
        **FAST,
        "listen": f"127.0.0.1:{listen}",
        "admin": f"127.0.0.1:{admin}",
        "backends": [{"name": backend, "url": url} for backend, url in backends],
    }
    for key, value in overrides.items():
        if key == "failover":
            cfg["failover"] = {**cfg["failover"], **value}
        else:
            cfg[key] = value
    admin = int(str(cfg["admin"]).rpartition(":")[2])  # overrides may set it
    path = directory / f"{name}.json"
    path.write_text(json.dumps(cfg))
    out, err = directory / f"{name}.stdout", directory / f"{name}.stderr"
    with out.open("wb") as o, err.open("wb") as e:
        proc = spawn([sys.executable, "-m", "balancer", str(path)], o, e)
    bp = BalancerProc(proc, listen, admin, out, err, cfg)
    try:
        await wait_tcp(listen, 10.0, proc)
    except AssertionError:
        bp.stop()
        raise AssertionError(f"balancer did not start: {bp.stderr()}") from None
    return bp


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@dataclass
class BackendProc:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def client(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    kwargs.setdefault("open_timeout", 5)
    kwargs.setdefault("close_timeout", 2)
    async with connect(url, proxy=None, **kwargs) as ws:
        yield ws


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        msg = await ws.recv()
    assert isinstance(msg, str), msg
    return dict(json.loads(msg))


async def wait_closed_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    async with asyncio.timeout(timeout):
        await ws.wait_closed()
    return ws.close_code


# -- raw WebSocket wire (RFC 6455) for the bad-input tests -------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NO_STATUS = 1005  # never on the wire: a close frame without a code
# A fixed key keeps the upgrade request byte-for-byte reproducible; this is its RFC 6455 accept value.
UPGRADE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(path: str = "/", host: str = "127.0.0.1", extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """A valid client opening handshake, with ``extra`` header lines appended."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {UPGRADE_KEY}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in extra),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def mask(payload: bytes, key: bytes) -> bytes:
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    key: bytes = b"\x37\xfa\x21\x3d",
    declared_length: int | None = None,
) -> bytes:
    """One frame as a client writes it: masked unless told otherwise (RFC 6455 section 5.2).

    ``declared_length`` puts another length in the header than the payload has, to
    send a frame that claims more bytes than follow (a truncated or oversized frame).
    """
    length = len(payload) if declared_length is None else declared_length
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 2**16:
        head += bytes([mask_bit | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + length.to_bytes(8, "big")
    if masked:
        return head + key + mask(payload, key)
    return head + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


@dataclass(frozen=True)
class ServerFrame:
    fin: bool
    opcode: int
    payload: bytes
    rsv: int = 0

    @property
    def close_code(self) -> int | None:
        return int.from_bytes(self.payload[:2], "big") if len(self.payload) >= 2 else None


@dataclass
class RawClient:
    """A client that writes whatever bytes it is given over plain TCP, and reads frames back."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    writing_ended: bool = False

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def end_writing(self) -> None:
        self.writing_ended = True
        with contextlib.suppress(OSError):
            self.writer.write_eof()

    async def response_head(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The status code and raw head of the HTTP response; 0 if the server sent none."""
        async with asyncio.timeout(timeout):
            try:
                head = await self.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                head = exc.partial
            except ConnectionError:
                return 0, b""
        parts = head.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.1") or not parts[1].isdigit():
            return 0, head
        return int(parts[1]), head

    async def upgrade(self, path: str = "/", extra: Sequence[tuple[str, str]] = ()) -> None:
        await self.send(upgrade_request(path, extra=extra))
        status, head = await self.response_head()
        assert status == 101, head

    async def frame(self) -> ServerFrame | None:
        """The next server frame; None at EOF or reset (a dropped connection)."""
        try:
            b0, b1 = await self.reader.readexactly(2)
            assert not b1 & 0x80, "a server frame must not be masked"
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(await self.reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self.reader.readexactly(8), "big")
            payload = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return ServerFrame(bool(b0 & 0x80), b0 & 0xF, payload, rsv=(b0 >> 4) & 0x7)

    async def outcome(self, timeout: float = 5.0, reply: bool = False) -> tuple[int | None, list[ServerFrame]]:
        """Reads until the server's close frame or a dropped connection.

        Returns the close frame's code (1005 if it carried none, as RFC 6455 names that
        case) or None for a connection dropped without a close frame, and the frames that
        came before, so a test can check what was relayed. With ``reply``, answers the
        server's close frame as a well-behaved client does (else the server waits out its
        close timeout, then drops the connection).
        """
        frames: list[ServerFrame] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frame()
                if frame is None:
                    return None, frames
                if frame.opcode == OP_CLOSE:
                    if reply and not self.writing_ended:
                        await self.send(encode_frame(OP_CLOSE, frame.payload[:2]))
                    code = frame.close_code
                    return CLOSE_NO_STATUS if code is None else code, frames
                frames.append(frame)

    async def eof(self, timeout: float = 5.0) -> None:
        """Waits until the server has dropped or closed the TCP connection."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionError):
                while await self.reader.read(65536):
                    pass

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2):
                await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[RawClient]:
    raw = await RawClient.open(port)
    try:
        yield raw
    finally:
        await raw.close()


@contextlib.asynccontextmanager
async def echo_backend_server(name: str, port: int = 0, log: list[str] | None = None) -> AsyncIterator[Server]:
    """An in-process echo_backend (see its start()); closed on exit, within 2 s."""
    import echo_backend  # beside this module, like this one

    server = await echo_backend.start(name, port, log)
    try:
        yield server
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await server.wait_closed()
