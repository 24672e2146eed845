"""The backends' view of upstream connections, rebuilt from their journals.

A welcome in a client's history names the backend connection that served it (`server`,
`server_conn`); the backend's journal says when that connection opened and closed. Joining the two
is how the black-box checkers see what the balancer did without trusting the balancer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.history import Record, Run

from .base import records, time_of


@dataclass
class UpstreamConn:
    journal: str
    conn: str
    client: str | None
    opened: float
    open_record: Record
    closed: float | None = None
    # A journal's next `start` or `stop` after the open: that backend process ended, so the
    # connection died then even though no `close` could be written.
    process_ended: float | None = None

    def end(self) -> float | None:
        ends = [t for t in (self.closed, self.process_ended) if t is not None]
        return min(ends) if ends else None


class UpstreamIndex:
    def __init__(self, conns: list[UpstreamConn], skipped: int) -> None:
        self.conns = conns
        self.skipped = skipped
        self._by_conn: dict[str, list[UpstreamConn]] = {}
        for c in conns:
            self._by_conn.setdefault(c.conn, []).append(c)

    def find(self, server: Any, conn: Any, at: float | None = None) -> UpstreamConn | None:
        """The backend connection a welcome names. Conn ids are meant to be unique across
        servers and restarts, but if one is reused the latest open before `at` is the one."""
        if conn is None:
            return None
        candidates = self._by_conn.get(str(conn), [])
        if isinstance(server, str):
            named = [c for c in candidates if server in (c.journal, c.open_record.get("server"))]
            candidates = named or candidates
        if not candidates:
            return None
        if at is not None:
            # Slack for the clock skew between the backend and the client that saw the welcome.
            earlier = [c for c in candidates if c.opened <= at + 0.5]
            if earlier:
                return max(earlier, key=lambda c: c.opened)
        return candidates[0]


def index_upstreams(run: Run) -> UpstreamIndex:
    conns: list[UpstreamConn] = []
    skipped = 0
    journals = run.journals if isinstance(run.journals, Mapping) else {}
    for name, journal in journals.items():
        recs = sorted((r for r in records(journal) if time_of(r) is not None), key=lambda r: time_of(r) or 0.0)
        skipped += len(journal) - len(recs) if isinstance(journal, list) else 0
        open_now: dict[str, UpstreamConn] = {}
        for rec in recs:
            t = time_of(rec)
            assert t is not None  # filtered above; keeps mypy honest
            event = rec.get("event")
            if event in ("start", "stop"):
                for c in open_now.values():
                    c.process_ended = t
                open_now.clear()
            elif event == "open":
                conn_id = rec.get("conn")
                if conn_id is None:
                    skipped += 1
                    continue
                client = rec.get("client")
                uc = UpstreamConn(
                    journal=str(name),
                    conn=str(conn_id),
                    client=client if isinstance(client, str) else None,
                    opened=t,
                    open_record=rec,
                )
                conns.append(uc)
                open_now[uc.conn] = uc
            elif event == "close":
                conn_id = rec.get("conn")
                match = open_now.pop(str(conn_id), None) if conn_id is not None else None
                if match is not None:
                    match.closed = t
    return UpstreamIndex(conns, skipped)
