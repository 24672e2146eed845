"""The game protocol: messages, the deterministic moves, and the state rules of both sides.

Pure: no sockets, no clocks of its own. The backend (`harness.backend`) and the client
(`harness.client`) are thin I/O shells around what is here, and checkers can use
:func:`expected_state` to recompute what any acknowledged sequence number must have produced.
The wire format is specified in docs/architecture.md ("The game protocol").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Message = dict[str, Any]

# Eight compass directions; a move is never (0, 0), so every applied move changes the position
# and a move applied twice or skipped shows up in x/y as well as in seq.
_DIRECTIONS: tuple[tuple[int, int], ...] = (
    (1, 0),
    (1, 1),
    (0, 1),
    (-1, 1),
    (-1, 0),
    (-1, -1),
    (0, -1),
    (1, -1),
)


class ProtocolError(ValueError):
    """A frame that does not follow the game protocol. The message says what is wrong."""


@dataclass(frozen=True, slots=True)
class GameState:
    """What a server knows about one client: the last applied seq and the position it led to."""

    seq: int = 0
    x: int = 0
    y: int = 0

    def to_json(self) -> Message:
        return {"seq": self.seq, "x": self.x, "y": self.y}

    @classmethod
    def from_json(cls, obj: object, what: str = "state") -> GameState:
        if not isinstance(obj, dict):
            raise ProtocolError(f"{what} must be an object with seq, x, y; got {_kind(obj)}")
        seq = _int_field(obj, "seq", what)
        if seq < 0:
            raise ProtocolError(f"{what}.seq must be >= 0; got {seq}")
        return cls(seq=seq, x=_int_field(obj, "x", what), y=_int_field(obj, "y", what))


INITIAL_STATE = GameState()


def move_for(seq: int) -> tuple[int, int]:
    """The (dx, dy) that move `seq` carries. Deterministic, so anyone can recompute a game."""
    if seq < 1:
        raise ValueError(f"move seq starts at 1; got {seq}")
    # A multiplicative hash, so consecutive moves do not cancel out in short cycles.
    return _DIRECTIONS[((seq * 2654435761) >> 7) % len(_DIRECTIONS)]


# Prefix positions, grown on demand: checkers call expected_state for every ack in a run.
_prefix: list[tuple[int, int]] = [(0, 0)]


def expected_state(seq: int) -> GameState:
    """The state a client's game must be in after moves 1..seq were each applied exactly once."""
    if seq < 0:
        raise ValueError(f"seq must be >= 0; got {seq}")
    while len(_prefix) <= seq:
        n = len(_prefix)
        x, y = _prefix[-1]
        dx, dy = move_for(n)
        _prefix.append((x + dx, y + dy))
    x, y = _prefix[seq]
    return GameState(seq=seq, x=x, y=y)


# ---------------------------------------------------------------------------------------------
# Client -> server messages


@dataclass(frozen=True, slots=True)
class Move:
    client: str
    seq: int
    dx: int
    dy: int

    def to_json(self) -> Message:
        return {"type": "move", "client": self.client, "seq": self.seq, "dx": self.dx, "dy": self.dy}


@dataclass(frozen=True, slots=True)
class Resume:
    client: str
    state: GameState

    def to_json(self) -> Message:
        return {"type": "resume", "client": self.client, "state": self.state.to_json()}


ClientMessage = Move | Resume


def make_move(client: str, seq: int) -> Move:
    dx, dy = move_for(seq)
    return Move(client=client, seq=seq, dx=dx, dy=dy)


def parse_client_message(frame: str | bytes) -> ClientMessage:
    """Parses what a client sent. Raises :class:`ProtocolError` naming the problem."""
    obj = _load(frame)
    kind = obj.get("type")
    if kind == "move":
        seq = _int_field(obj, "seq", "move")
        if seq < 1:
            raise ProtocolError(f"move.seq must be >= 1; got {seq}")
        return Move(
            client=_str_field(obj, "client", "move"),
            seq=seq,
            dx=_int_field(obj, "dx", "move"),
            dy=_int_field(obj, "dy", "move"),
        )
    if kind == "resume":
        return Resume(
            client=_str_field(obj, "client", "resume"),
            state=GameState.from_json(obj.get("state"), "resume.state"),
        )
    raise ProtocolError(f"unknown client message type {kind!r}; expected 'move' or 'resume'")


# ---------------------------------------------------------------------------------------------
# Server -> client messages


def welcome(server: str, client: str, conn: str, state: GameState) -> Message:
    return {"type": "welcome", "server": server, "client": client, "conn": conn, "state": state.to_json()}


def ack(server: str, client: str, seq: int, dup: bool, state: GameState) -> Message:
    return {"type": "ack", "server": server, "client": client, "seq": seq, "dup": dup, "state": state.to_json()}


def gap(server: str, client: str, seq: int, expected: int) -> Message:
    return {"type": "gap", "server": server, "client": client, "seq": seq, "expected": expected}


def resumed(server: str, client: str, state: GameState) -> Message:
    return {"type": "resumed", "server": server, "client": client, "state": state.to_json()}


def error(server: str, text: str) -> Message:
    return {"type": "error", "server": server, "error": text}


@dataclass(frozen=True, slots=True)
class Welcome:
    server: str
    client: str
    conn: str
    state: GameState


@dataclass(frozen=True, slots=True)
class Ack:
    server: str
    client: str
    seq: int
    dup: bool
    state: GameState


