"""The pure game rules: moves, expected states, messages, server rules and the client's bookkeeping."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import game
from harness.game import GameState, MoveBook, ProtocolError


def test_move_for_is_deterministic_and_never_still() -> None:
    assert [game.move_for(s) for s in range(1, 200)] == [game.move_for(s) for s in range(1, 200)]
    assert all(game.move_for(s) != (0, 0) for s in range(1, 1000))
    assert len({game.move_for(s) for s in range(1, 100)}) > 4  # not a trivial walk
    with pytest.raises(ValueError):
        game.move_for(0)


def test_expected_state_is_the_sum_of_the_moves() -> None:
    assert game.expected_state(0) == GameState(0, 0, 0)
    x = y = 0
    for seq in range(1, 300):
        dx, dy = game.move_for(seq)
        x, y = x + dx, y + dy
        assert game.expected_state(seq) == GameState(seq, x, y)
    # Asking out of order gives the same answers (the prefix cache must not depend on order).
    assert game.expected_state(5000).seq == 5000
    assert game.expected_state(7) == GameState(7, *_walk(7))
    with pytest.raises(ValueError):
        game.expected_state(-1)


def _walk(n: int) -> tuple[int, int]:
    x = y = 0
    for s in range(1, n + 1):
        dx, dy = game.move_for(s)
        x, y = x + dx, y + dy
    return x, y


def test_apply_move_applies_next_dups_old_and_refuses_gaps() -> None:
    s0 = game.INITIAL_STATE
    out = game.apply_move(s0, game.make_move("c1", 1))
    assert out.result == "applied" and out.applied
    assert out.state == game.expected_state(1)

    again = game.apply_move(out.state, game.make_move("c1", 1))
    assert again.result == "dup" and not again.applied
    assert again.state == out.state  # not applied twice

    jump = game.apply_move(out.state, game.make_move("c1", 3))
    assert jump.result == "gap" and jump.expected == 2
    assert jump.state == out.state


def test_adopt_resume_only_moves_forward() -> None:
    ahead = game.expected_state(10)
    behind = game.expected_state(4)
    assert game.adopt_resume(behind, ahead) == (ahead, True)
    assert game.adopt_resume(ahead, behind) == (ahead, False)
    assert game.adopt_resume(ahead, ahead) == (ahead, False)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("move"), st.integers(1, 30)),
            st.tuples(st.just("resume"), st.integers(0, 30)),
        ),
        max_size=80,
    )
)
def test_server_state_is_always_a_real_game_and_never_regresses(ops: list[tuple[str, int]]) -> None:
    state = game.INITIAL_STATE
    applied: list[int] = []
    for kind, n in ops:
        before = state
        if kind == "move":
            out = game.apply_move(state, game.make_move("c", n))
            state = out.state
            if out.applied:
                applied.append(n)
        else:
            state, _ = game.adopt_resume(state, game.expected_state(n))
        assert state.seq >= before.seq
        # Any state the server holds is the one its seq must produce: nothing applied twice or
        # out of order, given that resumes carry states clients got acknowledged.
        assert state == game.expected_state(state.seq)
    # Each seq is applied at most once, and applications only go forward: a resume can jump
    # past seqs but never bring one back.
    assert all(a < b for a, b in itertools.pairwise(applied))


def test_messages_round_trip() -> None:
    move = game.make_move("c07", 12)
    assert game.parse_client_message(game.encode(move)) == move
    res = game.Resume("c07", game.expected_state(11))
    assert game.parse_client_message(game.encode(res)) == res

    st11 = game.expected_state(11)
    w = game.parse_server_message(game.encode(game.welcome("primary", "c07", "primary-ab-1", st11)))
    assert w == game.Welcome("primary", "c07", "primary-ab-1", st11)
    a = game.parse_server_message(game.encode(game.ack("secondary", "c07", 11, True, st11)))
    assert a == game.Ack("secondary", "c07", 11, True, st11)
    for msg in (game.gap("p", "c07", 9, 5), game.resumed("p", "c07", st11), game.error("p", "x")):
        parsed = game.parse_server_message(game.encode(msg))
        assert isinstance(parsed, game.Other) and parsed.type == msg["type"] and parsed.raw == msg


def test_wire_format_matches_the_architecture_doc() -> None:
    assert json.loads(game.encode(game.make_move("c1", 1))) == {
        "type": "move",
        "client": "c1",
        "seq": 1,
        "dx": game.move_for(1)[0],
        "dy": game.move_for(1)[1],
    }
    assert json.loads(game.encode(game.ack("p", "c1", 3, False, game.expected_state(3)))) == {
        "type": "ack",
        "server": "p",
        "client": "c1",
        "seq": 3,
        "dup": False,
        "state": game.expected_state(3).to_json(),
    }
    assert game.gap("p", "c1", 5, 2) == {"type": "gap", "server": "p", "client": "c1", "seq": 5, "expected": 2}
    assert game.error("p", "bad") == {"type": "error", "server": "p", "error": "bad"}


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("not json", "not JSON"),
        (b'{"type":"move"}', "binary frame"),
        ("[1, 2]", "JSON object; got list"),
        ('{"type":"jump"}', "unknown client message type 'jump'"),
        ('{"type":"move","client":"c","dx":1,"dy":0}', "move.seq must be an integer; got null"),
        ('{"type":"move","client":"c","seq":true,"dx":1,"dy":0}', "move.seq must be an integer"),
        ('{"type":"move","client":"c","seq":0,"dx":1,"dy":0}', "move.seq must be >= 1"),
        ('{"type":"move","client":"","seq":1,"dx":1,"dy":0}', "move.client must be a non-empty"),
        ('{"type":"resume","client":"c","state":{"seq":1,"x":1}}', "resume.state.y must be an int"),
        ('{"type":"resume","client":"c","state":[]}', "resume.state must be an object"),
        ('{"type":"resume","client":"c","state":{"seq":-1,"x":0,"y":0}}', "resume.state.seq must be"),
    ],
)
def test_parse_client_message_errors_say_what_is_wrong(frame: str | bytes, needle: str) -> None:
    with pytest.raises(ProtocolError) as info:
        game.parse_client_message(frame)
    assert needle in str(info.value)


def test_parse_server_message_errors() -> None:
    with pytest.raises(ProtocolError, match=r"ack\.dup must be a boolean"):
        game.parse_server_message('{"type":"ack","server":"p","client":"c","seq":1,"state":{"seq":1,"x":0,"y":0}}')
    with pytest.raises(ProtocolError, match="unknown server message type"):
        game.parse_server_message('{"type":"hello"}')


def test_move_book_acks_each_seq_once_and_keeps_the_furthest_state() -> None:
    book = MoveBook("c1")
    moves = [book.new_move(now=float(i)) for i in range(3)]
    assert [m.seq for m in moves] == [1, 2, 3] and book.sent == 3
    assert book.unacked_seqs() == [1, 2, 3]

    r1 = book.on_ack(1, game.expected_state(1), now=0.5)
    assert r1.first and r1.latency == pytest.approx(0.5)
    assert book.acked_state == game.expected_state(1)
    # The same seq acknowledged again (another server, a re-send): not a second `ok`.
    assert not book.on_ack(1, game.expected_state(1), now=1.0).first
    # A dup ack counts as the ack when the seq had none yet; its state can be ahead of the seq.
    r2 = book.on_ack(2, game.expected_state(3), now=2.0)
    assert r2.first
    assert book.acked_state == game.expected_state(3)
    # An ack for a seq never sent acknowledges nothing.
    assert not book.on_ack(99, game.expected_state(99), now=2.0).first
    assert book.unacked_seqs() == [3]
    # An older state in a later ack does not pull the resume point back.
    assert book.on_ack(3, game.expected_state(2), now=3.0).first
    assert book.acked_state == game.expected_state(3)


def test_move_book_resend_counts_attempts_in_seq_order() -> None:
    book = MoveBook("c1")
    for i in range(4):
        book.new_move(now=float(i))
    book.on_ack(2, game.expected_state(2), now=5.0)
    first = [(m.seq, a) for m, a in book.resend()]
    assert first == [(1, 2), (3, 2), (4, 2)]
    second = [(m.seq, a) for m, a in book.resend()]
    assert second == [(1, 3), (3, 3), (4, 3)]
    # Latency is measured from the first send, so a failover's delay is in it.
    assert book.on_ack(3, game.expected_state(3), now=10.0).latency == pytest.approx(8.0)


def test_move_book_resend_after_a_gap_starts_at_the_expected_seq() -> None:
    book = MoveBook("c1")
    for i in range(5):
        book.new_move(now=float(i))
    book.on_ack(1, game.expected_state(1), now=5.0)
    # The backend expects 3: move 2's ack may be lost, but the backend has it, so it is not re-sent.
    assert [(m.seq, a) for m, a in book.resend(from_seq=3)] == [(3, 2), (4, 2), (5, 2)]
    assert [m.seq for m, _ in book.resend()] == [2, 3, 4, 5]
