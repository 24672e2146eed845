"""Where a proxy's CPU per round trip goes: user time, kernel time and syscalls, per target.

The load is the benchmark's (bench/loadgen.py, one picows process, ``--conns`` connections
with one ``--size`` byte message in flight each) against one target at a time: the reference
balancer, HAProxy or nginx in front of a picows echo backend. While it runs, psutil reads
the proxy's user and system CPU and ``perf stat`` counts its syscalls
(``raw_syscalls:sys_enter``; root, or a permissive ``perf_event_paranoid``). Dividing by the
round trips the generator counted in the same window separates the cost of the kernel (the
same for every proxy on loopback) from the proxy's own code.

    .venv/bin/python bench/cpu_split.py [--targets reference,haproxy,nginx] [--seconds 6]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from targets import last_json, start_backend, start_target  # noqa: E402

from harness.procs import Supervisor  # noqa: E402
from harness.waiting import wait_until  # noqa: E402


def syscall_count(perf_output: str) -> int | None:
    """The count from ``perf stat -x,`` output, or None when perf could not count."""
    for line in perf_output.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "raw_syscalls:sys_enter" and fields[0].isdigit():
            return int(fields[0])
    return None


def measure(kind: str, seconds: float, conns: int, size: int) -> dict[str, float | None]:
    workdir = Path(tempfile.mkdtemp(prefix="wschaos-cpu-split-"))
    with Supervisor(workdir / "logs") as sup:
        primary = start_backend(sup, "primary")
        secondary = start_backend(sup, "secondary")
        target = start_target(sup, kind, primary.address, secondary.address, workdir)
        start_at = time.time() + 1.5
        argv = ["load", "--size", str(size), "--duration", str(seconds), "--start-at", f"{start_at:.6f}"]
        load = sup.spawn(
            "load",
            [sys.executable, str(BENCH / "loadgen.py"), *argv, "--url", target.url, "--conns", str(conns)],
            wait=False,
        )
        procs = target.processes()
        wait_until(lambda: time.time() >= start_at, timeout=30, what="the measured window to start")
        before = [proc.cpu_times() for proc in procs]
        perf = shutil.which("perf")
        counted = None
        if perf is not None:
            pids = ",".join(str(proc.pid) for proc in procs)
            stat = subprocess.run(
                [perf, "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", pids, "sleep", str(seconds)],
                capture_output=True, text=True, timeout=seconds + 30,
            )  # fmt: skip
            counted = syscall_count(stat.stderr)
        else:
            time.sleep(seconds)  # the measured window itself, not a synchronisation
        after = [proc.cpu_times() for proc in procs]
        wait_until(lambda: not load.running, timeout=seconds + 30, what="the load generator to finish")
        trips = last_json(load)["count"]

    user = sum(a.user - b.user for a, b in zip(after, before, strict=True))
    system = sum(a.system - b.system for a, b in zip(after, before, strict=True))
    return {
        "round_trips_per_s": trips / seconds,
        "user_us_per_rt": user / trips * 1e6,
        "system_us_per_rt": system / trips * 1e6,
        "syscalls_per_rt": None if counted is None else counted / trips,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="reference,haproxy,nginx")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    print(f"{args.conns} connections x {args.size} B, {args.seconds:g} s per target")
    print("| target | round trips/s | user µs/rt | system µs/rt | syscalls/rt |")
    print("|---|---:|---:|---:|---:|")
    for kind in args.targets.split(","):
        row = measure(kind, args.seconds, args.conns, args.size)
        calls = row["syscalls_per_rt"]
        print(
            f"| {kind} | {row['round_trips_per_s']:.0f} | {row['user_us_per_rt']:.1f} | "
            f"{row['system_us_per_rt']:.1f} | {'-' if calls is None else f'{calls:.1f}'} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
