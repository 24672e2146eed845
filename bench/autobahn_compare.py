"""Autobahn protocol compliance of a balancer build: direct against through the balancer.

The Autobahn TestSuite cases are run by ``kosoku`` (PyPI), a native Python 3 runner of the
Autobahn case files; its fuzzing *client* drives a WebSocket server. A balancer is a server
towards its clients, so the cases run twice against the same echo server:

* **direct**: kosoku -> echo server;
* **through the balancer**: kosoku -> balancer build -> echo server.

The echo server is websockets' own Autobahn echo server (``async for m in ws: await
ws.send(m)``, ``max_size`` 32 MiB, permessage-deflate on). Some cases fail even direct,
by websockets' design (7.1.5 is answered with 1002; 9.3.1/9.3.2/9.4.1/9.4.2 hit websockets'
4096-fragment limit and get 1009), so the verdict compares the two runs, not against zero:
a case is **worse** when it passes direct (OK, NON-STRICT or INFORMATIONAL) and does not pass
through the balancer (UNIMPLEMENTED, FAILED or ERROR), or fails in a worse way.
Cases that come out worse are run again, one at a time, both ways (``--retries``); only a
case that is still worse on every retry counts, so that a timing case starved of CPU on a
shared machine is reported as flaky instead of failing the run.

Exit code: 0 when no case is worse through the balancer, 1 otherwise, 2 on a usage or
start-up error. Run from the repository root:

    .venv/bin/python bench/autobahn_compare.py                       # kosoku's whole suite
    .venv/bin/python bench/autobahn_compare.py -i '1.*' -i '7.*'      # a selection
    .venv/bin/python bench/autobahn_compare.py --balancer-cmd './my-lb --config {config}'

``--balancer-cmd`` is a build-contract command template (docs/contract.md): ``{config}`` is
replaced by the path of a JSON config that this script writes (``listen``, ``admin``,
``backends`` and the reference balancer's ``max_size``, which other builds ignore).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `harness` importable from a checkout
    sys.path.insert(0, str(ROOT))

from harness.ports import allocate_port  # noqa: E402
from harness.procs import ProcessFailed, ReadyCheck, Supervisor, expand_command  # noqa: E402

REFERENCE_BALANCER_CMD = "python -m balancer {config}"
ECHO_MAX_SIZE = 2**25  # what websockets' own Autobahn echo server uses; 9.1.6 sends 16 MiB

# The columns of the table, best first: a case's overall outcome (see `outcome`).
OUTCOMES = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR")
# For "worse", only whether a case passes matters: OK, NON-STRICT and INFORMATIONAL are all passes
# in Autobahn's terms. Which of them a case gets can hang on a race (a case that sends a message
# and then a bad frame: echo first is OK, close first is NON-STRICT), and the extra hop through a
# balancer legitimately changes who wins it.
OUTCOME_RANK = {"OK": 0, "NON-STRICT": 0, "INFORMATIONAL": 0, "UNIMPLEMENTED": 1, "FAILED": 2, "ERROR": 3}
SHORT = {"OK": "OK", "NON-STRICT": "NS", "INFORMATIONAL": "INFO", "UNIMPLEMENTED": "UNIMPL",
         "FAILED": "FAIL", "ERROR": "ERR"}  # fmt: skip

CATEGORIES = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved Bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 Handling",
    "7": "Close Handling",
    "9": "Limits/Performance",
    "10": "Misc",
    "12": "Compression (payloads)",
    "13": "Compression (parameters)",
}


@dataclass(frozen=True)
class CaseOutcome:
    """The parts of a kosoku ``CaseResult`` that the comparison needs (plain data, JSON-able)."""

    case_id: str
    behavior: str
    behavior_close: str
    passed: bool
    remote_close_code: int | None
    remote_close_reason: str | None
    result: str
    result_close: str
    duration_ms: int

    @property
    def outcome(self) -> str:
        """Autobahn's headline for the case: its behaviour, or FAILED when only the close failed."""
        if self.behavior in ("OK", "NON-STRICT", "INFORMATIONAL") and not self.passed:
            return "FAILED"
        return self.behavior

    @property
    def rank(self) -> int:
        return OUTCOME_RANK.get(self.outcome, len(OUTCOMES))

    def short(self) -> str:
        code = "-" if self.remote_close_code is None else str(self.remote_close_code)
        return f"{self.behavior}/{self.behavior_close} (close {code})"


def case_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


