"""A swarm of game clients in one asyncio process.

    python -m harness.swarm --url URL --clients N [--prefix c] [--id-offset 0] [--rate HZ]
        [--history-dir DIR] [--ready-timeout S] [--connect-spread S] [--duration S]

A swarm of more than --clients-per-process clients (default 100) runs them in worker processes
of its own and speaks for them. Runs on uvloop when it is installed.

Prints ``READY <n>`` once every client has had its first welcome (``NOT READY <k>/<n>`` and exit 3
after --ready-timeout), plays until SIGTERM/SIGINT or --duration, then stops every client with a
close 1000 within a bounded deadline and exits 0. Histories go to
``DIR/clients-<prefix>-<pid>.jsonl``, one writer per process, ``process`` = the client id. A
history that could not be written in full (a full disk) makes it exit 4 after ``HISTORY LOST: why``
on stderr; the clients play on regardless.
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

from harness.client import CLOSE_TIMEOUT_S, GameClient, NullRecorder, Recorder
from harness.eventloop import LOOP_LAG, SWARM_START, loop_factory, measure_slowness, watch_loop_lag
from harness.history import HistoryWriter
from harness.reconnect import POLICIES, PolicyError, ReconnectPolicy

EXIT_NOT_READY = 3
#: The history could not be written in full (a full disk): the run cannot be judged from it.
#: The reason goes to stderr as ``HISTORY LOST: ...``.
EXIT_HISTORY_LOST = 4
HISTORY_LOST = "HISTORY LOST"
# One asyncio process answers the keepalive pings of this many clients; beyond that, the swarm
# splits into worker processes. 200 clients in one process cannot answer 0.5 s pings in time on a
# busy 2-core machine (docs/architecture.md, "A loaded machine").
# 100 rather than fewer: on a 2-core machine more workers only take CPU from the build under test.
CLIENTS_PER_PROCESS = 100
# How long a worker may take to start (import, connect) beyond its own --ready-timeout.
WORKER_START_MARGIN_S = 60.0


def swarm_process_name(prefix: str, pid: int) -> str:
    """The history `process` of a swarm's own records (its start and its loop lag)."""
    return f"swarm-{prefix}-{pid}"


#: Beyond this many clients, a swarm's stop is a burst of closing handshakes the build answers in
#: turn (each with an upstream to close), so the last of them waits in proportion.
CLOSE_BASE_CLIENTS = 200
#: Extra seconds per client past CLOSE_BASE_CLIENTS. Measured: the reference balancer ended 2,000
#: sessions stopped at once in 5.2 s (about 390 a second) on the 2-core machine at slowness x1.07
#: with three other certify lanes running; a 2 s timeout had 27 clients "hung". Twice that time.
CLOSE_S_PER_CLIENT = 0.005
#: A stopping swarm's own margins past its clients' close timeout: a client's outer guard and the
#: swarm's bookkeeping (3 s), and a worker process's exit (5 s).
STOP_MARGIN_S = 3.0
WORKER_STOP_MARGIN_S = 5.0


def close_timeout_s(clients: int) -> float:
    """The close timeout of a swarm of ``clients``' clients (see CLOSE_S_PER_CLIENT)."""
    return CLOSE_TIMEOUT_S + max(0, clients - CLOSE_BASE_CLIENTS) * CLOSE_S_PER_CLIENT


def stops_within_s(clients: int) -> float:
    """How long a swarm of ``clients`` may take to stop every client and exit."""
    return close_timeout_s(clients) + STOP_MARGIN_S + WORKER_STOP_MARGIN_S


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
    reconnect: ReconnectPolicy | None = None,
    open_timeout_s: float = 5.0,
    compression: bool = True,
    resend_on_gap: bool = False,
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
        "--open-timeout", str(open_timeout_s),
        "--close-timeout", str(close_timeout_s(clients)),
        *(reconnect or ReconnectPolicy()).argv(),
        *_game_flags(compression, resend_on_gap),
    ]  # fmt: skip


