"""The balancer benchmark: the reference balancer against direct, HAProxy and nginx, side by side.

One run, the same picows echo backends (a primary and a secondary) for every target:

* **load**: round trips/s and RTT p50/p99/p99.9 for 64 B and 16 KiB messages at 1, 16 and 256
  connections, each with one message in flight; the generator is ``--procs`` picows processes.
  Rounds are interleaved (every target once per cell, in a rotating order), so a burst of load
  from elsewhere on the machine hits all targets alike. Proxy CPU per round trip from the
  proxy's process tree. A generator check first shows that the generator saturates the direct
  connection (1 process against ``--procs``, and each worker's own CPU share).
* **failover**: 8 clients, one message per 5 ms; SIGKILL the primary, then per client the time
  to its next successful round trip (of a message sent after the kill) and whether its
  connection was closed (a closed client reconnects at once). Then the same with a blackhole
  partition of the primary: an embedded Toxiproxy between the proxy and the primary, and a
  ``timeout`` toxic with timeout 0 both ways.
* **sessions** (reference balancer, keepalive on): hold 1k, 5k (``--sessions``) idle sessions;
  the time to open them, RSS per session, idle CPU; then SIGKILL the primary and measure the
  time until every surviving session is attached to the secondary, how many were closed, and
  the peak rate of upstream connects seen by the secondary.
* **harness** (``--harness``, slow): wall time of ``certify --profile quick`` and ``ci`` and
  scenarios per minute, and of the ``make test`` suite.

Everything targets 127.0.0.1, is bounded in count and time, and every process is started
under the harness's ``Supervisor`` and reaped on exit. Writes JSON (``--json``), a table, and
docs/performance.md's balancer section with a plot. Run from the repository root:

    .venv/bin/python bench/balancer_bench.py [--quick] [--sessions 1000,5000,10000] [--harness]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from bench_report import (  # noqa: E402
    GOAL_CELL,
    failover_table,
    fmt,
    goals_table,
    load_table,
    pct,
    percentile,
    phases_line,
    plot,
    quantiles,
    sessions_table,
    summarise,
    write_doc,
)
from targets import (  # noqa: E402
    ALL_TARGETS,
    HOST,
    PROXIES,
    ROOT,
    TARGETS,
    Backend,
    Target,
    last_json,
    missing_proxies,
    read_json_lines,
    start_backend,
    start_target,
    versions,
)

from harness.history import parse_event_lines  # noqa: E402
from harness.ports import allocate_port  # noqa: E402
from harness.procs import ManagedProcess, ReadyCheck, Supervisor, install_signal_handlers  # noqa: E402
from harness.waiting import wait_until  # noqa: E402

LOADGEN = str(BENCH / "loadgen.py")
PLAY_WARMUP_S = 1.0
# The reference balancer's keepalive in the failover and session runs: a blackhole is noticed
# after about ping_interval + ping_timeout (docs/contract.md section 9).
PING_S = 1.0
# Rounds of the goals' cell by default, in all: the matrix's own, then rounds of that cell alone.
# Its per-round ratio to HAProxy ranged from 0.63 to 0.90 within one run on this machine
# (docs/performance.md), so the verdict takes the median of several.
GOAL_CELL_ROUNDS = 6


# -- helpers ---------------------------------------------------------------------------------
def raise_fd_limit() -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return {"before": soft, "now": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "hard": hard}


def load_plan(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """(round, size, conns) in the order measured: ``--rounds`` rounds of the whole matrix, then
    the goals' cell alone until it has ``--goal-rounds`` rounds (when the matrix holds it)."""
    plan = [(rnd, size, conns) for rnd in range(args.rounds) for size in args.sizes for conns in args.conns]
    size, conns = GOAL_CELL
    if size in args.sizes and conns in args.conns:
        plan += [(rnd, size, conns) for rnd in range(args.rounds, args.goal_rounds)]
    return plan


def wait_exit(proc: ManagedProcess, timeout: float) -> None:
    wait_until(lambda: not proc.running, timeout=timeout, interval=0.05, what=f"{proc.name} to finish")


