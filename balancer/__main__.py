"""``python -m balancer [CONFIG.json] [flags]``: the reference balancer."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from balancer.config import Config, ConfigError, config_from_args
from balancer.server import Balancer, BindError

EXIT_CONFIG = 2


async def _serve(config: Config) -> None:
    balancer = Balancer(config)
    await balancer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await balancer.run(stop)


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
    except ConfigError as exc:
        print(f"balancer: config error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    try:
        asyncio.run(_serve(config))
    except BindError as exc:
        print(f"balancer: config error: {exc.strerror}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