def _game_flags(compression: bool, resend_on_gap: bool) -> list[str]:
    return (["--no-compression"] if not compression else []) + (["--resend-on-gap"] if resend_on_gap else [])


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
    close_timeout: float = CLOSE_TIMEOUT_S,
    open_timeout: float = 5.0,
    ping_interval: float | None = None,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
    reconnect: ReconnectPolicy | None = None,
    slowness: float | None = None,
    compression: bool = True,
    resend_on_gap: bool = False,
) -> int:
    """Runs the swarm until `stop` is set (or `duration` passes). Returns the exit code.

    Records ``swarm_start`` (which clients this process runs) and ``loop_lag`` (its event loop
    was starved) under :func:`swarm_process_name`, so a keepalive close can be traced to the
    harness process that could not answer the ping (``harness.analysis.harness_stalls``).
    """
    stream = out if out is not None else sys.stdout
    stop = stop or asyncio.Event()
    rec = recorder or NullRecorder()
    me = swarm_process_name(prefix, os.getpid())
    ids = client_ids(n, prefix, id_offset)
    loop_kind = "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
    # Measured before any client runs, so the busy loop competes with other processes only; a
    # worker is handed its coordinator's, measured before the workers start: workers measuring
    # while their siblings start up would measure the swarm's own start-up.
    slowness = round(measure_slowness() if slowness is None else slowness, 2)
    rec.record(
        "event", SWARM_START, process=me, clients=ids, pid=os.getpid(), loop=loop_kind, slowness=slowness,
        open_timeout_s=open_timeout,
    )  # fmt: skip

    def record_lag(lag_s: float, streak: int) -> None:
        rec.record("event", LOOP_LAG, process=me, lag_ms=round(lag_s * 1000.0, 1), streak=streak)

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
            reconnect_policy=reconnect,
            compression=compression,
            resend_on_gap=resend_on_gap,
        )
        for cid in ids
    ]
    # Each client stops itself within close_timeout (+1 s guard); the extra second covers the
    # scheduling of hundreds of closes at once. Past it, stragglers are cancelled.
    stop_deadline = close_timeout + STOP_MARGIN_S
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
        lag_watch = tg.create_task(watch_loop_lag(record_lag))
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
        lag_watch.cancel()
    hung = sum(c.hung for c in clients)
    acked = sum(len(c.book.acked) for c in clients)
    sent = sum(c.book.sent for c in clients)
    _say(stream, f"STOPPED {n} acked={acked} sent={sent} hung={hung}")
    return code


def _say(stream: TextIO, line: str) -> None:
    print(line, file=stream, flush=True)


def says_ready_within_s(clients: int, ready_timeout_s: float, per_process: int = CLIENTS_PER_PROCESS) -> float:
    """How long a swarm may take to say READY or NOT READY: its ready timeout, plus the workers'
    start margin when it splits into worker processes."""
    return ready_timeout_s + (WORKER_START_MARGIN_S if clients > per_process else 0.0)


def history_lost_reason(stderr_tail: str) -> str:
    """Why a swarm that exited EXIT_HISTORY_LOST lost records, from the end of its stderr."""
    said = [line.split(":", 1)[1].strip() for line in stderr_tail.splitlines() if line.startswith(HISTORY_LOST + ":")]
    return said[-1] if said else "its history could not be written"


