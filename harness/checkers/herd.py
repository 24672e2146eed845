"""`herd_recovered`: after a thundering herd, the build shed what it could not take and everyone
came back.

A herd (:func:`harness.analysis.herds`) is a fault on the lb link or the balancer that dropped at
least :data:`~harness.analysis.HERD_MIN_CLIENTS` clients at once, who then all reconnect. While the
fault is in force nothing is judged here (refusals and drops are the fault's). Once it is over:

- the build may shed load only by refusing the handshake with HTTP 503 or closing with 1013; a
  connection it admitted and then dropped (any other remote close: 1006, 1011...), a handshake it
  cut off, or a refusal with another status is falling over;
- the build stays up: no exit of its process that no fault caused, and it is alive at the end;
- /status stays sane: never more sessions than the configured ``max_connections``;
- every dropped client plays again (an acknowledged move) within ``recovery_deadline_s`` of its
  drop or of the fault's end, whichever is later.
"""

from __future__ import annotations

from typing import Any

from harness.analysis import (
    BUILD_PROCESS,
    EXIT_REPORT_SLACK_S,
    STOPPING_KINDS,
    Herd,
    HerdDrop,
    client_open_timeout_s,
    describe_excused,
    fault_windows,
    herds,
    is_keepalive_close,
    process_exits,
    run_end_time,
    run_excused_keepalive_closes,
    slowness,
)
from harness.history import Record, Run
from harness.records import integer, is_op, num, time_of

from .base import CheckResult, Violation, evidence, finish, fmt_t, guarded

# As recovers_after_heal judges them: the recovery deadline's default, the window too short to
# judge, and the codes (1013, the only close a build may answer a herd with; 1006, no close frame).
from .liveness import ABNORMAL_CLOSURE, DEFAULT_RECOVERY_DEADLINE_S, MIN_RECOVERY_WINDOW_S, TRY_AGAIN_LATER

HERD_RECOVERED = "herd_recovered"
#: The only handshake refusal that sheds load (RFC 6455 leaves it to HTTP: 503 Service Unavailable).
SHED_STATUS = 503
#: An attempt begun this soon after the fault's end may still have met it (the monitor's and the
#: nemesis' view of "over" lag the proxies' and the build's).
FAULT_END_GRACE_S = 0.5


def _failure_kind(error: str) -> str:
    """What a failed connect says about the build: "shed", "refused" (another HTTP status),
    "timeout" (no answer within the open timeout) or "cut" (the handshake was cut off)."""
    if error.startswith("InvalidStatus"):
        return "shed" if f"HTTP {SHED_STATUS}" in error else "refused"
    if error.startswith("TimeoutError"):
        return "timeout"
    return "cut"


