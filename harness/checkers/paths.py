"""`path_forwarded`: every upstream connection carries the path and query its client asked for.

The contract (section 3) requires the request's path and query string to be forwarded unchanged on
every upstream connection, the first one and every failover. The clients record the path they
requested (`conn_open` `path`; limit probes record `path` too); the backends journal the path of
every connection they accept (`open` `path`). A backend connection for client X whose path is not
one X requested is a violation. Clients without a recorded path are not judged.
"""

from __future__ import annotations

from harness.backend import client_id_of
from harness.history import Run

from .base import CheckResult, Violation, evidence, finish, fmt_t, guarded, records, time_of

NAME = "path_forwarded"


@guarded(NAME)
def check_path_forwarded(run: Run) -> CheckResult:
    requested: dict[str, set[str]] = {}
    for rec in records(run.history):
        path = rec.get("path")
        if not isinstance(path, str) or rec.get("f") not in ("conn_open", "connect_attempt", "close_probe"):
            continue
        client = client_id_of(path)
        if client is not None:
            requested.setdefault(client, set()).add(path)
    if not requested:
        return finish(NAME, [], checked=False, notes=["no client recorded the path it requested"])
    violations: list[Violation] = []
    judged = 0
    unknown = 0
    for journal, recs in (run.journals or {}).items():
        for rec in records(recs):
            if rec.get("event") != "open":
                continue
            client, path = rec.get("client"), rec.get("path")
            if not isinstance(client, str) or not isinstance(path, str):
                continue
            wanted = requested.get(client)
            if wanted is None:
                unknown += 1
                continue
            judged += 1
            if path not in wanted:
                violations.append(
                    Violation(
                        NAME,
                        f"backend {journal} conn {rec.get('conn')} at {fmt_t(time_of(rec))} got path {path!r} "
                        f"for client {client}, which asked for {' or '.join(sorted(map(repr, wanted)))}",
                        evidence([rec]),
                    )
                )
    notes = [f"{judged} backend connection(s) judged"]
    if unknown:
        notes.append(f"{unknown} backend connection(s) of clients that recorded no path, not judged")
    return finish(NAME, violations, judged > 0, notes)
