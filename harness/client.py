"""The game client: plays at a steady rate, records everything, and keeps playing through a failover.

    python -m harness.client --url ws://127.0.0.1:PORT --client-id ID [--rate HZ] [--moves N]

:class:`GameClient` is the reusable part (the swarm runs hundreds of them in one loop). Each
connection has exactly one reader task (the recv loop) and one sender task; the reader never
sends, so a stalled send can never stop the client from noticing what the server says.
History records follow docs/architecture.md ("History records", clients).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State

from harness import game
from harness.history import HistoryWriter, Record
from harness.reconnect import ReconnectPolicy

#: How long a client waits for the closing handshake when it is stopped.
CLOSE_TIMEOUT_S = 2.0


class Recorder(Protocol):
    def record(self, type_: str, f: str, *, process: str | None = None, **fields: Any) -> Record: ...


class NullRecorder:
    """For clients whose history nobody reads."""

    def record(self, type_: str, f: str, *, process: str | None = None, **fields: Any) -> Record:
        return {"type": type_, "f": f, "process": process, **fields}


def play_url(url: str, client_id: str) -> str:
    """``ws://host:port`` → ``ws://host:port/play?client=ID``; a given path and query are kept."""
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else "/play"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "client"]
    query.append(("client", client_id))
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


class GameClient:
    """One simulated player. ``await run()`` plays until :meth:`request_stop`.

    Reconnection is part of the workload: after a remote close (a 1013 from the balancer, say)
    or a failed connect, the client comes back after the wait its ``reconnect_policy`` gives
    (:mod:`harness.reconnect`).
    """

    def __init__(
        self,
        url: str | Callable[[], str],
        client_id: str,
        *,
        recorder: Recorder | None = None,
        rate: float = 10.0,
        max_moves: int | None = None,
        reconnect: bool = True,
        open_timeout: float = 5.0,
        close_timeout: float = CLOSE_TIMEOUT_S,
        reconnect_policy: ReconnectPolicy | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        compression: bool = True,
        resend_on_gap: bool = False,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 moves per second; got {rate}")
        self._url = url
        self.client_id = client_id
        self.recorder: Recorder = recorder or NullRecorder()
        self.rate = rate
        self.max_moves = max_moves
        self.reconnect = reconnect
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.reconnect_policy = reconnect_policy or ReconnectPolicy()
        self._jitter = self.reconnect_policy.rng_for(client_id)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.compression = compression
        self.resend_on_gap = resend_on_gap

        self.book = game.MoveBook(client_id)
        self.first_welcome = asyncio.Event()  # the swarm's readiness signal
        self.finished = asyncio.Event()  # max_moves sent and all acknowledged
        self.stopped = asyncio.Event()
        self.hung = False
        self.welcomes = 0
        self.server: str | None = None  # the server of the latest welcome
        self.conns = 0

        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # interrupts the sender's pacing sleep
        self._resume_pending = False
        # The `expected` of each gap already answered: one re-send per lost move, however many
        # pipelined moves the backend answers with the same gap.
        self._gaps_answered: set[int] = set()
        self._gap_resend_from: int | None = None
        self._conn_welcomed = asyncio.Event()
        # Seqs whose latest send already has an `info` outcome, so a stop right after a close
        # does not report the same indeterminate send twice.
        self._info_done: set[int] = set()

    # -- public --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        base = self._url() if callable(self._url) else self._url
        return play_url(base, self.client_id)

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        # Attempts in a row that ended without a welcome; a welcomed connection's drop is the first.
        failures = 0
        try:
            while not self._stop.is_set():
                self.conns += 1
                conn = self.conns
                ws = await self._connect(conn)
                if ws is not None:
                    welcomes_before = self.welcomes
                    await self._session(ws, conn)
                    if self.welcomes > welcomes_before:
                        failures = 0
                if self._stop.is_set() or not self.reconnect:
                    break
                failures += 1
                delay = self.reconnect_policy.delay_s(failures, self._jitter)
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._stop.wait()
                else:
                    await asyncio.sleep(0)  # immediate, yet other clients get their turn
        except asyncio.CancelledError:
            # Cancelled from outside (a swarm past its deadline): this client did not stop cleanly.
            self.hung = True
            raise
        finally:
            self._record_info()
            self._rec("event", "stopped", hung=self.hung, acked=len(self.book.acked), sent=self.book.sent)
            self.stopped.set()

    # -- connection lifecycle ------------------------------------------------------------------

    async def _connect(self, conn: int) -> ClientConnection | None:
        url = self.url
        begun = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as tg:
            attempt = tg.create_task(self._open(url))
            watcher = tg.create_task(self._cancel_on_stop(attempt))
            attempt.add_done_callback(lambda _: watcher.cancel())
        if attempt.cancelled():
            return None  # stopped while connecting: not a failure of the connection
        result = attempt.result()
        if isinstance(result, BaseException):
            # How long the attempt took, so a checker can tell when it began (a fault's doing or not).
            took_s = round(asyncio.get_running_loop().time() - begun, 3)
            self._rec("event", "conn_fail", conn=conn, error=_describe(result), url=url, took_s=took_s)
            return None
        if self._stop.is_set():
            await result.close()
            return None
        return result

    async def _open(self, url: str) -> ClientConnection | BaseException:
        try:
            return await connect(
                url,
                proxy=None,  # proxy environment variables would route around the fault proxies
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                compression="deflate" if self.compression else None,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            return exc

    async def _cancel_on_stop(self, task: asyncio.Task[Any]) -> None:
        await self._stop.wait()
        task.cancel()

    async def _session(self, ws: ClientConnection, conn: int) -> None:
        # The path as requested, so a checker can tell whether the build forwarded it.
        self._rec("event", "conn_open", conn=conn, path=ws.request.path if ws.request else None)
        self._conn_welcomed.clear()
        self._wake.clear()
        self._gap_resend_from = None  # a new connection's resume re-sends whatever is unacked
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(self._reader(ws, conn))
            sender = tg.create_task(self._sender(ws, conn))
            closer = tg.create_task(self._closer(ws))
            await reader
            sender.cancel()
            if not self._stop.is_set():
                closer.cancel()
            # else: the closer is finishing a close it started; it has its own deadline.
        # The reader marked what was unacknowledged at the close indeterminate; a move the sender
        # invoked after that (the two tasks race at a close) needs it too, or it would be re-sent
        # on the next connection with no info before it.
        self._record_info()

    async def _closer(self, ws: ClientConnection) -> None:
        await self._stop.wait()
        if ws.state is State.CLOSED:
            return  # the peer ended it first; there is no close of ours to hang
        try:
            # websockets aborts the TCP connection after close_timeout; the outer deadline only
            # guards against a close that cannot even get its frame written.
            async with asyncio.timeout(self.close_timeout + 1.0):
                await ws.close(1000)
        except TimeoutError:
            ws.transport.abort()
            self.hung = True
            return
        if ws.protocol.close_rcvd is None:
            self.hung = True  # the peer never answered our close frame

    async def _reader(self, ws: ClientConnection, conn: int) -> None:
        cause: BaseException | None = None
        try:
            while True:
                frame = await ws.recv()
                self._on_frame(frame, conn)
        except ConnectionClosed as exc:
            cause = exc.__cause__
        rcvd_first = ws.protocol.close_rcvd_then_sent
        if rcvd_first is None:
            # No closing handshake (an abort, a reset): ours if we were stopping.
            initiator = "client" if self._stop.is_set() else "remote"
        else:
            initiator = "remote" if rcvd_first else "client"
        # `code` is the close frame received (1006: none). Which end gave up is only told by
        # whether this client sent a close frame itself (its own websockets failing the
        # connection records 1006 too) and by what ended the TCP connection (EOF, reset).
        sent = ws.protocol.close_sent
        self._rec(
            "event", "conn_close", conn=conn, code=ws.close_code, reason=ws.close_reason or "", initiator=initiator,
            sent_code=sent.code if sent is not None else None,
            cause=f"{type(cause).__name__}: {cause}" if cause is not None else None,
        )  # fmt: skip
        self._record_info()

    async def _sender(self, ws: ClientConnection, conn: int) -> None:
        loop = asyncio.get_running_loop()
        # A new connection starts with the server's welcome; moves sent before it would race
        # the resume that the welcome may call for.
        await self._conn_welcomed.wait()
        interval = 1.0 / self.rate
        next_at = loop.time()
        try:
            while True:
                if self._resume_pending:
                    self._resume_pending = False
                    await self._send_resume(ws, conn)
                    continue
                if self._gap_resend_from is not None:
                    from_seq, self._gap_resend_from = self._gap_resend_from, None
                    await self._resend_after_gap(ws, conn, from_seq)
                    continue
                if self._stop.is_set() or (self.max_moves is not None and self.book.sent >= self.max_moves):
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                delay = next_at - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    self._wake.clear()
                    continue
                move = self.book.new_move(loop.time())
                self._info_done.discard(move.seq)
                self._rec("invoke", "move", conn=conn, seq=move.seq, attempt=1)
                await ws.send(game.encode(move))
                # After a stall (a slow send), do not burst to catch up.
                next_at = max(next_at + interval, loop.time() - interval)
        except ConnectionClosed:
            return  # the reader records the close

    async def _send_resume(self, ws: ClientConnection, conn: int) -> None:
        state = self.book.acked_state
        resends = list(self.book.resend())
        self._rec("event", "resume", conn=conn, state=state.to_json(), resent=[m.seq for m, _ in resends])
        await ws.send(game.encode(game.Resume(self.client_id, state)))
        for move, attempt in resends:
            self._info_done.discard(move.seq)
            self._rec("invoke", "move", conn=conn, seq=move.seq, attempt=attempt)
            await ws.send(game.encode(move))

    async def _resend_after_gap(self, ws: ClientConnection, conn: int, from_seq: int) -> None:
        resends = list(self.book.resend(from_seq))
        self._rec("event", "gap_resend", conn=conn, expected=from_seq, resent=[m.seq for m, _ in resends])
        for move, attempt in resends:
            self._info_done.discard(move.seq)
            self._rec("invoke", "move", conn=conn, seq=move.seq, attempt=attempt)
            await ws.send(game.encode(move))

    def _on_gap(self, expected: object) -> None:
        if not self.resend_on_gap or isinstance(expected, bool) or not isinstance(expected, int):
            return
        if expected in self._gaps_answered:
            return
        self._gaps_answered.add(expected)
        self._gap_resend_from = expected if self._gap_resend_from is None else min(self._gap_resend_from, expected)
        self._wake.set()

    # -- what the server says ------------------------------------------------------------------

    def _on_frame(self, frame: str | bytes, conn: int) -> None:
        try:
            msg = game.parse_server_message(frame)
        except game.ProtocolError as exc:
            raw = frame if isinstance(frame, str) else frame.hex()
            self._rec("event", "reply", conn=conn, msg={"raw": raw[:500], "error": str(exc)})
            return
        if isinstance(msg, game.Welcome):
            # `client` as the server wrote it, so crosstalk shows in welcomes as well as in acks.
            self._rec(
                "event",
                "welcome",
                conn=conn,
                server=msg.server,
                server_conn=msg.conn,
                state=msg.state.to_json(),
                client=msg.client,
            )
            if self.welcomes > 0:
                # A server transition (inside this connection, or a new connection).
                self._resume_pending = True
                self._wake.set()
            self.welcomes += 1
            self.server = msg.server
            self._conn_welcomed.set()
            self.first_welcome.set()
        elif isinstance(msg, game.Ack):
            now = asyncio.get_running_loop().time()
            result = self.book.on_ack(msg.seq, msg.state, now)
            if result.first:
                assert result.latency is not None
                self._info_done.discard(msg.seq)
                self._rec(
                    "ok",
                    "move",
                    conn=conn,
                    seq=msg.seq,
                    server=msg.server,
                    client=msg.client,
                    dup=msg.dup,
                    state=msg.state.to_json(),
                    latency_ms=round(result.latency * 1000.0, 3),
                )
                if self.max_moves is not None and self.book.sent >= self.max_moves and not self.book.unacked:
                    self.finished.set()
            else:
                # A repeated ack: the operation already has its `ok`; keep the frame visible.
                self._rec(
                    "event", "reply", conn=conn, msg=game.ack(msg.server, msg.client, msg.seq, msg.dup, msg.state)
                )
        else:
            self._rec("event", "reply", conn=conn, msg=msg.raw)
            if msg.type == "gap":
                self._on_gap(msg.raw.get("expected"))

    # -- helpers -------------------------------------------------------------------------------

    def _record_info(self) -> None:
        for seq in self.book.unacked_seqs():
            if seq not in self._info_done:
                self._info_done.add(seq)
                self._rec("info", "move", seq=seq)

    def _rec(self, type_: str, f: str, **fields: Any) -> None:
        self.recorder.record(type_, f, process=self.client_id, **fields)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# CLI


class PrintingRecorder:
    """Prints each record in human form, and passes it on to a history file when there is one."""

    def __init__(self, inner: Recorder | None, out: Any = None) -> None:
        self.inner = inner
        self.out = out or sys.stdout

    def record(self, type_: str, f: str, *, process: str | None = None, **fields: Any) -> Record:
        rec = (
            self.inner.record(type_, f, process=process, **fields)
            if self.inner
            else {"type": type_, "f": f, "process": process, **fields}
        )
        line = describe_record(rec)
        if line:
            print(f"[{process}] {line}", file=self.out, flush=True)
        return rec


def _st(state: Any) -> str:
    if isinstance(state, dict):
        return f"seq={state.get('seq')} at ({state.get('x')}, {state.get('y')})"
    return str(state)


def describe_record(rec: Record) -> str:
    t, f = rec.get("type"), rec.get("f")
    if f == "conn_open":
        return f"connection #{rec['conn']} open"
    if f == "conn_fail":
        return f"connection #{rec['conn']} failed: {rec['error']}"
    if f == "welcome":
        return f"welcome from {rec['server']} ({rec['server_conn']}), server knows {_st(rec['state'])}"
    if f == "resume":
        return f"server changed: resuming at {_st(rec['state'])}, re-sending {rec['resent']}"
    if t == "invoke" and rec.get("attempt", 1) > 1:
        return f"re-send move {rec['seq']} (attempt {rec['attempt']})"
    if t == "invoke":
        return ""  # one line per move is enough; the ack says it
    if t == "ok":
        dup = " (dup)" if rec.get("dup") else ""
        return f"ack {rec['seq']}{dup} from {rec['server']}: {_st(rec['state'])}, {rec['latency_ms']:.1f} ms"
    if t == "info":
        return f"move {rec['seq']} unacknowledged (outcome unknown)"
    if f == "reply":
        return f"server says {rec['msg']}"
    if f == "conn_close":
        return f"connection #{rec['conn']} closed by {rec['initiator']}: code {rec['code']} {rec['reason']!r}"
    if f == "stopped":
        hung = " (close HUNG)" if rec.get("hung") else ""
        return f"stopped after {rec.get('acked')} acked of {rec.get('sent')} sent{hung}"
    return str(rec)


async def _amain(args: argparse.Namespace) -> int:
    writer = HistoryWriter(args.history, args.client_id) if args.history else None
    client = GameClient(
        args.url,
        args.client_id,
        recorder=PrintingRecorder(writer),
        rate=args.rate,
        max_moves=args.moves,
        reconnect=not args.no_reconnect,
        open_timeout=args.open_timeout,
        close_timeout=args.close_timeout,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_interval,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, client.request_stop)
    try:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(client.run())

            async def stop_when_finished() -> None:
                await client.finished.wait()
                client.request_stop()

            watcher = tg.create_task(stop_when_finished())
            await run
            watcher.cancel()
    finally:
        if writer is not None:
            writer.close()
    complete = args.moves is None or client.finished.is_set()
    return 0 if complete and not client.hung else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="ws://HOST:PORT (the /play path is added)")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--rate", type=float, default=5.0, help="moves per second")
    parser.add_argument(
        "--moves", type=int, default=None, help="stop once this many moves are acknowledged (default: play on)"
    )
    parser.add_argument("--history", default=None, help="append history records to this JSONL")
    parser.add_argument("--no-reconnect", action="store_true", help="stop after the first connection ends")
    parser.add_argument("--open-timeout", type=float, default=5.0)
    parser.add_argument("--close-timeout", type=float, default=CLOSE_TIMEOUT_S)
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=None,
        help="client-side keepalive (default: off; servers' pings are answered)",
    )
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    return asyncio.run(_amain(args))


if __name__ == "__main__":
    sys.exit(main())
