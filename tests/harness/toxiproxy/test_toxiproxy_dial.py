"""An upstream that goes away while the proxy is still dialling it.

The proxy connects to the upstream, then starts the links on a later turn of its event
loop. Whatever the upstream does in between (closes, resets) arrives before the links
exist. A SIGKILLed backend does exactly that to a connection it had not accepted yet.
Found by ``make flake-check``: a client whose upstream died that way waited for ever.

The tests hold the dial open until the upstream's goodbye has reached the proxy, so the
window that a loaded machine opens by chance is open every time.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
from toxiproxy_support import DEADLINE, Api, ServerThread, Upstream, connect, port_of, read_to_eof

from harness.toxiproxy.link import Side


def hold_dial_until(
    tp: ServerThread, name: str, settled: Callable[[Side], bool], after_connect: Callable[[], None]
) -> None:
    """Make proxy ``name`` finish each dial only once ``settled(upstream side)`` holds."""
    proxy = tp.server.app.collection.proxies[name]
    real_dial = proxy.dial

    async def held_dial(side: Side) -> None:
        await real_dial(side)
        after_connect()
        async with asyncio.timeout(DEADLINE):
            # A Side signals nothing it could be awaited on, and its close is delivered by
            # this very loop: yield turns to it until the state shows.
            while not settled(side):  # noqa: ASYNC110
                await asyncio.sleep(0)

    tp.sync(lambda: setattr(proxy, "dial", held_dial))


@pytest.mark.parametrize("greeting", [b"", b"last words\n"], ids=["silent", "greeting"])
def test_upstream_that_closes_before_the_links_exist_closes_the_client(
    tp: ServerThread, api: Api, make_upstream: Callable[..., Upstream], greeting: bytes
) -> None:
    upstream = make_upstream(greeting=greeting, close_after_greeting=True)
    port = port_of(api.create("p", upstream.address)["listen"])
    hold_dial_until(tp, "p", lambda side: side.early_eof or side.lost, after_connect=lambda: None)

    with connect(port) as client:
        # What the upstream said before closing arrives, then EOF; before the fix the
        # client waited for ever (read_to_eof's timeout).
        assert read_to_eof(client) == greeting


def test_upstream_reset_before_the_links_exist_closes_the_client(tp: ServerThread, api: Api) -> None:
    # A listener that never accepts: closing it resets the connection waiting in its
    # backlog, which is what the kernel does when a backend is SIGKILLed.
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    port = port_of(api.create("p", address)["listen"])
    hold_dial_until(tp, "p", lambda side: side.lost, after_connect=listener.close)

    with connect(port) as client:
        try:
            leftover = read_to_eof(client)
        except ConnectionResetError:
            leftover = b""
        assert leftover == b""
