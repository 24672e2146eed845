"""Fixtures for the embedded Toxiproxy tests.

The server runs in-process on its own event loop in a background thread, because the
clients under test (requests, toxiproxy-python, plain sockets) block. Upstreams are
small threaded TCP servers. After every test all proxies are deleted and the test
fails if any proxied connection outlives that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import toxiproxy.api
import uvloop
from toxiproxy_support import DEADLINE, Api, ServerThread, Upstream, wait_for


# Both loops: `python -m harness.toxiproxy` runs on uvloop when it is installed.
@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def server_thread(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    st = ServerThread(factory)
    st.start()
    yield st
    st.stop()


@pytest.fixture
def tp(server_thread: ServerThread, caplog: pytest.LogCaptureFixture) -> Iterator[ServerThread]:
    """The server, empty at the start of the test and checked for leaks at the end.

    Also fails the test if the server (or asyncio on its behalf) logged an error: that
    is where an unexpected exception or traceback would surface.
    """
    toxiproxy.api.APIConsumer.host = "127.0.0.1"
    toxiproxy.api.APIConsumer.port = server_thread.server.port
    yield server_thread
    for name in requests.get(server_thread.url + "/proxies", timeout=DEADLINE).json():
        requests.delete(f"{server_thread.url}/proxies/{name}", timeout=DEADLINE)
    try:
        wait_for(lambda: server_thread.connection_count() == 0, "every proxied connection to close")
    except TimeoutError:
        pytest.fail(f"proxied connections leaked: {server_thread.connection_count()} still open")
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("asyncio", "harness")
    ]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
def echo() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture
def make_upstream() -> Iterator[Callable[..., Upstream]]:
    made: list[Upstream] = []

    def make(**kwargs: Any) -> Upstream:
        server = Upstream(**kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def api(tp: ServerThread) -> Iterator[Api]:
    client = Api(tp.url)
    yield client
    client.close()
