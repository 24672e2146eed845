"""What the clients were told: `no_crosstalk`, `ordered` and `state_continuity`.

All three read only the clients' own records (history `ok` moves, `welcome` and `reply` events), so
they hold for any build, black-box or not.
"""

from __future__ import annotations

from typing import Any

from harness.history import Record, Run

from .base import (
    CheckResult,
    Violation,
    evidence,
    finish,
    fmt_t,
    guarded,
    integer,
    mapping,
)
from .game_state import RULE_SOURCE, expected_state, normalise_state

CROSSTALK = "no_crosstalk"
ORDERED = "ordered"
STATE_CONTINUITY = "state_continuity"


def _is_ack(rec: Record) -> bool:
    return rec.get("type") == "ok" and rec.get("f") == "move"


def _is_event(rec: Record, f: str) -> bool:
    return rec.get("type") == "event" and rec.get("f") == f


def _addressee(rec: Record) -> tuple[bool, Any]:
    """(known, client id the server addressed this to). The history's `ok` record copies the
    ack's `client`; a `reply` keeps the whole frame in `msg`; a `welcome` record may carry either."""
    if _is_ack(rec):
        return ("client" in rec), rec.get("client")
    msg = mapping(rec.get("msg"))
    if _is_event(rec, "welcome") and "client" in rec:
        return True, rec.get("client")
    if "client" in msg:
        return True, msg.get("client")
    return False, None


@guarded(CROSSTALK)
def check_no_crosstalk(run: Run) -> CheckResult:
    violations: list[Violation] = []
    verified = 0
    unaddressed = 0
    for client, recs in run.client_histories().items():
        wrong: list[Record] = []
        for rec in recs:
            if not (_is_ack(rec) or _is_event(rec, "welcome") or _is_event(rec, "reply")):
                continue
            known, addressee = _addressee(rec)
            if not known:
                # Protocol `error` frames carry no client by design; anything else is a history
                # that did not copy the field, which cannot be held against the balancer.
                unaddressed += 1
                continue
            verified += 1
            if addressee != client:
                wrong.append(rec)
        if wrong:
            strangers = sorted({repr(_addressee(r)[1]) for r in wrong})
            violations.append(
                Violation(
                    CROSSTALK,
                    f"client {client} received {len(wrong)} frame(s) addressed to "
                    f"{', '.join(strangers)}, first at {fmt_t(wrong[0].get('t'))}",
                    evidence(wrong),
                )
            )
    notes = [f"{unaddressed} frame(s) carry no client id and were not judged"] if unaddressed else []
    if not verified:
        notes.append("no addressed frames in the history")
    return finish(CROSSTALK, violations, checked=verified > 0, notes=notes)


@guarded(ORDERED)
def check_ordered(run: Run) -> CheckResult:
    violations: list[Violation] = []
    acks_seen = 0
    malformed = 0
    for client, recs in run.client_histories().items():
        first_ack: dict[int, Record] = {}
        latest_first: Record | None = None
        latest_seq: int | None = None
        applied_acks: dict[int, list[Record]] = {}
        for rec in recs:
            if not _is_ack(rec):
                continue
            seq = integer(rec.get("seq"))
            if seq is None:
                malformed += 1
                continue
            acks_seen += 1
            if seq not in first_ack:
                first_ack[seq] = rec
                if latest_seq is not None and latest_first is not None and seq < latest_seq:
                    violations.append(
                        Violation(
                            ORDERED,
                            f"client {client}: seq {seq} first acknowledged at "
                            f"{fmt_t(rec.get('t'))}, after seq {latest_seq} was (at "
                            f"{fmt_t(latest_first.get('t'))}): acknowledgements went backwards",
                            evidence([latest_first, rec]),
                        )
                    )
                if latest_seq is None or seq > latest_seq:
                    latest_seq, latest_first = seq, rec
            # A missing `dup` counts as "applied": the ack frame always carries it, so an ack
            # without it is the one that claims nothing about being a repeat.
            if rec.get("dup") is not True:
                applied_acks.setdefault(seq, []).append(rec)
        for seq, acks in sorted(applied_acks.items()):
            if len(acks) > 1:
                servers = ", ".join(str(a.get("server")) for a in acks)
                violations.append(
                    Violation(
                        ORDERED,
                        f"client {client}: seq {seq} acknowledged {len(acks)} times with dup "
                        f"false (by {servers}): applied more than once",
                        evidence(acks),
                    )
                )
    notes = [f"{malformed} ack(s) without a readable seq"] if malformed else []
    if not acks_seen:
        notes.append("no acknowledged moves in the history")
    return finish(ORDERED, violations, checked=acks_seen > 0, notes=notes)


