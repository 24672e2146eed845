"""Helpers shared by the toxiproxy test modules: the in-process server thread, upstream
servers, socket helpers and a raw API client. (Imported by name rather than from
conftest, whose module name other directories' conftest files share.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import requests
from toxiproxy import Toxiproxy
from toxiproxy.proxy import Proxy
from websockets.sync.server import Server, ServerConnection, serve

from harness.ports import allocate_port
from harness.toxiproxy import ToxiproxyServer
from harness.toxiproxy.addresses import HostPolicy
from harness.waiting import wait_until

T = TypeVar("T")
DEADLINE = 5.0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Wait until ``predicate`` holds (state, not timing); TimeoutError naming ``what`` if not."""
    wait_until(predicate, timeout=timeout, interval=0.005, what=what)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def free_port() -> int:
    # Locked for this test process (harness.ports), and outside the ephemeral range: a port
    # picked by binding 0 and released was taken by another process's outgoing connection
    # before the balancer under test could bind it (seen under a mass-failover bench).
    return allocate_port()


def connect(port: int, timeout: float = DEADLINE, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        data = sock.recv(min(size, 1 << 20))
        if not data:
            raise ConnectionError(f"EOF with {size} bytes still expected")
        chunks.append(data)
        size -= len(data)
    return b"".join(chunks)


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def evidence(api: Api, proxy: str, toxic: str) -> dict[str, Any]:
    """What one toxic has done so far (the embedded server's evidence extension)."""
    reply = api.request("GET", f"/wschaos/proxies/{proxy}/toxics/{toxic}/evidence")
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def is_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
    except ConnectionRefusedError:
        return True
    return False


class Api:
    """Thin raw-HTTP client for the API under test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", DEADLINE)
        return self.session.request(method, self.url + path, **kwargs)

    def create(self, name: str, upstream: str, listen: str = "127.0.0.1:0", **extra: Any) -> dict[str, Any]:
        reply = self.request("POST", "/proxies", json={"name": name, "upstream": upstream, "listen": listen, **extra})
        assert reply.status_code == 201, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def add_toxic(self, proxy: str, **body: Any) -> dict[str, Any]:
        reply = self.request("POST", f"/proxies/{proxy}/toxics", json=body)
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        reply = self.request("DELETE", f"/proxies/{proxy}/toxics/{toxic}")
        assert reply.status_code == 204, reply.text

    def close(self) -> None:
        self.session.close()


class ServerThread:
    """A ToxiproxyServer on a private event loop in a daemon thread."""

    def __init__(
        self,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
        extensions: bool = True,
        policy: HostPolicy | None = None,
    ) -> None:
        self.loop = loop_factory()
        self.server = ToxiproxyServer("127.0.0.1", 0, extensions=extensions, policy=policy)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.call(self.server.start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = DEADLINE) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return self.call(run())

    def connection_count(self) -> int:
        return self.sync(lambda: sum(len(p.conns) for p in self.server.app.collection.proxies.values()))

    def stop(self) -> None:
        self.call(self.server.close())
        pending = self.sync(lambda: [t for t in asyncio.all_tasks(self.loop) if t is not asyncio.current_task()])
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(DEADLINE)
        self.loop.close()
        assert not pending, f"tasks left behind: {pending}"

    @property
    def url(self) -> str:
        return self.server.url


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        server: Upstream = self.server  # type: ignore[assignment]
        server.accepted.append(sock)
        try:
            if server.greeting is not None:
                sock.sendall(server.greeting)
                if server.close_after_greeting:
                    return
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                server.received += len(data)
                if server.echo:
                    sock.sendall(data)
        except OSError as exc:
            server.errors.append(exc)
        finally:
            server.closed += 1


class Upstream(socketserver.ThreadingTCPServer):
    """Threaded TCP upstream: echoes by default; records what it saw."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, greeting: bytes | None = None, close_after_greeting: bool = False, echo: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.greeting = greeting
        self.close_after_greeting = close_after_greeting
        self.echo = echo
        self.accepted: list[socket.socket] = []
        self.errors: list[OSError] = []
        self.received = 0
        self.closed = 0
        self._thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        for sock in self.accepted:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()
        self._thread.join(DEADLINE)


@contextlib.contextmanager
def ws_server_thread(handler: Callable[[ServerConnection], None]) -> Iterator[Server]:
    """A real WebSocket server (no compression, so frames cross a proxy as they are) in a thread."""
    server = serve(handler, "127.0.0.1", 0, compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(DEADLINE)


def proxy_to(server: Server, name: str) -> Proxy:
    """A proxy named ``name`` in front of ``server``, created through the official client."""
    host, port = server.socket.getsockname()[:2]
    return Toxiproxy().create(upstream=f"{host}:{port}", name=name)
