"""A swarm of game clients in one asyncio process.

    python -m harness.swarm --url URL --clients N [--prefix c] [--id-offset 0] [--rate HZ]
        [--history-dir DIR] [--ready-timeout S] [--connect-spread S] [--duration S]

Prints ``READY <n>`` once every client has had its first welcome (``NOT READY <k>/<n>`` and exit 3
after --ready-timeout), plays until SIGTERM/SIGINT or --duration, then stops every client with a
close 1000 within a bounded deadline and exits 0. Histories go to
``DIR/clients-<prefix>-<pid>.jsonl``, one writer per process, ``process`` = the client id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

from harness.client import GameClient, NullRecorder, Recorder
from harness.history import HistoryWriter

EXIT_NOT_READY = 3


def swarm_argv(
    url: str,
    clients: int,
    *,
    history_dir: Path,
    prefix: str = "c",
    rate_hz: float = 10.0,
    id_offset: int = 0,
    ready_timeout_s: float = 15.0,
    connect_spread_s: float = 0.0,
) -> list[str]:
    """The command that runs a swarm as its own process, as the runner and the plugin start it."""
    return [
        sys.executable, "-m", "harness.swarm",
        "--url", url,
        "--clients", str(clients),
        "--prefix", prefix,
        "--rate", str(rate_hz),
        "--id-offset", str(id_offset),
        "--history-dir", str(history_dir),
        "--ready-timeout", str(ready_timeout_s),
        "--connect-spread", str(connect_spread_s),
    ]  # fmt: skip


def client_ids(n: int, prefix: str = "c", offset: int = 0) -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(offset, offset + n)]


async def run_swarm(
    url: str,
    n: int,
    *,
    prefix: str = "c",
    id_offset: int = 0,
    rate: float = 5.0,
    recorder: Recorder | None = None,
    ready_timeout: float = 10.0,
    connect_spread: float = 0.0,
    duration: float | None = None,
    close_timeout: float = 2.0,
    open_timeout: float = 5.0,
    ping_interval: float | None = None,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
) -> int:
    """Runs the swarm until `stop` is set (or `duration` passes). Returns the exit code."""
    stream = out if out is not None else sys.stdout
    stop = stop or asyncio.Event()
    rec = recorder or NullRecorder()
    clients = [
        GameClient(
            url,
            cid,
            recorder=rec,
            rate=rate,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_interval,
        )
        for cid in client_ids(n, prefix, id_offset)
    ]
    # Each client stops itself within close_timeout (+1 s guard); the extra second covers the
    # scheduling of hundreds of closes at once. Past it, stragglers are cancelled.
    stop_deadline = close_timeout + 3.0
    code = 0

    async def start(i: int, client: GameClient) -> None:
        # Spreading the first connects avoids a SYN burst beyond the listen backlog.
        if connect_spread > 0 and n > 1:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(connect_spread * i / n):
                    await stop.wait()
        await client.run()

    async def supervise() -> None:
        nonlocal code
        try:
            async with asyncio.timeout(ready_timeout):
                await asyncio.gather(*(c.first_welcome.wait() for c in clients))
            _say(stream, f"READY {n}")
        except TimeoutError:
            ready = sum(c.first_welcome.is_set() for c in clients)
            _say(stream, f"NOT READY {ready}/{n}")
            code = EXIT_NOT_READY
            stop.set()
            return
        if duration is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    await stop.wait()
            stop.set()

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(start(i, c)) for i, c in enumerate(clients)]
        supervisor = tg.create_task(supervise())
        await stop.wait()
        for c in clients:
            c.request_stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(stop_deadline):
                await asyncio.gather(*(c.stopped.wait() for c in clients))
        # Only stragglers are still running; they record `stopped` with hung=true.
        for t in tasks:
            t.cancel()
        supervisor.cancel()
    hung = sum(c.hung for c in clients)
    acked = sum(len(c.book.acked) for c in clients)
    sent = sum(c.book.sent for c in clients)
    _say(stream, f"STOPPED {n} acked={acked} sent={sent} hung={hung}")
    return code


def _say(stream: TextIO, line: str) -> None:
    print(line, file=stream, flush=True)


async def _amain(args: argparse.Namespace) -> int:
    writer: HistoryWriter | None = None
    if args.history_dir:
        path = Path(args.history_dir) / f"clients-{args.prefix}-{os.getpid()}.jsonl"
        writer = HistoryWriter(path, f"swarm-{args.prefix}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await run_swarm(
            args.url,
            args.clients,
            prefix=args.prefix,
            id_offset=args.id_offset,
            rate=args.rate,
            recorder=writer,
            ready_timeout=args.ready_timeout,
            connect_spread=args.connect_spread,
            duration=args.duration,
            close_timeout=args.close_timeout,
            open_timeout=args.open_timeout,
            ping_interval=args.ping_interval,
            stop=stop,
        )
    finally:
        if writer is not None:
            writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.swarm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="ws://HOST:PORT (the /play path is added)")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--prefix", default="c")
    parser.add_argument("--id-offset", type=int, default=0)
    parser.add_argument("--rate", type=float, default=5.0, help="moves per second per client")
    parser.add_argument("--history-dir", default=None)
    parser.add_argument("--ready-timeout", type=float, default=10.0)
    parser.add_argument(
        "--connect-spread", type=float, default=0.0, help="spread the first connects over this many seconds"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: until SIGTERM/SIGINT)"
    )
    parser.add_argument("--close-timeout", type=float, default=2.0)
    parser.add_argument("--open-timeout", type=float, default=5.0)
    parser.add_argument("--ping-interval", type=float, default=None, help="client-side keepalive (default: off)")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be >= 1")
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    return asyncio.run(_amain(args))


if __name__ == "__main__":
    sys.exit(main())