class Bench:
    def __init__(self, args: argparse.Namespace, sup: Supervisor, workdir: Path) -> None:
        self.args = args
        self.sup = sup
        self.workdir = workdir
        self.serial = 0

    def name(self, stem: str) -> str:
        self.serial += 1
        return f"{stem}-{self.serial}"

    def loadgen(self, mode: str, url: str, *extra: str) -> ManagedProcess:
        argv = [sys.executable, LOADGEN, mode, "--url", url, *extra]
        return self.sup.spawn(self.name(mode), argv, wait=False)

    # -- load ------------------------------------------------------------------------------
    def load_cell(self, target: Target, size: int, conns: int, procs: int, backend: Backend) -> dict[str, Any]:
        per = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
        per = [n for n in per if n]
        duration = self.args.duration
        start_at = time.time() + 1.0 + 0.01 * conns  # connect and warm up first
        workers = [
            self.loadgen(
                "load",
                target.url,
                "--conns",
                str(n),
                "--size",
                str(size),
                "--duration",
                str(duration),
                "--start-at",
                f"{start_at:.6f}",
            )
            for n in per
        ]
        wait_until(lambda: time.time() >= start_at, timeout=30, interval=0.005, what="the measured window")
        cpu0, backend_cpu0 = target.cpu_seconds(), backend.cpu_seconds()
        machine0 = psutil.cpu_times()
        wall0 = time.perf_counter()
        wait_until(lambda: time.time() >= start_at + duration, timeout=60, interval=0.005, what="window end")
        cpu, backend_cpu = target.cpu_seconds() - cpu0, backend.cpu_seconds() - backend_cpu0
        machine1 = psutil.cpu_times()
        wall = time.perf_counter() - wall0
        all_time = sum(machine1) - sum(machine0)
        idle_time = (machine1.idle + machine1.iowait) - (machine0.idle + machine0.iowait)
        for worker in workers:
            wait_exit(worker, 30)
        results = [last_json(w) for w in workers]
        histogram: Counter[int] = Counter()
        for r in results:
            histogram.update({int(k): v for k, v in r["histogram"].items()})
        count = sum(r["count"] for r in results)
        errors: Counter[str] = Counter()
        for r in results:
            errors.update(r["errors"])
        return {
            "target": target.kind,
            "size": size,
            "conns": conns,
            "procs": len(per),
            "connected": sum(r["connections"] for r in results),
            "rps": count / duration,
            "p50_us": percentile(histogram, 0.5),
            "p99_us": percentile(histogram, 0.99),
            "p999_us": percentile(histogram, 0.999),
            "proxy_cpu_us_per_rt": (cpu / count * 1e6) if (count and target.proc) else None,
            "proxy_cpu_share": cpu / wall if target.proc else None,
            "generator_cpu_share": [round(r["cpu_share"], 3) for r in results],
            "backend_cpu_share": backend_cpu / wall,
            "machine_busy": 1 - idle_time / all_time if all_time > 0 else None,
            "errors": dict(errors),
        }

    # -- failover --------------------------------------------------------------------------
    def failover_run(
        self, target: Target, fault: str, inject: Any, heal: Any, watch: Backend, after_s: float
    ) -> dict[str, Any]:
        clients = self.args.failover_clients
        duration = PLAY_WARMUP_S + after_s + 5.0  # generous: the wait below is on the clients being in place
        players = [
            self.loadgen("play", target.url, "--conns", str(n), "--duration", str(duration), "--name", f"p{i}")
            for i, n in enumerate(split(clients, self.args.procs))
        ]
        wait_until(
            lambda: (watch.stats_lines() or [{"open": 0}])[-1]["open"] >= clients,
            timeout=15,
            what=f"{clients} clients on the primary",
        )
        time.sleep(PLAY_WARMUP_S)  # a steady stretch of play before the fault (measured, not a sync)
        # A plain TCP connection to the watched backend, idle: it reads EOF once the kernel has torn
        # the killed process down and closed its sockets, the earliest any proxy can notice.
        # Watched from a thread of its own, so that the kill's reaping does not delay the reading.
        witness = EofWitness((HOST, watch.port), after_s) if fault == "sigkill" else None
        # A SIGKILL takes effect as it is sent; a toxic only once the API call has returned (a
        # message sent during the call may still get through, and must not count as recovery).
        fault_at = time.time()
        inject()
        if fault != "sigkill":
            fault_at = time.time()
        eof_at = witness.result() if witness is not None else None
        sockets_closed_ms = (eof_at - fault_at) * 1000 if eof_at is not None else None
        try:
            time.sleep(after_s)  # the observation window after the fault
        finally:
            heal()
        for player in players:
            wait_exit(player, duration + 10)
        per_client: list[dict[str, Any]] = []
        steady: list[float] = []  # RTTs in the steady second before the fault: what the gap compares with
        for player in players:
            for client in last_json(player)["clients"]:
                steady += [(r - s) * 1000 for s, r in client["pairs"] if s >= fault_at - PLAY_WARMUP_S and r < fault_at]
                after = [received - fault_at for sent, received in client["pairs"] if sent >= fault_at]
                gap = min(after) if after else None
                before = [received for sent, received in client["pairs"] if received < fault_at]
                per_client.append(
                    {
                        "client": client["name"],
                        "gap_ms": None if gap is None or gap > after_s else gap * 1000,
                        "closed": any(t >= fault_at - 0.01 for t in client["closes"]),
                        "played_before": len(before) > 0,
                    }
                )
        gaps = [c["gap_ms"] for c in per_client if c["gap_ms"] is not None]
        phases = balancer_phases(target, fault_at) if target.kind.startswith("reference") else None
        return {
            "target": target.kind,
            "fault": fault,
            "clients": len(per_client),
            "closed": sum(c["closed"] for c in per_client),
            "recovered": len(gaps),
            "window_ms": after_s * 1000,
            "gap_ms": quantiles(gaps),
            "steady_rtt_ms": quantiles(steady),
            "per_client": per_client,
            "phases_ms": phases,
            "backend_sockets_closed_ms": sockets_closed_ms,
        }

    def failover_kill(self, kind: str, primary: Backend, secondary: Backend) -> dict[str, Any]:
        target = start_target(
            self.sup,
            kind,
            primary.address,
            secondary.address,
            self.workdir,
            tag="-kill",
            balancer=self.failover_config(),
        )
        try:
            return self.failover_run(
                target, "sigkill", lambda: primary.proc.kill(), lambda: None, primary, self.args.failover_window
            )
        finally:
            stop(target)
            primary.proc.restart()

    def failover_partition(self, kind: str, primary: Backend, secondary: Backend, toxi_api: str) -> dict[str, Any]:
        listen = f"{HOST}:{allocate_port()}"
        name = f"primary-{kind}"
        post(f"{toxi_api}/proxies", {"name": name, "listen": listen, "upstream": primary.address})
        target = start_target(
            self.sup, kind, listen, secondary.address, self.workdir, tag="-part", balancer=self.failover_config()
        )

        def inject() -> None:
            for stream in ("upstream", "downstream"):
                post(
                    f"{toxi_api}/proxies/{name}/toxics",
                    {"name": f"bh-{stream}", "type": "timeout", "stream": stream, "attributes": {"timeout": 0}},
                )

        try:
            return self.failover_run(target, "blackhole", inject, lambda: None, primary, self.args.partition_window)
        finally:
            stop(target)
            with contextlib.suppress(OSError):
                request(f"{toxi_api}/proxies/{name}", method="DELETE")

    def failover_config(self) -> dict[str, Any]:
        return {"ping_interval_s": PING_S, "ping_timeout_s": PING_S}

    # -- sessions --------------------------------------------------------------------------
    def sessions(self, count: int, primary: Backend, secondary: Backend, fd_limit: int) -> dict[str, Any]:
        config = {"ping_interval_s": 5.0, "ping_timeout_s": 5.0, "health_interval_s": 1.0}
        target = start_target(
            self.sup, "reference", primary.address, secondary.address, self.workdir, tag=f"-{count}", balancer=config
        )
        notes: list[str] = []
        needed = 2 * count + 64
        if needed > fd_limit:
            notes.append(
                f"ulimit -n binds: the balancer needs about {needed} descriptors (a client and an upstream "
                f"socket per session) and the limit is {fd_limit}"
            )
        try:
            rss0 = target.rss_bytes()
            sec0 = (secondary.stats_lines() or [{"accepted": 0}])[-1]["accepted"]
            holders = [
                self.loadgen("hold", target.url, "--conns", str(n), "--duration", "600", "--open-concurrency", "32")
                for n in split(count, self.args.procs)
            ]
            open_deadline = 60 + count / 50
            try:
                wait_until(
                    lambda: all(_opened(h) or not h.running for h in holders),
                    timeout=open_deadline,
                    interval=0.1,
                    what=f"{count} sessions to open",
                )
            except TimeoutError:
                # Bounded: report how far it got (the backends count the upstreams) and move on.
                on_p = (primary.stats_lines() or [{"open": 0}])[-1]["open"]
                on_s = (secondary.stats_lines() or [{"open": 0}])[-1]["open"]
                rss = target.rss_bytes()
                for holder in holders:
                    holder.terminate(timeout=20)
                notes.append(
                    f"opening did not finish within {open_deadline:.0f} s: {on_p + on_s} upstreams open at the "
                    "deadline; the idle and mass-failover measurements were skipped"
                )
                return {
                    "sessions": count, "held": on_p + on_s, "open_failed": {}, "open_s": None,
                    "rss_mib": rss / 2**20, "rss_kib_per_session": (rss - rss0) / 1024 / max(1, on_p + on_s),
                    "idle_cpu_share": None, "on_primary_before_kill": on_p, "on_secondary_before_kill": on_s,
                    "rehome_s": None, "closed": None, "survivors": None, "secondary_accepts": None,
                    "peak_connects_per_s": None, "notes": notes,
                }  # fmt: skip
            opened = [_opened(h) or {"opened": 0, "seconds": 0.0, "failed": {"exited": 1}} for h in holders]
            held = sum(o["opened"] for o in opened)
            failed: Counter[str] = Counter()
            for o in opened:
                failed.update(o["failed"])
            open_s = max(o["seconds"] for o in opened)
            # Idle: no traffic, keepalive pings only.
            cpu0, wall0 = target.cpu_seconds(), time.perf_counter()
            time.sleep(self.args.idle_s)  # the idle window being measured
            idle_cpu = (target.cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
            rss = target.rss_bytes()
            # Where the sessions are just before the kill: a balancer that lost the primary while
            # opening (a failed upstream handshake marks it down) already has some on the secondary.
            on_primary = (primary.stats_lines() or [{"open": 0}])[-1]["open"]
            on_secondary_before = (secondary.stats_lines() or [{"open": 0}])[-1]["open"]
            # Mass failover.
            fault_at = time.time()
            primary.proc.kill()

            def settled() -> bool:
                h = [(_status(x) or {"open": 0, "closed": 0}) for x in holders]
                still_open = sum(s["open"] for s in h)
                on_secondary = (secondary.stats_lines() or [{"open": 0}])[-1]["open"]
                return on_secondary >= still_open

            rehome_s: float | None
            try:
                wait_until(settled, timeout=self.args.rehome_timeout, interval=0.05, what="sessions re-homed")
                rehome_s = time.time() - fault_at
            except TimeoutError:
                rehome_s = None
            final = [(_status(x) or {"open": 0, "closed": 0}) for x in holders]
            lines = [x for x in secondary.stats_lines() if x["t"] >= fault_at - 0.1]
            peak = 0.0
            for a, b in itertools.pairwise(lines):
                if b["t"] > a["t"]:
                    peak = max(peak, (b["accepted"] - a["accepted"]) / max(b["t"] - a["t"], 0.1))
            for holder in holders:
                holder.terminate(timeout=20)
            return {
                "sessions": count,
                "held": held,
                "open_failed": dict(failed),
                "open_s": open_s,
                "rss_mib": rss / 2**20,
                "rss_kib_per_session": (rss - rss0) / 1024 / held if held else None,
                "idle_cpu_share": idle_cpu,
                "on_primary_before_kill": on_primary,
                "on_secondary_before_kill": on_secondary_before,
                "rehome_s": rehome_s,
                "closed": sum(s["closed"] for s in final),
                "survivors": sum(s["open"] for s in final),
                "secondary_accepts": (secondary.stats_lines() or [{"accepted": 0}])[-1]["accepted"] - sec0,
                "peak_connects_per_s": peak,
                "notes": notes,
            }
        finally:
            stop(target)
            if not primary.proc.running:
                primary.proc.restart()


def _opened(proc: ManagedProcess) -> dict[str, Any] | None:
    for line in read_json_lines(proc.stdout_path):
        if "opened" in line:
            return line
    return None


def _status(proc: ManagedProcess) -> dict[str, Any] | None:
    lines = [x for x in read_json_lines(proc.stdout_path) if "closed" in x and "t" in x]
    return lines[-1] if lines else None


def split(total: int, parts: int) -> list[int]:
    out = [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
    return [n for n in out if n]


def stop(target: Target) -> None:
    if target.proc is not None:
        target.proc.stop()


def request(url: str, body: dict[str, Any] | None = None, method: str = "GET") -> bytes:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as reply:
        return reply.read()


def post(url: str, body: dict[str, Any]) -> bytes:
    return request(url, body, method="POST")


# -- harness throughput ----------------------------------------------------------------------
def make_test_steps(bin_dir: Path) -> list[list[str]]:
    """What `make test` runs (lint, then the suite: the Makefile's recipes, which tests/bench
    holds these equal to), with the venv of ``bin_dir``, so that the bench does not build a second
    venv in a checkout that has none; the install step is not timed."""
    return [
        [str(bin_dir / "ruff"), "check", "."],
        [str(bin_dir / "mypy"), "balancer", "harness", "scenarios", "bench"],
        [str(bin_dir / "python"), "-m", "pytest", "-n", "4", "-m", "not slow", "-p", "no:randomly", "-q"],
    ]


def harness_throughput(
    profiles: list[str], with_tests: bool, workdir: Path, parallel: list[int] | None = None
) -> dict[str, Any]:
    """Certify's wall time per profile and per ``--parallel`` setting, one after the other in one
    run, so the lanes' speed-up is a ratio measured side by side (``parallel`` None: the default)."""
    out: dict[str, Any] = {}
    settings: list[int | None] = list(parallel) if parallel else [None]
    for profile, lanes in [(p, n) for p in profiles for n in settings]:
        label = profile if lanes is None else f"{profile}_parallel{lanes}"
        report = workdir / f"cert-{label}"
        started = time.perf_counter()
        lanes_args = [] if lanes is None else ["--parallel", str(lanes)]
        done = subprocess.run(
            [sys.executable, "-m", "harness", "certify", "--profile", profile, *lanes_args, "--report", str(report)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        wall = time.perf_counter() - started
        try:
            cert = json.loads((report / "certificate.json").read_text())
            scenarios = len(cert.get("scenarios", []))
            verdict = cert.get("verdict")
        except (OSError, json.JSONDecodeError):
            scenarios, verdict = 0, f"no certificate (exit {done.returncode})"
        out[f"certify_{label}"] = {
            "wall_s": wall,
            "scenarios": scenarios,
            "verdict": verdict,
            "scenarios_per_min": scenarios / (wall / 60) if wall else None,
        }
    if with_tests:
        steps = make_test_steps(Path(sys.executable).parent)
        started = time.perf_counter()
        summary, code = "", 0
        for step in steps:
            done = subprocess.run(step, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
            code = code or done.returncode
            summary = (done.stdout.strip().splitlines() or [""])[-1]
        out["make_test"] = {"wall_s": time.perf_counter() - started, "exit": code, "summary": summary}
    return out


# -- report ----------------------------------------------------------------------------------
# -- main ------------------------------------------------------------------------------------
def parse_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(ALL_TARGETS)} (default {','.join(TARGETS)})",
    )
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the load matrix")
    p.add_argument(
        "--goal-rounds",
        type=int,
        default=GOAL_CELL_ROUNDS,
        help=f"rounds of the goals' cell ({GOAL_CELL[0]} B x {GOAL_CELL[1]} conns) in all, counting the matrix's",
    )
    p.add_argument("--duration", type=float, default=2.0, help="measured seconds per load cell")
    p.add_argument("--procs", type=int, default=2, help="load generator processes")
    p.add_argument("--sizes", type=parse_list, default=[64, 16384])
    p.add_argument("--conns", type=parse_list, default=[1, 16, 256])
    p.add_argument("--failover-clients", type=int, default=8)
    p.add_argument("--failover-window", type=float, default=3.0, help="seconds watched after a SIGKILL")
    p.add_argument("--partition-window", type=float, default=5.0, help="seconds watched after a blackhole")
    p.add_argument("--sessions", type=parse_list, default=[1000, 5000], help="idle-session counts (10000 is slow)")
    p.add_argument("--idle-s", type=float, default=6.0, help="idle window for the idle-CPU measurement")
    p.add_argument("--rehome-timeout", type=float, default=60.0)
    p.add_argument("--skip", default="", help="comma-separated parts to skip: load,failover,sessions")
    p.add_argument("--harness", action="store_true", help="also time certify quick and ci, and make test (slow)")
    p.add_argument("--harness-profiles", default="quick,ci", help="certify profiles timed by --harness")
    p.add_argument("--no-harness-tests", action="store_true", help="with --harness: do not time the test suite")
    p.add_argument(
        "--harness-parallel",
        type=parse_list,
        default=None,
        help="with --harness: time certify at each of these --parallel settings (e.g. 1,4), side by side",
    )
    p.add_argument("--no-install", action="store_true", help="never apt-get install HAProxy or nginx")
    p.add_argument("--json", type=Path, default=ROOT / "reports" / "balancer_bench.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md", help="'' to leave docs alone")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "balancer_bench.png")
    p.add_argument(
        "--report-only", type=Path, metavar="JSON", help="measure nothing: print and write the docs from a stored run"
    )
    p.add_argument("--quick", action="store_true", help="1 round of 1 s cells, 1000 sessions: a smoke run")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in args.targets if t not in ALL_TARGETS]
    if bad:
        p.error(f"unknown target(s) {', '.join(bad)}; expected {', '.join(ALL_TARGETS)}")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip - {"load", "failover", "sessions"}:
        p.error(f"--skip takes load, failover, sessions; got {', '.join(sorted(args.skip))}")
    if args.quick:
        args.rounds, args.goal_rounds, args.duration, args.sessions = 1, 1, 1.0, [1000]
    if args.procs < 1 or args.rounds < 1 or args.goal_rounds < 1 or args.duration <= 0:
        p.error("--procs, --rounds and --goal-rounds must be >= 1 and --duration > 0")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    fd_limit = raise_fd_limit()
    notes: list[str] = []
    absent = missing_proxies(install=not args.no_install) if {"haproxy", "nginx"} & set(args.targets) else {}
    for name, why in absent.items():
        if name in args.targets:
            notes.append(f"{name} skipped: {why}")
    targets = [t for t in args.targets if t not in absent]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "fd_limit": fd_limit,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": versions(),
        "args": {
            k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
        },
        "notes": notes,
    }
    if fd_limit["now"] < 2 * max(args.sessions) + 64:
        notes.append(
            f"ulimit -n is {fd_limit['now']} (hard limit {fd_limit['hard']}): it binds for "
            f"{max(args.sessions)} sessions, which need about {2 * max(args.sessions) + 64} descriptors in the balancer"
        )
    workdir = Path(tempfile.mkdtemp(prefix="wschaos-bench-"))
    print(f"logs and configs: {workdir}", flush=True)
    print(f"ulimit -n: {fd_limit['before']} -> {fd_limit['now']} (hard limit {fd_limit['hard']})", flush=True)
    for note in notes:
        print(f"NOTE: {note}", flush=True)
    with Supervisor(workdir / "logs") as sup:
        bench = Bench(args, sup, workdir)
        primary = start_backend(sup, "primary")
        secondary = start_backend(sup, "secondary")
        if "load" not in args.skip:
            running = [start_target(sup, kind, primary.address, secondary.address, workdir) for kind in targets]
            direct = running[0] if targets[0] == "direct" else None
            report["generator_check"] = generator_check(bench, direct, primary, args)
            cells: list[dict[str, Any]] = []
            for rnd, size, conns in load_plan(args):
                shift = (rnd + len(cells)) % len(running)
                for target in running[shift:] + running[:shift]:
                    cell = bench.load_cell(target, size, conns, args.procs, primary)
                    cell["round"] = rnd + 1
                    cells.append(cell)
                    print(
                        f"round {rnd + 1} {size:>5} B {conns:>3} conn {target.kind:<9} "
                        f"{cell['rps']:>8.0f} rt/s  p50 {fmt(cell['p50_us']):>6} µs  "
                        f"p99 {fmt(cell['p99_us']):>6} µs  "
                        f"proxy CPU {fmt(cell['proxy_cpu_us_per_rt'], '.1f')} µs/rt"
                        f"  gen CPU {cell['generator_cpu_share']} backend CPU {cell['backend_cpu_share']:.2f}"
                        f" machine {fmt((cell['machine_busy'] or 0) * 100)}%"
                        + (f"  errors {cell['errors']}" if cell["errors"] else ""),
                        flush=True,
                    )
            for target in running:
                stop(target)
            report["load_cells"] = cells
            report["load"] = summarise(cells)
        if "failover" not in args.skip:
            proxies = [t for t in targets if t in PROXIES]
            runs = []
            # Every target's kill hits a freshly started primary (each kill restarts it for the next).
            # The kernel closes a killed process's sockets only after tearing down its memory, and
            # the primary that served the load matrix had grown: the first target's clients waited
            # 3.7 and 5.7 ms for that, the next ones 2.8 to 3.2 ms (docs/performance.md).
            primary.proc.restart()
            for kind in proxies:
                result = bench.failover_kill(kind, primary, secondary)
                runs.append(result)
                print_failover(result)
            toxi_port = allocate_port()
            sup.spawn(
                "toxiproxy",
                [sys.executable, "-m", "harness.toxiproxy", "--host", HOST, "--port", str(toxi_port)],
                ready=ReadyCheck(HOST, toxi_port),
                cwd=ROOT,
            )
            for kind in proxies:
                result = bench.failover_partition(kind, primary, secondary, f"http://{HOST}:{toxi_port}")
                runs.append(result)
                print_failover(result)
            report["failover"] = runs
            report["failover_ping_s"] = PING_S
        if "sessions" not in args.skip and "reference" in targets:
            runs = []
            for count in args.sessions:
                result = bench.sessions(count, primary, secondary, fd_limit["now"])
                runs.append(result)
                print(
                    f"sessions {count}: held {result['held']} opened in {fmt(result['open_s'], '.1f')} s, RSS "
                    f"{result['rss_mib']:.0f} MiB ({fmt(result['rss_kib_per_session'], '.1f')} KiB/session), idle CPU "
                    f"{fmt(pct(result['idle_cpu_share']), '.1f')}%, on primary/secondary before the kill "
                    f"{result['on_primary_before_kill']}/{result['on_secondary_before_kill']}, re-homed in "
                    f"{fmt(result['rehome_s'], '.2f')} s, closed {fmt(result['closed'])}, peak "
                    f"{fmt(result['peak_connects_per_s'])} connects/s {result['notes']}",
                    flush=True,
                )
            report["sessions"] = runs
    if args.harness:
        report["harness"] = harness_throughput(
            [p for p in args.harness_profiles.split(",") if p],
            with_tests=not args.no_harness_tests,
            workdir=workdir,
            parallel=args.harness_parallel,
        )
        print(json.dumps(report["harness"], indent=2))
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_s"] = time.perf_counter() - started
    return report


