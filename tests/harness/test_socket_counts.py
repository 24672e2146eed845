"""Counting a process's sockets from one read of /proc/net agrees with psutil, which reads it per call."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from harness.cluster import established_on_port, process_tree_sockets, read_socket_table

pytestmark = pytest.mark.skipif(read_socket_table() is None, reason="no /proc/net on this system")


@pytest.fixture
def connected() -> Iterator[tuple[socket.socket, int]]:
    """A listener with two established connections to it, all held by this process."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    accepted = [server.accept()[0] for _ in clients]
    try:
        yield server, port
    finally:
        for s in (*accepted, *clients, server):
            s.close()


def test_one_table_read_counts_what_psutil_counts(connected: tuple[socket.socket, int]) -> None:
    _, port = connected
    table = read_socket_table()
    pid = os.getpid()
    # Listener, two clients, two accepted: five inet sockets; two established on the listening port.
    assert process_tree_sockets(pid, table) == process_tree_sockets(pid) >= 5
    assert established_on_port(pid, port, table) == established_on_port(pid, port) == 2
    assert established_on_port(pid, port + 1 if port < 65535 else port - 1, table) == 0


def test_a_process_that_is_gone_holds_no_sockets() -> None:
    table = read_socket_table()
    gone = 2**22 + 17  # above any pid_max: no such process
    assert process_tree_sockets(gone, table) == 0
    assert established_on_port(gone, 80, table) == 0