def category(case_id: str) -> str:
    return case_id.split(".", 1)[0]


def _from_kosoku(r: Any) -> CaseOutcome:
    return CaseOutcome(
        case_id=r.case_id,
        behavior=r.behavior.value,
        behavior_close=r.behavior_close.value,
        passed=bool(r.passed),
        remote_close_code=r.remote_close_code,
        remote_close_reason=r.remote_close_reason,
        result=r.result,
        result_close=r.result_close,
        duration_ms=int(r.duration),
    )


async def run_cases(
    url: str, include: Sequence[str] | None, exclude: Sequence[str] | None, concurrency: int
) -> dict[str, CaseOutcome]:
    """Runs kosoku's fuzzing client against ``url``; returns every case's outcome by id."""
    from kosoku import FailureError, run_fuzzingclient

    try:
        results = await run_fuzzingclient(
            url, list(include) if include else None, list(exclude) if exclude else None, concurrency=concurrency
        )
    except FailureError as failure:  # raised when any case fails; it still carries every result
        results = failure.results
    return {r.case_id: _from_kosoku(r) for r in results}


# -- the echo server (run as a child process: `autobahn_compare.py --serve-echo HOST:PORT`) -----


async def serve_echo(host: str, port: int) -> None:
    import signal

    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def echo(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                await ws.send(message)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(echo, host, port, max_size=ECHO_MAX_SIZE, server_header="wschaos-echo"):
        print(f"echo ready on {host}:{port}", flush=True)
        await stop.wait()


# -- the comparison --------------------------------------------------------------------------


@dataclass
class Comparison:
    direct: dict[str, CaseOutcome]
    balanced: dict[str, CaseOutcome]
    worse: list[str]  # still worse after every retry
    flaky: list[str]  # worse in the first pass, not on a retry
    retried: dict[str, list[tuple[CaseOutcome, CaseOutcome]]]  # case -> [(direct, balanced)] per retry
    seconds_direct: float
    seconds_balanced: float
    balancer_alive: bool
    sessions_after: int | None  # the build's /status `sessions` once every client left (None: no answer)

    def better(self) -> list[str]:
        return [c for c in self.common() if self.balanced[c].rank < self.direct[c].rank]

    def common(self) -> list[str]:
        return sorted(set(self.direct) & set(self.balanced), key=case_key)

    def missing(self) -> list[str]:
        return sorted(set(self.direct) ^ set(self.balanced), key=case_key)

    @property
    def ok(self) -> bool:
        return not self.worse and not self.missing() and self.balancer_alive

    def to_json(self) -> dict[str, Any]:
        return {
            "direct": {k: asdict(v) for k, v in self.direct.items()},
            "balanced": {k: asdict(v) for k, v in self.balanced.items()},
            "worse": self.worse,
            "flaky": self.flaky,
            "retried": {k: [[asdict(d), asdict(b)] for d, b in v] for k, v in self.retried.items()},
            "seconds_direct": self.seconds_direct,
            "seconds_balanced": self.seconds_balanced,
            "balancer_alive": self.balancer_alive,
            "sessions_after": self.sessions_after,
        }


def worse_cases(direct: dict[str, CaseOutcome], balanced: dict[str, CaseOutcome]) -> list[str]:
    return sorted((c for c in direct if c in balanced and balanced[c].rank > direct[c].rank), key=case_key)


def _status_sessions(admin: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://{admin}/status", timeout=2) as resp:
            return int(json.loads(resp.read())["sessions"])
    except Exception:
        return None


def _sessions_drained(admin: str, timeout: float = 5.0) -> int | None:
    deadline = time.monotonic() + timeout
    sessions = _status_sessions(admin)
    while sessions and time.monotonic() < deadline:
        time.sleep(0.1)
        sessions = _status_sessions(admin)
    return sessions


def compare(
    work_dir: Path,
    *,
    balancer_cmd: str = REFERENCE_BALANCER_CMD,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    concurrency: int = 2,
    retries: int = 1,
    balancer_max_size: int | None = ECHO_MAX_SIZE,
    extra_config: dict[str, Any] | None = None,
    log: Any = None,
) -> Comparison:
    """Starts an echo server and the balancer build under a Supervisor, runs the cases both ways.

    Every child is stopped on return or on any exception. ``log`` is a callable for progress
    lines (None: quiet).
    """
    say = log or (lambda _msg: None)
    work_dir.mkdir(parents=True, exist_ok=True)
    with Supervisor(work_dir / "logs") as sup:
        echo_port, listen_port, admin_port = allocate_port(), allocate_port(), allocate_port()
        sup.spawn(
            "echo",
            [sys.executable, str(Path(__file__).resolve()), "--serve-echo", f"127.0.0.1:{echo_port}"],
            ready=ReadyCheck("127.0.0.1", echo_port),
            cwd=ROOT,
        )
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{listen_port}",
            "admin": f"127.0.0.1:{admin_port}",
            "backends": [{"name": "primary", "url": f"ws://127.0.0.1:{echo_port}"}],
        }
        if balancer_max_size is not None:
            config["max_size"] = balancer_max_size  # the reference balancer's key; others ignore it
        config.update(extra_config or {})
        config_path = work_dir / "balancer.json"
        config_path.write_text(json.dumps(config, indent=2))
        balancer = sup.spawn(
            "balancer",
            expand_command(balancer_cmd, config=str(config_path)),
            ready=ReadyCheck("127.0.0.1", listen_port),
            cwd=ROOT,
        )
        direct_url, balanced_url = f"ws://127.0.0.1:{echo_port}", f"ws://127.0.0.1:{listen_port}"

        say(f"direct: {direct_url}")
        t0 = time.monotonic()
        direct = asyncio.run(run_cases(direct_url, include, exclude, concurrency))
        t1 = time.monotonic()
        say(f"direct: {len(direct)} cases in {t1 - t0:.1f}s; through the balancer: {balanced_url}")
        balanced = asyncio.run(run_cases(balanced_url, include, exclude, concurrency))
        t2 = time.monotonic()
        say(f"through the balancer: {len(balanced)} cases in {t2 - t1:.1f}s")

        first = worse_cases(direct, balanced)
        still = list(first)
        retried: dict[str, list[tuple[CaseOutcome, CaseOutcome]]] = {c: [] for c in first}
        for attempt in range(retries):
            if not still:
                break
            say(f"retry {attempt + 1}: {len(still)} case(s) one at a time: {' '.join(still)}")
            again_direct = asyncio.run(run_cases(direct_url, still, None, 1))
            again_balanced = asyncio.run(run_cases(balanced_url, still, None, 1))
            for c in still:
                if c in again_direct and c in again_balanced:
                    retried[c].append((again_direct[c], again_balanced[c]))
            still = [
                c for c in still
                if c not in again_direct or c not in again_balanced or again_balanced[c].rank > again_direct[c].rank
            ]  # fmt: skip
        alive = balancer.running
        sessions = _sessions_drained(f"127.0.0.1:{admin_port}") if alive else None
    return Comparison(
        direct=direct,
        balanced=balanced,
        worse=still,
        flaky=[c for c in first if c not in still],
        retried=retried,
        seconds_direct=t1 - t0,
        seconds_balanced=t2 - t1,
        balancer_alive=alive,
        sessions_after=sessions,
    )


# -- the report ------------------------------------------------------------------------------


def table(cmp: Comparison) -> str:
    """Per category: counts per outcome, direct | through the balancer."""
    cats = sorted({category(c) for c in (*cmp.direct, *cmp.balanced)}, key=int)
    shown = [o for o in OUTCOMES if o in ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED")
             or any(x.outcome == o for x in (*cmp.direct.values(), *cmp.balanced.values()))]  # fmt: skip
    head = ["category", "cases"] + [f"{SHORT[o]} d|b" for o in shown] + ["worse"]
    rows: list[list[str]] = []
    worse = set(cmp.worse)
    totals: dict[str, Counter[str]] = {"d": Counter(), "b": Counter()}
    for cat in [*cats, "all"]:
        ids_d = [c for c in cmp.direct if cat in ("all", category(c))]
        ids_b = [c for c in cmp.balanced if cat in ("all", category(c))]
        cd = Counter(cmp.direct[c].outcome for c in ids_d)
        cb = Counter(cmp.balanced[c].outcome for c in ids_b)
        if cat != "all":
            totals["d"].update(cd)
            totals["b"].update(cb)
        name = "all" if cat == "all" else f"{cat} {CATEGORIES.get(cat, '')}".strip()
        n = str(len(ids_d)) if len(ids_d) == len(ids_b) else f"{len(ids_d)}|{len(ids_b)}"
        row = [name, n] + [f"{cd[o]} | {cb[o]}" for o in shown]
        row.append(str(sum(1 for c in worse if cat in ("all", category(c)))))
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(r: list[str]) -> str:
        return "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r))

    lines = [fmt(head), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows[:-1]]
    lines += ["  ".join("-" * w for w in widths), fmt(rows[-1])]
    return "\n".join(lines)


def report(cmp: Comparison) -> str:
    out = [
        "Autobahn cases (kosoku), d = direct to the echo server, b = through the balancer",
        f"direct {cmp.seconds_direct:.1f}s, through the balancer {cmp.seconds_balanced:.1f}s",
        "",
        table(cmp),
        "",
    ]
    failing_direct = [c for c in cmp.common() if cmp.direct[c].outcome not in ("OK", "NON-STRICT", "INFORMATIONAL")]
    if failing_direct:
        out.append("not passing even direct (the baseline, not counted against the balancer):")
        out += [f"  {c}: direct {cmp.direct[c].short()}; balancer {cmp.balanced[c].short()}" for c in failing_direct]
    if cmp.flaky:
        out.append("worse in the first pass only, not on a one-at-a-time retry (timing; not counted):")
        for c in cmp.flaky:
            d, b = cmp.direct[c], cmp.balanced[c]
            again = "; ".join(f"retry: direct {rd.short()}, balancer {rb.short()}" for rd, rb in cmp.retried[c])
            out.append(f"  {c}: first pass direct {d.short()}, balancer {b.short()} ({b.result}); {again}")
    if cmp.better():
        out.append("better through the balancer than direct: " + " ".join(cmp.better()))
    if cmp.missing():
        out.append("cases missing from one of the runs: " + " ".join(cmp.missing()))
    if not cmp.balancer_alive:
        out.append("THE BALANCER EXITED during the run")
    elif cmp.sessions_after is not None:
        out.append(f"balancer /status sessions after the run: {cmp.sessions_after}")
    if cmp.worse:
        out.append(f"WORSE through the balancer ({len(cmp.worse)}):")
        for c in cmp.worse:
            d, b = cmp.direct[c], cmp.balanced[c]
            out.append(f"  {c}: direct {d.short()} -> balancer {b.short()}")
            out.append(
                f"      balancer: {b.result} | {b.result_close} | reason {b.remote_close_reason!r}"
                f" | {d.duration_ms} ms direct, {b.duration_ms} ms through"
            )
            for rd, rb in cmp.retried.get(c, []):
                out.append(
                    f"      retry: direct {rd.short()} {rd.duration_ms} ms, balancer {rb.short()} {rb.duration_ms} ms"
                )
    else:
        out.append("no case is worse through the balancer than direct")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("--balancer-cmd", default=REFERENCE_BALANCER_CMD, help="build command template with {config}")
    p.add_argument("-i", "--include", action="append", metavar="CASE", help="case id or glob (repeat); default all")
    p.add_argument("-x", "--exclude", action="append", metavar="CASE", help="case id or glob to leave out (repeat)")
    p.add_argument("-p", "--concurrency", type=int, default=2, help="cases run in parallel (default 2)")
    p.add_argument("--retries", type=int, default=1, help="one-at-a-time reruns of worse cases (default 1)")
    p.add_argument(
        "--balancer-max-size", type=int, default=ECHO_MAX_SIZE,
        help=f"max_size in the build's config (default {ECHO_MAX_SIZE}, the echo server's); 0 leaves it out",
    )  # fmt: skip
    p.add_argument("--work-dir", default=None, help="config and process logs here (default: a temp dir)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every case's outcome here")
    p.add_argument("--serve-echo", default=None, metavar="HOST:PORT", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.serve_echo:
        host, _, port = a.serve_echo.rpartition(":")
        asyncio.run(serve_echo(host, int(port)))
        return 0
    if "{config}" not in a.balancer_cmd:
        p.error("--balancer-cmd must contain {config}")

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        work = Path(a.work_dir) if a.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            cmp = compare(
                work,
                balancer_cmd=a.balancer_cmd,
                include=a.include,
                exclude=a.exclude,
                concurrency=a.concurrency,
                retries=a.retries,
                balancer_max_size=a.balancer_max_size or None,
                log=say,
            )
        except ProcessFailed as exc:
            print(f"cannot start: {exc}", file=sys.stderr)
            return 2
    print(report(cmp))
    if a.json:
        Path(a.json).write_text(json.dumps(cmp.to_json(), indent=1))
    return 0 if cmp.ok else 1


if __name__ == "__main__":
    sys.exit(main())