class EofWitness:
    """An idle TCP connection to a backend, and when it read EOF (or None within ``window_s``)."""

    def __init__(self, address: tuple[str, int], window_s: float) -> None:
        self._sock = socket.create_connection(address)
        self._eof_at: float | None = None
        self._thread = threading.Thread(target=self._watch, args=(window_s,), daemon=True)
        self._thread.start()

    def _watch(self, window_s: float) -> None:
        with self._sock:
            if select.select([self._sock], [], [], window_s)[0]:
                self._eof_at = time.time()

    def result(self) -> float | None:
        self._thread.join()
        return self._eof_at


def balancer_phases(target: Target, fault_at: float) -> dict[str, Any] | None:
    """Where a failover's gap went, from the reference balancer's own event lines.

    Per session: the fault until the balancer saw its upstream lost, and until the upstream on
    the secondary was open. What remains of the client's gap after that is the re-sent or next
    message's trip through the new upstream.
    """
    if target.proc is None or not target.proc.stdout_path.exists():
        return None
    lost: dict[str, float] = {}
    reopened: dict[str, float] = {}
    for event in parse_event_lines(target.proc.stdout_path.read_text(errors="replace")):
        if not isinstance(event.get("ts"), int | float) or event["ts"] < fault_at:
            continue
        session = str(event.get("session"))
        if event.get("event") == "upstream_lost":
            lost.setdefault(session, event["ts"])
        elif event.get("event") == "upstream_open" and session in lost:
            reopened.setdefault(session, event["ts"])
    if not lost:
        return None
    return {
        "sessions": len(lost),
        "to_upstream_lost": quantiles([(t - fault_at) * 1000 for t in lost.values()]),
        "to_upstream_open": quantiles([(t - fault_at) * 1000 for t in reopened.values()]),
    }


