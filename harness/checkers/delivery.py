"""`failover_delivery`: moves a client sends while its connection fails over are delivered.

The contract ("Delivery semantics across a failover") lets a build lose what it had already handed
to an upstream that then died, but what the client sends *while the new upstream is being opened*
waits in the client connection and is relayed, in order, once it is open. So, per client connection
and per server transition (a welcome from another backend connection), with the old backend
connection's journaled `close` at ``tc`` and the new welcome at ``tw``:

- every move invoked on that client connection after ``tc + margin`` and before ``tw`` could not
  have been handed to the old upstream (its backend had already seen it close);
- the new backend connection must then receive each such move at least as often as the client sent
  it from ``tc + margin`` until ``margin`` after the welcome (the client's own re-sends after the
  welcome count as sends, so they cannot hide a move the build dropped). A new backend connection
  that ended within ``margin`` of the welcome is not judged.

Only transitions whose old backend connection has a journaled `close` are judged: a killed, paused or
partitioned backend cannot say when its connection died. ``meta.expect.delivery_margin_s``
(default 0.25 s) absorbs the time the build takes to notice a close.
"""

from __future__ import annotations

from itertools import pairwise

from harness.history import Record, Run

from .base import (
    CheckResult,
    Violation,
    client_histories,
    conn_key,
    evidence,
    expect_number,
    finish,
    fmt_t,
    guarded,
    integer,
    records,
    time_of,
)
from .journal import UpstreamConn, index_upstreams

NAME = "failover_delivery"
DEFAULT_MARGIN_S = 0.25


def _is(rec: Record, type_: str, f: str) -> bool:
    return rec.get("type") == type_ and rec.get("f") == f


def _deliveries(run: Run, uc: UpstreamConn) -> dict[int, int]:
    counts: dict[int, int] = {}
    for rec in records((run.journals or {}).get(uc.journal, [])):
        if rec.get("event") == "recv" and rec.get("kind") == "move" and str(rec.get("conn")) == uc.conn:
            seq = integer(rec.get("seq"))
            if seq is not None:
                counts[seq] = counts.get(seq, 0) + 1
    return counts


@guarded(NAME)
def check_failover_delivery(run: Run) -> CheckResult:
    margin = expect_number(run, "delivery_margin_s", DEFAULT_MARGIN_S)
    index = index_upstreams(run)
    violations: list[Violation] = []
    judged = 0
    for client, recs in client_histories(run).items():
        by_conn: dict[str, list[Record]] = {}
        for rec in recs:
            key = conn_key(rec)
            if key is not None:
                by_conn.setdefault(key, []).append(rec)
        for conn, conn_recs in by_conn.items():
            welcomes = [r for r in conn_recs if _is(r, "event", "welcome")]
            invokes = [(time_of(r) or 0.0, integer(r.get("seq"))) for r in conn_recs if _is(r, "invoke", "move")]
            for old_w, new_w in pairwise(welcomes):
                old = index.find(old_w.get("server"), old_w.get("server_conn"), time_of(old_w))
                new = index.find(new_w.get("server"), new_w.get("server_conn"), time_of(new_w))
                tw = time_of(new_w) or 0.0
                if old is None or new is None or old is new or old.closed is None or old.closed + margin >= tw:
                    continue
                start = old.closed + margin
                new_end = new.end()
                if new_end is not None and new_end < tw + margin:
                    continue  # the new upstream died at once: what was handed to it may be lost
                # The client re-sends its unacknowledged moves as soon as the welcome comes.
                stop = tw + margin
                during = sorted({s for t, s in invokes if s is not None and start < t < tw})
                if not during:
                    continue
                judged += 1
                delivered = _deliveries(run, new)
                for seq in during:
                    sent = sum(1 for t, s in invokes if s == seq and start < t < stop)
                    if delivered.get(seq, 0) < sent:
                        violations.append(
                            Violation(
                                NAME,
                                f"client {client} conn {conn}: move {seq} sent during the failover (after "
                                f"{old.journal} saw {old.conn} close at {fmt_t(old.closed)}, before the welcome "
                                f"from {new.journal} at {fmt_t(tw)}) reached {new.conn} {delivered.get(seq, 0)} "
                                f"time(s) for {sent} send(s)",
                                evidence([old_w, new_w, *[r for r in conn_recs if r.get("seq") == seq]]),
                            )
                        )
    notes = [f"{judged} failover(s) with moves sent during them judged (margin {margin:g} s)"]
    return finish(NAME, violations, judged > 0, notes)
