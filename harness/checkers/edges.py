"""The limit probes' verdicts (harness.probes): `connection_limit`, `size_limit` and
`close_passthrough`. Each judges both sides of its boundary and answers "not checked" in a run
without that probe.

- `connection_limit` (``max_connections`` = N): a connection attempted while fewer than N client
  connections were open must be admitted; one attempted while N were open must get HTTP 503. Open
  connections are counted from the game clients' `conn_open`/`conn_close` records plus the probe's
  own held connections, at the moment each attempt started.
- `size_limit` (``max_size`` = N): a message of exactly N bytes is relayed (the backend's reply
  comes back on an open connection); one of N + 1 bytes gets close code 1009 from the build.
- `close_passthrough`: a backend that ends the session with 1000 or an application code (4000-4999)
  has that code passed to the client (contract section 4), not a failover and not another code.
"""

from __future__ import annotations

from harness.analysis import client_connections
from harness.history import Record, Run
from harness.probes import PROBE_PROCESS

from .base import (
    CheckResult,
    Violation,
    evidence,
    finish,
    fmt_t,
    guarded,
    integer,
    num,
    records,
    time_of,
)

CONNECTION_LIMIT = "connection_limit"
SIZE_LIMIT = "size_limit"
CLOSE_PASSTHROUGH = "close_passthrough"
MESSAGE_TOO_BIG = 1009
SERVICE_UNAVAILABLE = 503


def _probe_records(run: Run, *fs: str) -> list[Record]:
    out = [r for r in records(run.history) if r.get("process") == PROBE_PROCESS and r.get("f") in fs]
    return sorted(out, key=lambda r: time_of(r) or 0.0)


def _configured(run: Run, key: str) -> int | None:
    value = integer(run.run_meta.balancer_config.get(key))
    return value if value is not None and value >= 1 else None


def _client_intervals(run: Run) -> list[tuple[float, float]]:
    """(open, close) of every game-client connection; close is +inf when never seen closed."""
    return [(c.opened, c.closed) for c in client_connections(run.history)]


@guarded(CONNECTION_LIMIT)
def check_connection_limit(run: Run) -> CheckResult:
    outcomes = _probe_records(run, "connect_admitted", "connect_refused", "connect_failed")
    if not outcomes:
        return finish(CONNECTION_LIMIT, [], checked=False, notes=["no max_connections probe in this run"])
    limit = _configured(run, "max_connections")
    if limit is None:
        return finish(CONNECTION_LIMIT, [], checked=False, notes=["run.json balancer_config has no max_connections"])
    clients = _client_intervals(run)
    released = {integer(r.get("slot")): time_of(r) or 0.0 for r in _probe_records(run, "connect_released")}
    violations: list[Violation] = []
    held: list[tuple[int | None, float]] = []  # (slot, admitted at)
    below_admitted = at_limit_judged = False
    for rec in outcomes:
        started = num(rec.get("started")) or time_of(rec) or 0.0
        slot = integer(rec.get("slot"))
        open_now = sum(1 for a, b in clients if a <= started < b) + sum(
            1 for s, _ in held if released.get(s, float("inf")) > started
        )
        where = f"attempt {slot} at {fmt_t(started)} with {open_now} connection(s) open (max_connections {limit})"
        f = rec.get("f")
        if open_now >= limit:
            at_limit_judged = True
            if f == "connect_admitted":
                violations.append(Violation(CONNECTION_LIMIT, f"admitted past the limit: {where}", evidence([rec])))
            elif f == "connect_refused" and integer(rec.get("status")) != SERVICE_UNAVAILABLE:
                what = f"refused with HTTP {rec.get('status')}, not 503: {where}"
                violations.append(Violation(CONNECTION_LIMIT, what, evidence([rec])))
            elif f == "connect_failed":
                violations.append(
                    Violation(CONNECTION_LIMIT, f"no 503 past the limit, {rec.get('error')}: {where}", evidence([rec]))
                )
        else:
            if open_now == limit - 1:
                below_admitted = below_admitted or f == "connect_admitted"
            if f != "connect_admitted":
                violations.append(
                    Violation(
                        CONNECTION_LIMIT,
                        f"refused below the limit ({rec.get('status') or rec.get('error')}): {where}",
                        evidence([rec]),
                    )
                )
        if f == "connect_admitted":
            held.append((slot, time_of(rec) or 0.0))
    both = below_admitted and at_limit_judged
    notes = [] if both else ["the probe did not reach both sides of the limit"]
    return finish(CONNECTION_LIMIT, violations, checked=both, notes=notes)


@guarded(SIZE_LIMIT)
def check_size_limit(run: Run) -> CheckResult:
    sent = _probe_records(run, "message_sent")
    failed = _probe_records(run, "message_probe_failed")
    if not sent and not failed:
        return finish(SIZE_LIMIT, [], checked=False, notes=["no max_size probe in this run"])
    limit = _configured(run, "max_size")
    if limit is None:
        return finish(SIZE_LIMIT, [], checked=False, notes=["run.json balancer_config has no max_size"])
    violations: list[Violation] = []
    sides: set[str] = set()
    for rec in sent:
        size, outcome, code = integer(rec.get("size")), rec.get("outcome"), integer(rec.get("code"))
        if size == limit:
            sides.add("at")
            if outcome != "relayed":
                violations.append(
                    Violation(
                        SIZE_LIMIT,
                        f"a message of exactly max_size ({limit}) bytes was not relayed: {outcome}"
                        + (f" with code {code}" if code is not None else ""),
                        evidence([rec]),
                    )
                )
        elif size == limit + 1:
            sides.add("over")
            if outcome != "closed" or code != MESSAGE_TOO_BIG:
                got = f"closed with {code}" if outcome == "closed" else str(outcome)
                violations.append(
                    Violation(
                        SIZE_LIMIT,
                        f"a message of max_size + 1 ({limit + 1}) bytes was {got}, not closed with 1009",
                        evidence([rec]),
                    )
                )
    notes = [f"probe could not start: {r.get('error')}" for r in failed]
    if sides != {"at", "over"} and not violations:
        notes.append("the probe did not reach both sides of the limit")
    return finish(SIZE_LIMIT, violations, checked=sides == {"at", "over"}, notes=notes)


@guarded(CLOSE_PASSTHROUGH)
def check_close_passthrough(run: Run) -> CheckResult:
    probes = _probe_records(run, "close_probe")
    if not probes:
        return finish(CLOSE_PASSTHROUGH, [], checked=False, notes=["no close_codes probe in this run"])
    violations: list[Violation] = []
    for rec in probes:
        expected, code = integer(rec.get("expected")), integer(rec.get("code"))
        if rec.get("outcome") != "closed" or code != expected:
            got = f"code {code} reason {rec.get('reason')!r}" if rec.get("outcome") == "closed" else rec.get("outcome")
            violations.append(
                Violation(
                    CLOSE_PASSTHROUGH,
                    f"the backend ended a session with {expected}; the client got {got} ({rec.get('error') or ''})",
                    evidence([rec]),
                )
            )
    return finish(CLOSE_PASSTHROUGH, violations, checked=True, notes=[f"{len(probes)} backend close(s) probed"])