class _Judge:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.slow = slowness(run.history)
        self.deadline = run.run_meta.expect_number("recovery_deadline_s", DEFAULT_RECOVERY_DEADLINE_S) * self.slow.scale
        self.deadline_end = run.run_meta.phase("deadline_end")
        self.clients = run.client_histories()
        # A connect that failed within this of the fault's end may have begun while it held.
        self.open_timeout = client_open_timeout_s(run.history)
        self.violations: list[Violation] = []
        self.notes: list[str] = []
        # Keepalive closes that the client's own starved swarm explains are the harness' failure.
        excused = run_excused_keepalive_closes(run)
        self.excused = {id(e.close) for e in excused}
        if excused:
            self.notes.append("inconclusive: " + describe_excused(excused))
        self.set_aside = 0
        self.begun_in_fault = 0
        self.shed_503 = 0
        self.shed_1013 = 0
        self.recover_s: list[float] = []
        self.judged = 0

    def herd(self, herd: Herd) -> None:
        w = herd.window
        for drop in herd.drops:
            self._client(drop, w.end)
        self._build_stayed_up(herd)
        self._status(herd)

    def _client(self, drop: HerdDrop, fault_end: float) -> None:
        start = max(drop.t, fault_end)
        due = start + self.deadline
        recs = self.clients.get(drop.client, [])
        stopped = next((time_of(r) for r in recs if is_op(r, "event", "stopped")), None)
        opened_after: set[Any] = set()
        welcomed: set[Any] = set()
        for rec in recs:
            t = time_of(rec)
            if t is None or t <= drop.t or t > due:
                continue
            if is_op(rec, "event", "conn_open"):
                opened_after.add(rec.get("conn"))
            elif is_op(rec, "event", "welcome"):
                welcomed.add(rec.get("conn"))
            elif is_op(rec, "event", "conn_fail"):
                self._failed_connect(drop.client, rec, t, fault_end)
            elif (
                is_op(rec, "event", "conn_close")
                and rec.get("initiator") == "remote"
                and rec.get("conn") in opened_after
            ):
                self._readmitted_close(drop.client, rec, rec.get("conn") in welcomed)
        back = drop.back_t
        if back is not None and back <= due:
            self.judged += 1
            self.recover_s.append(back - start)
            return
        allowed_end = min(x for x in (due, self.deadline_end, stopped) if x is not None)
        if allowed_end - start < MIN_RECOVERY_WINDOW_S:
            return
        if self.slow.scale > 1.0 and allowed_end < due:
            self.set_aside += 1  # the run's phases were not stretched by the machine's slowness
            return
        self.judged += 1
        within = f"{self.deadline:g} s" if allowed_end >= due else f"the {allowed_end - start:.3g} s the run allowed"
        self.violations.append(
            Violation(
                HERD_RECOVERED,
                f"client {drop.client} was not back within {within} of the herd: dropped at {fmt_t(drop.t)}, "
                f"fault over at {fmt_t(fault_end)}, no acknowledged move by {fmt_t(allowed_end)}",
                evidence([drop.close, *[r for r in recs if start <= (time_of(r) or 0.0) <= allowed_end][-4:]]),
            )
        )

    def _failed_connect(self, client: str, rec: Record, t: float, fault_end: float) -> None:
        error = str(rec.get("error") or "")
        kind = _failure_kind(error)
        if kind == "shed":
            self.shed_503 += 1
            return
        took = num(rec.get("took_s"))
        # When the attempt began: recorded by the client, or at worst an open timeout earlier.
        begun = t - (took if took is not None else self.open_timeout)
        if begun <= fault_end + FAULT_END_GRACE_S:
            self.begun_in_fault += 1  # it may have met the fault (a proxy still dialling a dead build)
            return
        if kind == "timeout" and self.slow.scale > 1.0:
            self.set_aside += 1  # a machine too busy to judge handshake times
            return
        what = {
            "refused": "refused the handshake with another status than 503",
            "timeout": f"did not answer the handshake within the client's {self.open_timeout:g} s",
            "cut": "cut the handshake off instead of refusing it with 503",
        }[kind]
        self.violations.append(
            Violation(HERD_RECOVERED, f"under the herd the build {what}: client {client} at {fmt_t(t)}: {error}",
                      evidence([rec]))
        )  # fmt: skip

    def _readmitted_close(self, client: str, rec: Record, welcomed: bool) -> None:
        code = integer(rec.get("code"))
        if code == TRY_AGAIN_LATER:
            self.shed_1013 += 1
            return
        if id(rec) in self.excused:
            return  # the client's own swarm stalled past the keepalive: the harness' failure
        if self.slow.too_slow and welcomed and (is_keepalive_close(rec) or code == ABNORMAL_CLOSURE):
            # Timing, on a machine too slow to judge it (as clean_failover); a connection dropped
            # before its welcome is no keepalive's or send deadline's doing, and is always judged.
            self.set_aside += 1
            return
        self.violations.append(
            Violation(
                HERD_RECOVERED,
                f"the build admitted client {client} again during the herd and then dropped it: conn "
                f"{rec.get('conn')} closed with {rec.get('code')!r} {rec.get('reason')!r} at {fmt_t(time_of(rec))} "
                f"(shedding load is a 503 refusal or a {TRY_AGAIN_LATER} close)",
                evidence([rec]),
            )
        )

    def _build_stayed_up(self, herd: Herd) -> None:
        w = herd.window
        stops = [
            v for v in fault_windows(self.run.history, run_end_time(self.run))
            if v.kind in STOPPING_KINDS and BUILD_PROCESS in v.targets
        ]  # fmt: skip
        for e in process_exits(self.run.history):
            if e.name != BUILD_PROCESS or e.t < w.start:
                continue
            if any(v.start <= e.t <= v.end + EXIT_REPORT_SLACK_S for v in stops):
                continue  # the nemesis stopped it
            self.violations.append(
                Violation(
                    HERD_RECOVERED,
                    f"the build fell over during the herd: its process (pid {e.pid}) ended with exit code "
                    f"{e.exit_code} at {fmt_t(e.t)}, and no fault stopped it",
                    evidence([{"process_exit": e.name, "pid": e.pid, "exit_code": e.exit_code, "t": e.t}]),
                )
            )
        if self.run.run_meta.final.get("balancer_alive") is False:
            self.violations.append(
                Violation(HERD_RECOVERED, "the build's process was not running at the end of the run",
                          evidence([{"final": self.run.run_meta.final}]))
            )  # fmt: skip

    def _status(self, herd: Herd) -> None:
        limit = integer(self.run.run_meta.balancer_config.get("max_connections"))
        samples = [
            r for r in self.run.history
            if is_op(r, "event", "status") and r.get("process") == "monitor"
            and (time_of(r) or 0.0) >= herd.window.start
        ]  # fmt: skip
        most = 0
        for rec in samples:
            status = rec.get("status")
            sessions = integer(status.get("sessions")) if isinstance(status, dict) else None
            if sessions is None:
                continue
            most = max(most, sessions)
            if limit is not None and sessions > limit:
                self.violations.append(
                    Violation(
                        HERD_RECOVERED,
                        f"/status showed {sessions} sessions at {fmt_t(time_of(rec))}, over max_connections {limit}",
                        evidence([rec]),
                    )
                )
        if samples:
            self.notes.append(f"/status: at most {most} sessions" + (f" (max_connections {limit})" if limit else ""))
        else:
            self.notes.append("/status not sampled during the herd: its sanity not judged")


