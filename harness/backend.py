"""The game backend: a small multiplayer game server that journals everything it does.

    python -m harness.backend --port 8765 --instance-name primary [--host 127.0.0.1] [--journal PATH]

Players connect to ``/play?client=ID``. The protocol and the journal format are specified in
docs/architecture.md. The journal is what lets a checker judge a run from the backend's side,
so every line is flushed as it is written: the process may be SIGKILLed at any moment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from harness import game
from harness.eventloop import LOOP_LAG, watch_loop_lag
from harness.history import LineFile, describe_write_failure, say

EXIT_BIND_FAILED = 2
#: The HTTP path where a backend tells whether its journal lost lines (Journal.health).
JOURNAL_PATH = "/journal"
#: How a backend says on stderr that its journal lost lines (a full disk).
JOURNAL_LOST = "JOURNAL LOST"
# Bounds the wait for handlers after Server.close(): a client that never answers the close
# frame must not keep a SIGTERMed backend alive.
SHUTDOWN_TIMEOUT_S = 5.0


class Journal:
    """JSONL journal, appended to across restarts, flushed per line.

    A full disk never takes the backend down (that would read as the build's failure or a harness
    process dying): the journal remembers the first failed write, drops every later line
    (:class:`harness.history.LineFile`), says so once on stderr, and answers ``GET /journal``
    with the loss, where the runner asks for it and sets the run aside as not recorded.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None, server: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.server = server
        self._clock = clock
        self._lines: LineFile | None = None
        # A journal that could not even be opened (a full disk at a restart) counts as lost too.
        self._unopened: str | None = None
        self._unopened_dropped = 0
        if path is not None:
            try:
                self._lines = LineFile(path)
            except OSError as exc:
                self._unopened = describe_write_failure(path, exc)
                say(sys.stderr, f"{JOURNAL_LOST}: {self._unopened}")

    @property
    def lost(self) -> str | None:
        """Why journal lines were lost, or None while the journal is whole."""
        return self._unopened or (self._lines.lost if self._lines else None)

    @property
    def dropped(self) -> int:
        return self._unopened_dropped + (self._lines.dropped if self._lines else 0)

    def write(self, event: str, **fields: Any) -> None:
        if self._lines is None:
            if self._unopened:
                self._unopened_dropped += 1
            return
        rec: dict[str, Any] = {"t": self._clock(), "server": self.server, "event": event}
        rec.update(fields)
        was_whole = self._lines.lost is None
        if not self._lines.append(rec) and was_whole:
            say(sys.stderr, f"{JOURNAL_LOST}: {self._lines.lost}")

    def health(self) -> dict[str, Any]:
        """What ``GET /journal`` answers."""
        return {"server": self.server, "lost": self.lost, "dropped": self.dropped}

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()


def client_id_of(path: str) -> str | None:
    """The client id from a request path such as ``/play?client=c03``; None when absent or empty."""
    values = parse_qs(urlsplit(path).query).get("client", [])
    return values[0] if values and values[0] else None


#: Query parameter asking the backend to end the session right after its welcome (harness.probes).
END_WITH_PARAM = "end_with"


def end_code_of(path: str) -> int | None:
    """The close code a request asks the backend to end its session with right after the welcome
    (``end_with=4321``: how the harness checks that a build passes close codes through); None when
    not asked. Raises ValueError for a code a server may not send."""
    values = parse_qs(urlsplit(path).query).get(END_WITH_PARAM, [])
    if not values:
        return None
    code = int(values[0])
    if code != 1000 and not 3000 <= code <= 4999:
        raise ValueError(f"{END_WITH_PARAM}: {code} is not 1000 or 3000-4999")
    return code


