"""Embedded Toxiproxy 2.x compatible fault-injection proxy (see docs/architecture.md).

Run it with ``python -m harness.toxiproxy --host 127.0.0.1 --port 8474``, or embed it::

    async with serve("127.0.0.1", 0) as server:
        ...  # server.url, server.port

Any Toxiproxy client (toxiproxy-python, the Go and Node clients) works against it.
"""

from .api import VERSION
from .server import ToxiproxyServer, serve

__all__ = ["VERSION", "ToxiproxyServer", "serve"]