@guarded(HERD_RECOVERED)
def check_herd_recovered(run: Run) -> CheckResult:
    found, most = herds(run)
    if not found:
        return finish(
            HERD_RECOVERED,
            [],
            checked=False,
            notes=[f"no herd: no fault on the lb link or the balancer dropped 100 or more clients at once "
                   f"(the most: {most})"],
        )  # fmt: skip
    judge = _Judge(run)
    for herd in found:
        judge.herd(herd)
        judge.notes.insert(
            0,
            f"herd: {len(herd.drops)} clients dropped by {herd.window.label} at {fmt_t(herd.window.start)}, "
            f"over at {fmt_t(herd.window.end)}",
        )
    if judge.recover_s:
        ordered = sorted(judge.recover_s)
        p50 = ordered[len(ordered) // 2]
        judge.notes.append(
            f"{len(ordered)} back within the recovery deadline {judge.deadline:g} s: "
            f"p50 {p50:.2f} s, max {ordered[-1]:.2f} s"
        )
    judge.notes.append(f"shed: {judge.shed_503} handshake(s) refused with 503, {judge.shed_1013} close(s) with 1013")
    if judge.begun_in_fault:
        judge.notes.append(f"{judge.begun_in_fault} failed connect(s) not judged: begun while the fault held")
    if judge.set_aside:
        judge.notes.insert(0, f"inconclusive: {judge.set_aside} timing finding(s) not judged: {judge.slow.describe()}")
    inconclusive = bool(judge.set_aside or judge.excused)
    return finish(HERD_RECOVERED, judge.violations, checked=judge.judged > 0 and not inconclusive, notes=judge.notes)
