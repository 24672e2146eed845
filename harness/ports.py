"""Collision-free TCP ports for the processes a test spawns.

Binding port 0 and handing the number to a child races with every other test process doing the
same (pytest -n 2, or a certify run beside a test run). Each port handed out here is also locked
with ``flock`` on a file named after it, for the life of the allocating process, so no two live
wschaos processes can hold the same port; the kernel releases the lock if the process dies.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

# Below Linux's default ephemeral range (32768-60999), so the kernel never hands these out to
# outgoing connections while a child has yet to bind them.
PORT_RANGE = (20000, 32000)
LOCK_DIR = Path(tempfile.gettempdir()) / "wschaos-ports"

_held: dict[int, int] = {}  # port -> open lock fd, kept open to keep the lock


class NoFreePort(RuntimeError):
    pass


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same option the servers use, so a port in TIME_WAIT counts as free for them too.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def allocate_port(host: str = "127.0.0.1", *, attempts: int = 500) -> int:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
    lo, hi = PORT_RANGE
    for _ in range(attempts):
        port = rng.randrange(lo, hi)
        if port in _held:
            continue
        fd = os.open(LOCK_DIR / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                continue
            raise
        if not _bindable(host, port):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            continue
        _held[port] = fd
        return port
    raise NoFreePort(f"no free port in {lo}-{hi} after {attempts} attempts")


def release_port(port: int) -> None:
    fd = _held.pop(port, None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