def generator_check(
    bench: Bench, direct: Target | None, backend: Backend, args: argparse.Namespace
) -> dict[str, Any] | None:
    """Direct, 64 B, 16 connections, with 1 generator process and with ``--procs``.

    The direct connection is saturated when the echo backend (one process, one event loop) is
    at a full CPU while no generator worker is; the generator is then not the bottleneck.
    """
    if direct is None:
        return None
    one = bench.load_cell(direct, 64, 16, 1, backend)
    many = bench.load_cell(direct, 64, 16, args.procs, backend)
    gain = many["rps"] / one["rps"] if one["rps"] else 0.0
    busy = max(many["generator_cpu_share"] or [0])
    echo = many["backend_cpu_share"]
    machine = many["machine_busy"] or 0.0
    head = (
        f"{args.procs} generator processes give {gain:.2f} times the rate of one; with {args.procs}, the echo "
        f"backend used {echo:.2f} of a CPU, the busiest generator worker {busy:.2f}, and the machine's "
        f"{os.cpu_count()} CPUs were {machine * 100:.0f}% busy: "
    )
    if busy < 0.9 and echo >= 0.8:
        verdict = head + "the direct connection is saturated (the backend is the bottleneck), not the generator."
    elif busy < 0.9 and machine >= 0.9:
        verdict = head + (
            "the CPUs are the bottleneck (shared with other work); no generator worker is at a full CPU, "
            "so the generator is not what limits the rate."
        )
    else:
        verdict = head + (
            "the generator may limit the direct rate; every proxy's rate is far below it, so theirs are not "
            "limited by the generator."
        )
    print(f"generator check: {verdict}", flush=True)
    return {"procs": args.procs, "one": one, "many": many, "gain": gain, "verdict": verdict}


