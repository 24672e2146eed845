"""Where a mass failover's time goes: N idle sessions through the reference balancer, SIGKILL the
primary, and measure the re-homing by the balancer's own clock and CPU.

Prints one JSON line: the wall time until the secondary holds every session the clients still
have open (as ``balancer_bench.py --sessions`` measures it), the balancer's **CPU seconds per
re-homed session** (user + system, from the kill until settled: on a shared machine the wall
time is this CPU divided by the share the balancer got, so this is the number to compare
levers by), the secondary backend's CPU, and quantiles of when the balancer logged
``upstream_lost`` and ``upstream_open`` (seconds after the kill). ``--spy FILE`` samples the
balancer with py-spy (``--gil``, raw collapsed stacks) from just before the kill until settled.

    PYTHONPATH=$PWD .venv/bin/python bench/rehome_profile.py --sessions 1000 [--spy /tmp/rehome.txt]

Levers can be compared side by side by running this from two checkouts at the same time.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import balancer_bench as bb  # noqa: E402
from targets import read_json_lines, start_backend, start_target  # noqa: E402

from harness.procs import Supervisor  # noqa: E402
from harness.waiting import wait_until  # noqa: E402


def quantiles(values: list[float]) -> list[float] | None:
    values = sorted(values)
    if not values:
        return None
    return [round(values[int(q * (len(values) - 1))], 3) for q in (0.0, 0.1, 0.5, 0.9, 1.0)]


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--spy", type=Path, help="py-spy raw output file (needs py-spy)")
    parser.add_argument("--config", default="{}", help="JSON overriding the balancer's config keys")
    parser.add_argument("--rehome-timeout", type=float, default=90.0)
    args = parser.parse_args()
    try:
        overrides = json.loads(args.config)
    except json.JSONDecodeError as exc:
        parser.error(f"--config: not JSON: {exc}")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.spy and not Path(py_spy).exists():
        parser.error("py-spy is not installed: pip install py-spy")
    bb.raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="wschaos-rehome-"))
    print(f"logs: {workdir}", file=sys.stderr, flush=True)
    with Supervisor(workdir / "logs") as sup:
        primary, secondary = start_backend(sup, "primary"), start_backend(sup, "secondary")
        # The keepalive of balancer_bench.py's session runs.
        config = {"ping_interval_s": 5.0, "ping_timeout_s": 5.0, "health_interval_s": 1.0, **overrides}
        target = start_target(sup, "reference", primary.address, secondary.address, workdir, balancer=config)
        hold = [sys.executable, bb.LOADGEN, "hold", "--url", target.url, "--duration", "3600"]
        holders = [
            sup.spawn(f"hold{i}", [*hold, "--conns", str(n), "--open-concurrency", "32"], wait=False)
            for i, n in enumerate(bb.split(args.sessions, 2))
        ]
        started = time.time()
        wait_until(
            lambda: all(bb._opened(h) for h in holders),
            timeout=120 + args.sessions / 10,
            interval=0.2,
            what=f"{args.sessions} sessions to open",
        )
        open_s = time.time() - started
        assert target.proc is not None and target.proc.pid is not None and secondary.proc.pid is not None
        balancer, backend = psutil.Process(target.proc.pid), psutil.Process(secondary.proc.pid)
        spy = None
        if args.spy:
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(balancer.pid), "--format", "raw", "--rate", "1000", "--gil",
                 "--nonblocking", "--duration", str(int(args.rehome_timeout) + 30), "-o", str(args.spy)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)  # py-spy attaches; not a synchronisation of the measured system
        cpu0, backend_cpu0 = cpu_seconds(balancer), cpu_seconds(backend)
        fault_at = time.time()
        primary.proc.kill()

        def settled() -> bool:
            still_open = sum((bb._status(h) or {"open": 0})["open"] for h in holders)
            return (secondary.stats_lines() or [{"open": 0}])[-1]["open"] >= still_open

        rehome_s: float | None
        try:
            wait_until(settled, timeout=args.rehome_timeout, interval=0.05, what="sessions re-homed")
            rehome_s = time.time() - fault_at
        except TimeoutError:
            rehome_s = None
        cpu, backend_cpu = cpu_seconds(balancer) - cpu0, cpu_seconds(backend) - backend_cpu0
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT, not on SIGTERM
            spy.wait(60)
        final = [bb._status(h) or {"open": 0, "closed": 0} for h in holders]
        events = [e for e in read_json_lines(target.proc.stdout_path) if e.get("ts", 0) >= fault_at]
        result: dict[str, Any] = {
            "sessions": args.sessions,
            "open_s": round(open_s, 1),
            "rehome_s": None if rehome_s is None else round(rehome_s, 2),
            "balancer_cpu_s": round(cpu, 3),
            "cpu_ms_per_session": round(cpu / args.sessions * 1000, 3),
            "backend_cpu_s": round(backend_cpu, 3),
            "closed": sum(s["closed"] for s in final),
            "still_open": sum(s["open"] for s in final),
            "upstream_lost_s": quantiles([e["ts"] - fault_at for e in events if e["event"] == "upstream_lost"]),
            "upstream_open_s": quantiles([e["ts"] - fault_at for e in events if e["event"] == "upstream_open"]),
            "events": dict(collections.Counter(e["event"] for e in events)),
            "connect_errors": dict(
                collections.Counter(e.get("error", "")[:60] for e in events if e["event"] == "upstream_connect_failed")
            ),
            "load_average": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]],
        }
        for holder in holders:
            holder.terminate(timeout=20)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