class GameServer:
    """Per-process game state and the connection handler. One instance per backend process."""

    def __init__(self, name: str, journal: Journal, verbose: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.verbose = verbose
        self.states: dict[str, game.GameState] = {}
        self.open_connections = 0
        # Connection ids must be unique per process *and* across restarts of the same instance
        # (journals are appended to), hence the per-process token.
        self._token = os.urandom(2).hex()
        self._next_conn = 0

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path == "/healthz" and "Upgrade" not in request.headers:
            # Lets an HTTP health probe check the backend without joining the game.
            return connection.respond(HTTPStatus.OK, "ok\n")
        if urlsplit(request.path).path == JOURNAL_PATH and "Upgrade" not in request.headers:
            # Asked by the runner after a run: a journal with lost lines cannot be judged from. And
            # while it quiesces: a connection whose close is not journaled yet would be judged open.
            health = {**self.journal.health(), "open": self.open_connections}
            response = connection.respond(HTTPStatus.OK, json.dumps(health) + "\n")
            del response.headers["Content-Type"]  # respond() said text/plain
            response.headers["Content-Type"] = "application/json"
            return response
        if client_id_of(request.path) is None:
            return self._reject(
                connection, request, HTTPStatus.BAD_REQUEST, "missing client id: connect to /play?client=ID"
            )
        try:
            end_code_of(request.path)
        except ValueError as exc:
            return self._reject(connection, request, HTTPStatus.BAD_REQUEST, str(exc))
        return None

    def _reject(self, connection: ServerConnection, request: Request, status: HTTPStatus, reason: str) -> Response:
        # Journaled because nothing else records it: the balancer in front may turn it into a close
        # code (1013, 1011) that hides why the backend said no.
        self.journal.write("rejected", path=request.path, status=int(status), reason=reason)
        self._log(f"rejected {request.path} with HTTP {int(status)}: {reason}")
        return connection.respond(status, reason + "\n")

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None  # the handshake has completed
        path = ws.request.path
        client = client_id_of(path)
        assert client is not None  # process_request rejected the others
        self._next_conn += 1
        conn = f"{self.name}-{self._token}-{self._next_conn}"
        peer = ws.remote_address
        self.open_connections += 1
        self.journal.write("open", conn=conn, client=client, path=path, peer=f"{peer[0]}:{peer[1]}" if peer else None)
        self._log(f"open {conn} client={client}")
        try:
            state = self.states.get(client, game.INITIAL_STATE)
            await self._send(ws, conn, client, game.welcome(self.name, client, conn, state))
            end_code = end_code_of(path)
            if end_code is not None:
                await ws.close(end_code, "session ended by the backend")
            # The only reader of this connection.
            while True:
                frame = await ws.recv()
                await self._on_frame(ws, conn, client, frame)
        except ConnectionClosed:
            pass
        finally:
            self.open_connections -= 1
            self.journal.write("close", conn=conn, client=client, code=ws.close_code, reason=ws.close_reason or "")
            self._log(f"close {conn} client={client} code={ws.close_code}")

    async def _on_frame(self, ws: ServerConnection, conn: str, client: str, frame: str | bytes) -> None:
        try:
            msg = game.parse_client_message(frame)
        except game.ProtocolError as exc:
            self.journal.write("recv", conn=conn, client=client, kind="other", applied=False, error=str(exc))
            await self._send(ws, conn, client, game.error(self.name, str(exc)))
            return
        if msg.client != client:
            # A frame for another player must not touch this player's game, nor that one's.
            text = f"message for client {msg.client!r} on the connection of client {client!r}"
            kind = "move" if isinstance(msg, game.Move) else "resume"
            extra = {"seq": msg.seq} if isinstance(msg, game.Move) else {}
            self.journal.write("recv", conn=conn, client=client, kind=kind, applied=False, error=text, **extra)
            await self._send(ws, conn, client, game.error(self.name, text))
            return
        state = self.states.get(client, game.INITIAL_STATE)
        if isinstance(msg, game.Move):
            outcome = game.apply_move(state, msg)
            self.states[client] = outcome.state
            self.journal.write(
                "recv",
                conn=conn,
                client=client,
                kind="move",
                seq=msg.seq,
                applied=outcome.applied,
                result=outcome.result,
            )
            if outcome.result == "gap":
                reply = game.gap(self.name, client, msg.seq, outcome.expected)
            else:
                reply = game.ack(self.name, client, msg.seq, outcome.result == "dup", outcome.state)
        else:
            new_state, adopted = game.adopt_resume(state, msg.state)
            self.states[client] = new_state
            self.journal.write(
                "recv", conn=conn, client=client, kind="resume", applied=adopted, state_seq=msg.state.seq
            )
            reply = game.resumed(self.name, client, new_state)
        await self._send(ws, conn, client, reply)

    async def _send(self, ws: ServerConnection, conn: str, client: str, msg: game.Message) -> None:
        fields: dict[str, Any] = {"conn": conn, "client": client, "kind": msg["type"]}
        if "seq" in msg:
            fields["seq"] = msg["seq"]
        if msg["type"] == "ack":
            fields["dup"] = msg["dup"]
        if ws.state is not State.OPEN:
            # The peer's close frame is in. send() would wait up to close_timeout (10 s) for the
            # TCP close, while the frames read with that close frame and still queued keep reading
            # paused, so the peer's FIN would go unnoticed for those 10 s and the journal would say
            # the connection outlived the run. The handler's recv() drains the queue and then
            # raises ConnectionClosed once the TCP connection is gone.
            return
        await ws.send(game.encode(msg))
        # Only after send() returned: a frame the connection refused was never sent.
        self.journal.write("send", **fields)

    def _log(self, line: str) -> None:
        if self.verbose:
            say(sys.stdout, f"backend {self.name}: {line}")


async def run(
    host: str,
    port: int,
    name: str,
    journal_path: str | None,
    verbose: bool = False,
    ready: Callable[[Server], None] | None = None,
) -> int:
    journal = Journal(journal_path, name)
    app = GameServer(name, journal, verbose)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            server = await serve(app.handler, host, port, process_request=app.process_request, ping_interval=None)
        except OSError as exc:
            say(sys.stderr, f"backend {name}: cannot listen on {host}:{port}: {exc.strerror or exc}")
            return EXIT_BIND_FAILED
        bound_port = server.sockets[0].getsockname()[1] if server.sockets else port
        journal.write("start", pid=os.getpid(), port=bound_port, host=host)
        say(sys.stdout, f"backend {name} listening on {host}:{bound_port}")
        if ready is not None:
            ready(server)
        # The journal also carries evidence of this process being starved (harness.eventloop).
        async with asyncio.TaskGroup() as tg:
            lag_watch = tg.create_task(
                watch_loop_lag(
                    lambda lag, streak: journal.write(LOOP_LAG, lag_ms=round(lag * 1000.0, 1), streak=streak)
                )
            )
            await stop.wait()
            lag_watch.cancel()
        server.close()  # closes every open connection with 1001
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await server.wait_closed()
        except TimeoutError:
            say(sys.stderr, f"backend {name}: connections still open after {SHUTDOWN_TIMEOUT_S}s; exiting anyway")
        journal.write("stop", pid=os.getpid(), port=bound_port)
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        journal.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.backend", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    parser.add_argument("--instance-name", required=True, help="server name in replies/journal")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--journal", default=None, help="JSONL journal, appended to")
    parser.add_argument("--verbose", action="store_true", help="print a line per connection")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.host, args.port, args.instance_name, args.journal, args.verbose))


if __name__ == "__main__":
    sys.exit(main())