def _mismatch(state: dict[str, int], seq: int) -> dict[str, int] | str | None:
    """What the game rule says the state after `seq` moves is, when `state` is not that."""
    expected = expected_state(seq)
    if expected is None:
        return f"no valid state has seq {seq}"
    return None if expected == state else expected


@guarded(STATE_CONTINUITY)
def check_state_continuity(run: Run) -> CheckResult:
    violations: list[Violation] = []
    judged = 0
    unreadable = 0
    for client, recs in run.client_histories().items():
        wrong_states: list[dict[str, Any]] = []
        seen_welcome = False
        # The welcome of the latest server transition, until the first ack after it has shown the
        # game continued where it was.
        transition: Record | None = None
        last_ack: Record | None = None
        last_seq: int | None = None
        for rec in recs:
            msg = mapping(rec.get("msg"))
            if _is_event(rec, "welcome") or (_is_event(rec, "reply") and msg.get("type") == "resumed"):
                raw = rec.get("state") if _is_event(rec, "welcome") else msg.get("state")
                state = normalise_state(raw)
                if state is not None:
                    expected = _mismatch(state, state["seq"])
                    if expected is not None:
                        wrong_states.append({"record": rec, "expected": expected})
                if _is_event(rec, "welcome"):
                    if seen_welcome:
                        transition = rec
                    seen_welcome = True
                continue
            if not _is_ack(rec):
                continue
            seq = integer(rec.get("seq"))
            state = normalise_state(rec.get("state"))
            if seq is None or state is None or seq < 1:
                unreadable += 1
                continue
            judged += 1
            # A repeat (dup) is answered with the server's current state, which may be past `seq`.
            judged_as = state["seq"] if rec.get("dup") is True and state["seq"] >= seq else seq
            expected = _mismatch(state, judged_as)
            if expected is not None:
                wrong_states.append({"record": rec, "expected": expected})
            if last_seq is not None and last_ack is not None and state["seq"] < last_seq:
                after = (
                    f" right after the transition to {transition.get('server')} "
                    f"(welcome at {fmt_t(transition.get('t'))})"
                    if transition is not None
                    else ""
                )
                violations.append(
                    Violation(
                        STATE_CONTINUITY,
                        f"client {client}: acknowledged state regressed from seq {last_seq} to "
                        f"seq {state['seq']} at {fmt_t(rec.get('t'))}{after}",
                        evidence([r for r in (last_ack, transition, rec) if r is not None]),
                    )
                )
            transition = None
            last_ack, last_seq = rec, state["seq"]
        if wrong_states:
            first = wrong_states[0]
            violations.append(
                Violation(
                    STATE_CONTINUITY,
                    f"client {client}: {len(wrong_states)} frame(s) carry a state that the game "
                    f"rule does not produce; first at {fmt_t(first['record'].get('t'))}: "
                    f"{first['record'].get('state') or mapping(first['record'].get('msg')).get('state')}"
                    f", expected {first['expected']}",
                    evidence(wrong_states),
                )
            )
    notes = [f"expected states from {RULE_SOURCE}"]
    if unreadable:
        notes.append(f"{unreadable} ack(s) without a readable seq or state")
    return finish(STATE_CONTINUITY, violations, checked=judged > 0, notes=notes)