def split_clients(n: int, per_process: int) -> list[int]:
    """How many clients each worker process runs: as few processes as `per_process` allows,
    sharing the clients evenly (so no worker is left with a starving remainder)."""
    if n < 1 or per_process < 1:
        raise ValueError(f"need n >= 1 and per_process >= 1; got {n}, {per_process}")
    workers = -(-n // per_process)
    base, extra = divmod(n, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def _worker_argv(args: argparse.Namespace, clients: int, id_offset: int, slowness: float) -> list[str]:
    argv = [
        sys.executable, "-m", "harness.swarm",
        "--url", args.url,
        "--clients", str(clients),
        "--clients-per-process", str(clients),
        "--prefix", args.prefix,
        "--id-offset", str(id_offset),
        "--rate", str(args.rate),
        "--ready-timeout", str(args.ready_timeout),
        "--connect-spread", str(args.connect_spread),
        "--close-timeout", str(args.close_timeout),
        "--open-timeout", str(args.open_timeout),
        *_policy(args).argv(),
        *_game_flags(args.compression, args.resend_on_gap),
        "--slowness", str(slowness),
    ]  # fmt: skip
    if args.history_dir:
        argv += ["--history-dir", str(args.history_dir)]
    if args.ping_interval is not None:
        argv += ["--ping-interval", str(args.ping_interval)]
    # Workers share the coordinator's process group (the supervisor signals it whole) and die
    # with it if it is SIGKILLed alone. Imported here: only a swarm with workers needs the
    # supervisor module, and psutil, which it imports, is a fifth of every swarm's start.
    from harness.procs import _with_pdeathsig

    return _with_pdeathsig(argv)


async def _read_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await proc.stdout.readline()).decode(errors="replace").strip()


async def run_workers(args: argparse.Namespace, stop: asyncio.Event, out: TextIO | None = None) -> int:
    """A swarm too big for one loop: worker swarms of at most --clients-per-process clients each,
    with this process speaking for them (one READY, one STOPPED) so callers see one swarm."""
    stream = out if out is not None else sys.stdout
    shares = split_clients(args.clients, args.clients_per_process)
    offsets = [args.id_offset + sum(shares[:i]) for i in range(len(shares))]
    slowness = measure_slowness()
    workers = [
        await asyncio.create_subprocess_exec(
            *_worker_argv(args, count, offset, slowness),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        for count, offset in zip(shares, offsets, strict=True)
    ]
    code = 0
    try:
        # Each worker says READY or NOT READY within its own --ready-timeout; the margin covers
        # interpreter start-up on a loaded machine, which must not cut a ready worker short.
        ready_lines = ["" for _ in workers]

        async def first_line(i: int) -> None:
            ready_lines[i] = await _read_line(workers[i])

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.ready_timeout + WORKER_START_MARGIN_S):
                await asyncio.gather(*(first_line(i) for i in range(len(workers))))
        ready = sum(_ready_count(line, count) for line, count in zip(ready_lines, shares, strict=True))
        if ready == args.clients and all(line.startswith("READY") for line in ready_lines):
            _say(stream, f"READY {args.clients}")
            if args.duration is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.duration):
                        await stop.wait()
            else:
                await stop.wait()
        else:
            _say(stream, f"NOT READY {ready}/{args.clients}")
            code = EXIT_NOT_READY
    finally:
        totals, hung_workers = await _stop_workers(workers, args.close_timeout + STOP_MARGIN_S + WORKER_STOP_MARGIN_S)
    codes = [w.returncode for w in workers]
    if code == 0 and any(c != 0 for c in codes):
        code = next(c for c in codes if c) or 1
    hung = totals["hung"] + hung_workers
    _say(stream, f"STOPPED {args.clients} acked={totals['acked']} sent={totals['sent']} hung={hung}")
    return code


def _ready_count(line: str, count: int) -> int:
    if line.startswith("READY"):
        return count
    if line.startswith("NOT READY"):
        with contextlib.suppress(ValueError, IndexError):
            return int(line.split()[2].split("/")[0])
    return 0


