"""``python -m harness.toxiproxy``: run the server until SIGTERM or SIGINT.

Prints ``toxiproxy listening on HOST:PORT`` once the API accepts connections (with
``--port 0`` that line is how a parent process learns the port). Go Toxiproxy's
single-dash flags (``-host``, ``-port``, ``-config``, ``-version``) are accepted too.

The API listens on loopback by default, and proxies may only listen on and dial loopback hosts
(127.0.0.0/8, ::1, ``localhost``): anything else is refused with a 400 unless ``--allow-host HOST``
(repeatable) or ``--allow-any-host`` allows it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import NoReturn

from harness.eventloop import loop_factory
from harness.history import say

from .addresses import HostPolicy
from .api import VERSION
from .errors import ApiError
from .server import ToxiproxyServer

log = logging.getLogger("harness.toxiproxy")
# uvloop roughly halves the per-hop cost of a proxied round trip (docs/performance.md);
# WSCHAOS_TOXIPROXY_LOOP=asyncio forces the standard loop.
TOXIPROXY_LOOP_ENV = "WSCHAOS_TOXIPROXY_LOOP"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the caller is usually a program.
        self.exit(2, f"toxiproxy: error: {message} (try --help)\n")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} out of range 0-65535")
    return value


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m harness.toxiproxy", description="Toxiproxy 2.x compatible fault-injection proxy.")
    parser.add_argument("--host", "-host", default="127.0.0.1", help="API listen address (default 127.0.0.1)")
    parser.add_argument("--port", "-port", type=_port, default=8474, help="API port; 0 picks a free one (default 8474)")
    parser.add_argument(
        "--config", "-config", metavar="FILE", help="JSON file of proxies to create at startup, as for /populate"
    )
    parser.add_argument("--seed", "-seed", type=int, help="seed the toxics' random draws (toxicity, jitter, slicer)")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="also let proxies listen on or dial HOST (repeatable; default: loopback only)",
    )
    parser.add_argument(
        "--allow-any-host", action="store_true", help="let proxies listen on and dial any host (an open relay)"
    )
    parser.add_argument("--version", "-version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--no-extensions",
        action="store_true",
        help="behave as a stock Toxiproxy 2.x: no /wschaos routes, extension fields ignored (to test clients)",
    )
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace, config: bytes | None) -> int:
    loop = asyncio.get_running_loop()
    # Tracebacks are not an interface: anything the loop catches is one log line.
    loop.set_exception_handler(lambda _loop, ctx: log.error("%s: %r", ctx.get("message"), ctx.get("exception")))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    policy = HostPolicy.of(args.allow_host, args.allow_any_host)
    server = ToxiproxyServer(args.host, args.port, extensions=not args.no_extensions, policy=policy)
    try:
        await server.start()
    except OSError as exc:
        print(f"toxiproxy: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        if config is not None:
            try:
                names = await server.populate(config)
                log.info("populated %d proxies from %s", len(names), args.config)
            except (ApiError, ValueError) as exc:
                log.error("failed to populate proxies from %s: %s", args.config, exc)
        host = f"[{args.host}]" if ":" in args.host else args.host
        say(sys.stdout, f"toxiproxy listening on {host}:{server.port}")
        await stop.wait()
    finally:
        await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.version:
        print(VERSION)
        return 0
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "WARNING").upper()
        if os.environ.get("LOG_LEVEL", "").upper() in ("DEBUG", "INFO", "WARNING", "ERROR")
        else "WARNING",
        format="toxiproxy: %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.seed is not None:
        import random

        random.seed(args.seed)
    config: bytes | None = None
    if args.config:
        try:
            with open(args.config, "rb") as handle:
                config = handle.read()
        except OSError as exc:
            # Go Toxiproxy logs an unreadable config file and carries on serving.
            log.error("error reading config file %s: %s", args.config, exc.strerror or exc)
    try:
        with asyncio.Runner(loop_factory=loop_factory(TOXIPROXY_LOOP_ENV)) as runner:
            return runner.run(_run(args, config))
    except KeyboardInterrupt:
        # A second Ctrl-C during shutdown: still no traceback.
        return 0


if __name__ == "__main__":
    sys.exit(main())
