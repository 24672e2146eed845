"""`failover_delivery`: moves a client sends while its connection fails over are delivered.

The contract ("Delivery semantics across a failover") lets a build lose what it had already handed
to an upstream that then died, but what the client sends *after the build noticed the loss*, while
the new upstream is being opened, waits in the client connection and is relayed, in order, once it
is open. Per client connection and server transition (a welcome from another backend connection),
with the build's latest `upstream_lost` event for that client between the two welcomes at ``tl``
and the new welcome at ``tw``:

- every move invoked on that client connection after ``tl + margin`` and before ``tw`` reached the
  build after it had dropped the old upstream, so it cannot have been handed to it;
- the client sends its `resume` only after ``tw``, so on the leg to the new backend those moves come
  before it: the new backend connection must journal each of them before it journals the resume.

Judging by order, not by counting, keeps this sound under load: an upstream that dies before its
backend read everything loses the resume too, and then nothing is judged. The anchor is the build's
own event, not the old backend's journaled close: under load a build may notice a loss seconds
later, and what it relayed meanwhile was legitimately handed to a dead upstream. So builds without
event lines are not judged. ``meta.expect.delivery_margin_s`` (default 0.25 s) absorbs the
client-to-build latency.
"""

from __future__ import annotations

from itertools import pairwise

from harness.analysis import conn_key
from harness.backend import client_id_of
from harness.history import Record, Run
from harness.records import is_op

from .base import (
    CheckResult,
    Violation,
    evidence,
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


def _recvs_by_conn(run: Run) -> dict[tuple[str, str], list[Record]]:
    """Every journal's ``recv`` records per (journal, backend connection), in time order: indexed
    once, since a failover of each of hundreds of clients asks for one connection's records."""
    out: dict[tuple[str, str], list[Record]] = {}
    for journal, recs in (run.journals or {}).items():
        for r in records(recs):
            if r.get("event") == "recv":
                out.setdefault((journal, str(r.get("conn"))), []).append(r)
    for recvs in out.values():
        recvs.sort(key=lambda r: time_of(r) or 0.0)
    return out


def _before_resume(recvs_by_conn: dict[tuple[str, str], list[Record]], uc: UpstreamConn) -> set[int] | None:
    """The move seqs a backend connection received before its first resume; None without one."""
    seqs: set[int] = set()
    for r in recvs_by_conn.get((uc.journal, uc.conn), []):
        if r.get("kind") == "resume":
            return seqs
        seq = integer(r.get("seq"))
        if r.get("kind") == "move" and seq is not None:
            seqs.add(seq)
    return None


@guarded(NAME)
def check_failover_delivery(run: Run) -> CheckResult:
    margin = run.run_meta.expect_number("delivery_margin_s", DEFAULT_MARGIN_S)
    events = [e for e in records(run.balancer_events) if time_of(e) is not None]
    if not events:
        return finish(
            NAME, [], checked=False, notes=["no balancer event lines: when the build noticed a loss is unknown"]
        )
    client_of_session = {
        str(e.get("session")): client_id_of(str(e.get("path")))
        for e in events
        if e.get("event") == "session_open" and isinstance(e.get("path"), str)
    }
    losses: dict[str, list[float]] = {}
    for e in events:
        client = client_of_session.get(str(e.get("session")))
        if e.get("event") == "upstream_lost" and client is not None:
            losses.setdefault(client, []).append(time_of(e) or 0.0)
    index = index_upstreams(run)
    recvs_by_conn = _recvs_by_conn(run)
    violations: list[Violation] = []
    judged = 0
    for client, recs in run.client_histories().items():
        by_conn: dict[str, list[Record]] = {}
        for rec in recs:
            key = conn_key(rec)
            if key is not None:
                by_conn.setdefault(key, []).append(rec)
        for conn, conn_recs in by_conn.items():
            welcomes = [r for r in conn_recs if is_op(r, "event", "welcome")]
            invokes = [(time_of(r) or 0.0, integer(r.get("seq"))) for r in conn_recs if is_op(r, "invoke", "move")]
            for old_w, new_w in pairwise(welcomes):
                old = index.find(old_w.get("server"), old_w.get("server_conn"), time_of(old_w))
                new = index.find(new_w.get("server"), new_w.get("server_conn"), time_of(new_w))
                tw, tw_old = time_of(new_w) or 0.0, time_of(old_w) or 0.0
                noticed = [t for t in losses.get(client, []) if tw_old <= t <= tw]
                if old is None or new is None or old is new or not noticed or max(noticed) + margin >= tw:
                    continue
                start = max(noticed) + margin
                during = sorted({s for t, s in invokes if s is not None and start < t < tw})
                received = _before_resume(recvs_by_conn, new)
                if not during or received is None:
                    continue
                judged += 1
                for seq in during:
                    if seq not in received:
                        violations.append(
                            Violation(
                                NAME,
                                f"client {client} conn {conn}: move {seq}, sent during the failover (after the "
                                f"build noticed the loss of {old.conn} at {fmt_t(max(noticed))}, before the "
                                f"welcome from {new.journal} at {fmt_t(tw)}), did not reach {new.conn} before "
                                "the client's resume",
                                evidence([old_w, new_w, *[r for r in conn_recs if r.get("seq") == seq]]),
                            )
                        )
    notes = [f"{judged} failover(s) with moves sent during them judged (margin {margin:g} s)"]
    return finish(NAME, violations, judged > 0, notes)
