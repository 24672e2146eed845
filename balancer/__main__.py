"""``python -m balancer [CONFIG.json] [flags]``: the reference balancer."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from balancer.config import Config, ConfigError, config_from_args
from balancer.server import Balancer, BindError

EXIT_CONFIG = 2


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def _serve(config: Config) -> None:
    stop = asyncio.Event()
    drain = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before listening: harnesses count the build as ready as soon as listen
    # accepts TCP and may send SIGTERM at once. With the default disposition
    # still in place that kills the process (-15) instead of a clean exit 0.
    # A signal during start() only sets ``stop``; run() finishes starting and
    # then shuts down straight away.
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP drains (docs/contract.md, section 8a); its default disposition would kill us.
    loop.add_signal_handler(signal.SIGHUP, drain.set)
    try:
        await Balancer(config).run(stop, drain)
    finally:
        # Closing the loop restores SIGTERM's default disposition, so a
        # repeated SIGTERM during the last moments of teardown would again
        # kill the process with -15; the shutdown is already under way, so
        # ignore it. (SIGINT goes back to KeyboardInterrupt, which main() turns
        # into exit 0, and a second Ctrl-C can still break a stuck teardown.)
        for sig in (*_STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


# The cyclic GC's first threshold, up from CPython's 700 allocations (the others stay 10, 10).
# A mass failover allocates a few hundred objects per session in a burst; at 700 the
# collector ran hundreds of times and walked every session's objects in full collections,
# about a quarter of the balancer's CPU while re-homing (docs/performance.md, "Mass failover").
GC_FIRST_THRESHOLD = 20_000


def tune_gc() -> None:
    """Fewer, larger collections, and none over what exists before serving.

    Freezing moves the interpreter's own objects (modules, classes, config) to the
    permanent generation, so no collection walks them again. Cyclic garbage from
    sessions is still collected: young collections still run, only less often.
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_FIRST_THRESHOLD, second, third)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``Config.event_loop`` asks for; None means asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("event_loop: uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # websockets logs every failed handshake at INFO/ERROR; keep stderr readable.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        config = config_from_args(argv)
        new_loop = loop_factory(config.event_loop)
    except ConfigError as exc:
        print(f"balancer: config error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    tune_gc()
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(_serve(config))
    except BindError as exc:
        print(f"balancer: config error: {exc.strerror}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