async def _stop_workers(workers: list[asyncio.subprocess.Process], deadline_s: float) -> tuple[dict[str, int], int]:
    """SIGTERMs every worker, reads their STOPPED lines, kills what outlives `deadline_s`."""
    for w in workers:
        if w.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                w.send_signal(signal.SIGTERM)
    totals = {"acked": 0, "sent": 0, "hung": 0}

    async def drain(w: asyncio.subprocess.Process) -> None:
        assert w.stdout is not None
        async for raw in w.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("STOPPED"):
                for key in totals:
                    with contextlib.suppress(ValueError):
                        totals[key] += int(next(p.split("=", 1)[1] for p in line.split() if p.startswith(key + "=")))
        await w.wait()

    hung_workers = 0
    try:
        async with asyncio.timeout(deadline_s):
            await asyncio.gather(*(drain(w) for w in workers))
    except TimeoutError:
        for w in workers:
            if w.returncode is None:
                hung_workers += 1
                with contextlib.suppress(ProcessLookupError):
                    w.kill()
        await asyncio.gather(*(w.wait() for w in workers))
    return totals, hung_workers


def _policy(args: argparse.Namespace) -> ReconnectPolicy:
    return ReconnectPolicy(
        kind=args.reconnect,
        base_s=args.backoff_base,
        cap_s=args.backoff_cap,
        jitter=args.backoff_jitter,
        seed=args.reconnect_seed,
    )


async def _amain(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.clients > args.clients_per_process:
        return await run_workers(args, stop)
    writer: HistoryWriter | None = None
    if args.history_dir:
        path = Path(args.history_dir) / f"clients-{args.prefix}-{os.getpid()}.jsonl"
        writer = HistoryWriter(path, swarm_process_name(args.prefix, os.getpid()))
    try:
        code = await run_swarm(
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
            reconnect=_policy(args),
            slowness=args.slowness,
            compression=args.compression,
            resend_on_gap=args.resend_on_gap,
        )
    finally:
        if writer is not None:
            writer.close()
    if writer is not None and writer.lost:
        # Outranks NOT READY: a run whose history has holes cannot be judged either way.
        print(f"{HISTORY_LOST}: {writer.lost}; {writer.dropped} record(s) dropped", file=sys.stderr, flush=True)
        return EXIT_HISTORY_LOST
    return code


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
    parser.add_argument("--close-timeout", type=float, default=CLOSE_TIMEOUT_S)
    parser.add_argument("--open-timeout", type=float, default=5.0)
    parser.add_argument(
        "--no-compression", dest="compression", action="store_false", help="offer no permessage-deflate"
    )
    parser.add_argument(
        "--resend-on-gap", action="store_true", help="answer a gap by re-sending the unacknowledged moves from it"
    )
    parser.add_argument("--ping-interval", type=float, default=None, help="client-side keepalive (default: off)")
    parser.add_argument(
        "--clients-per-process",
        type=int,
        default=CLIENTS_PER_PROCESS,
        help=f"split a bigger swarm into worker processes of at most this many clients (default {CLIENTS_PER_PROCESS})",
    )
    default = ReconnectPolicy()
    parser.add_argument("--reconnect", choices=POLICIES, default=default.kind, help="reconnect policy")
    parser.add_argument("--backoff-base", type=float, default=default.base_s, help="first backoff wait, seconds")
    parser.add_argument("--backoff-cap", type=float, default=default.cap_s, help="longest backoff wait, seconds")
    parser.add_argument(
        "--backoff-jitter", type=float, default=default.jitter, help="each wait drawn from [(1-J)*d, d]; 0..1"
    )
    parser.add_argument("--reconnect-seed", type=int, default=default.seed, help="seeds every client's jitter")
    parser.add_argument("--slowness", type=float, default=None, help=argparse.SUPPRESS)  # a worker's, measured for it
    args = parser.parse_args(argv)
    try:
        _policy(args)
    except PolicyError as exc:
        parser.error(str(exc))
    if args.clients < 1:
        parser.error("--clients must be >= 1")
    if args.clients_per_process < 1:
        parser.error("--clients-per-process must be >= 1")
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_amain(args))


if __name__ == "__main__":
    sys.exit(main())