def print_failover(r: dict[str, Any]) -> None:
    g = r["gap_ms"]
    print(
        f"failover {r['fault']:<9} {r['target']:<9} closed {r['closed']}/{r['clients']} recovered "
        f"{r['recovered']}/{r['clients']} gap p50 {fmt(g['p50'], '.1f')} p99 {fmt(g['p99'], '.1f')} "
        f"max {fmt(g['max'], '.1f')} ms (steady RTT p99 before: {fmt(r['steady_rtt_ms']['p99'], '.1f')} ms)",
        flush=True,
    )
    if (phases := phases_line(r)) is not None:
        print(f"    {phases}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.report_only:
        try:
            report = json.loads(args.report_only.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"balancer_bench: cannot read {args.report_only}: {exc}", file=sys.stderr)
            return 2
        if report.get("load_cells"):
            report["load"] = summarise(report["load_cells"])
    else:
        report = run(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nJSON: {args.json}")
    if report.get("load"):
        print("\n".join(load_table(report["load"])))
    if report.get("failover"):
        print("\n".join(failover_table(report["failover"])))
    if report.get("sessions"):
        print("\n".join(sessions_table(report["sessions"])))
    print("\n".join(goals_table(report, report.get("failover_ping_s", PING_S))))
    plot_path = None
    if report.get("load") and str(args.plot) not in ("", "."):
        plot(report["load"], args.plot, f"WebSocket echo through each target, {report['date']}, {os.cpu_count()} CPUs")
        plot_path = args.plot
    if str(args.doc) not in ("", "."):
        write_doc(args.doc, report, plot_path)
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