@dataclass(frozen=True, slots=True)
class Other:
    """A server frame the client only records: gap, resumed or error."""

    type: str
    raw: Message


ServerMessage = Welcome | Ack | Other


def parse_server_message(frame: str | bytes) -> ServerMessage:
    """Parses what a server sent. Raises :class:`ProtocolError` naming the problem."""
    obj = _load(frame)
    kind = obj.get("type")
    if kind == "welcome":
        return Welcome(
            server=_str_field(obj, "server", "welcome"),
            client=_str_field(obj, "client", "welcome"),
            conn=_str_field(obj, "conn", "welcome"),
            state=GameState.from_json(obj.get("state"), "welcome.state"),
        )
    if kind == "ack":
        dup = obj.get("dup")
        if not isinstance(dup, bool):
            raise ProtocolError(f"ack.dup must be a boolean; got {_kind(dup)}")
        return Ack(
            server=_str_field(obj, "server", "ack"),
            client=_str_field(obj, "client", "ack"),
            seq=_int_field(obj, "seq", "ack"),
            dup=dup,
            state=GameState.from_json(obj.get("state"), "ack.state"),
        )
    if kind in ("gap", "resumed", "error"):
        return Other(type=kind, raw=obj)
    raise ProtocolError(f"unknown server message type {kind!r}")


def encode(msg: Message | ClientMessage) -> str:
    obj = msg if isinstance(msg, dict) else msg.to_json()
    return json.dumps(obj, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# Server-side rules


@dataclass(frozen=True, slots=True)
class MoveOutcome:
    result: Literal["applied", "dup", "gap"]
    state: GameState  # the server's state for this client after the move

    @property
    def applied(self) -> bool:
        return self.result == "applied"

    @property
    def expected(self) -> int:
        """The seq the server is waiting for (what a `gap` reply reports)."""
        return self.state.seq + 1


def apply_move(state: GameState, move: Move) -> MoveOutcome:
    """The server rule: apply the next seq, acknowledge an old one as dup, refuse a jump."""
    if move.seq == state.seq + 1:
        return MoveOutcome("applied", GameState(move.seq, state.x + move.dx, state.y + move.dy))
    if move.seq <= state.seq:
        return MoveOutcome("dup", state)
    return MoveOutcome("gap", state)


def adopt_resume(state: GameState, offered: GameState) -> tuple[GameState, bool]:
    """A resume is adopted only when it is ahead of what the server has, so state never regresses."""
    if offered.seq > state.seq:
        return offered, True
    return state, False


# ---------------------------------------------------------------------------------------------
# Client-side bookkeeping


@dataclass(slots=True)
class Pending:
    """A move sent but not yet acknowledged."""

    move: Move
    attempts: int
    first_sent: float  # by the clock the caller passes in


@dataclass(frozen=True, slots=True)
class AckResult:
    """What an ack meant to the client."""

    first: bool  # the first acknowledgement of this seq: record it as the operation's `ok`
    latency: float | None  # seconds since the first send, when `first`


@dataclass
class MoveBook:
    """The client's moves: the next seq, the unacknowledged ones and the last acknowledged state.

    Time is passed in (`now`), so this stays pure and testable.
    """

    client: str
    next_seq: int = 1
    acked_state: GameState = INITIAL_STATE
    unacked: dict[int, Pending] = field(default_factory=dict)  # insertion order == seq order
    acked: set[int] = field(default_factory=set)

    def new_move(self, now: float) -> Move:
        move = make_move(self.client, self.next_seq)
        self.next_seq += 1
        self.unacked[move.seq] = Pending(move, attempts=1, first_sent=now)
        return move

    def resend(self, from_seq: int = 1) -> Iterator[tuple[Move, int]]:
        """Every unacknowledged move from ``from_seq`` on, in seq order, with the attempt number of
        this send."""
        for seq in sorted(s for s in self.unacked if s >= from_seq):
            pending = self.unacked[seq]
            pending.attempts += 1
            yield pending.move, pending.attempts

    def on_ack(self, seq: int, state: GameState, now: float) -> AckResult:
        """Records an ack (dup or not). A repeat ack of a seq already acknowledged is not `first`."""
        if seq in self.acked:
            return AckResult(first=False, latency=None)
        pending = self.unacked.pop(seq, None)
        if pending is None:
            # An ack for a seq this client never sent: not an acknowledgement of anything.
            return AckResult(first=False, latency=None)
        self.acked.add(seq)
        # The resume state is the furthest the client knows any server got; never step back.
        if state.seq > self.acked_state.seq:
            self.acked_state = state
        return AckResult(first=True, latency=now - pending.first_sent)

    def unacked_seqs(self) -> list[int]:
        return sorted(self.unacked)

    @property
    def sent(self) -> int:
        return self.next_seq - 1


# ---------------------------------------------------------------------------------------------
# helpers


def _load(frame: str | bytes) -> Message:
    if isinstance(frame, bytes):
        raise ProtocolError("binary frame; the game protocol uses JSON text frames")
    try:
        obj = json.loads(frame)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"a message must be a JSON object; got {_kind(obj)}")
    return obj


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _int_field(obj: Message, name: str, what: str) -> int:
    value = obj.get(name)
    # bool is an int subclass; true is not a sequence number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{what}.{name} must be an integer; got {_kind(value)}")
    return value


def _str_field(obj: Message, name: str, what: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{what}.{name} must be a non-empty string; got {_kind(value)}")
    return value
