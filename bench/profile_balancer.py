"""Where the reference balancer's time goes under load: py-spy on the balancer process.

The load is the benchmark's (bench/loadgen.py): ``--conns`` connections with one ``--size`` byte
message in flight each, from ``--procs`` picows processes, through ``python -m balancer`` to a
picows echo backend, all on 127.0.0.1. py-spy (``pip install py-spy``) samples the balancer for
``--seconds`` and writes collapsed stacks; this prints the top functions by own time and by
inclusive time, as shares of all samples.

    .venv/bin/python bench/profile_balancer.py [--seconds 15] [--out /tmp/balancer.collapsed]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from targets import start_backend, start_target  # noqa: E402

from harness.procs import Supervisor  # noqa: E402
from harness.waiting import wait_until  # noqa: E402


def shares(collapsed: Path, top: int) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def ranked(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(top)]

    return total, ranked(own), ranked(inclusive)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--gil", action="store_true", help="py-spy --gil: only samples holding the GIL (Python work, not syscalls)"
    )
    parser.add_argument(
        "--hold",
        type=int,
        default=0,
        help="instead of the load: open this many idle sessions (keepalive 5 s / 5 s) and sample while they open",
    )
    parser.add_argument("--data-path", choices=("messages", "frames"), help="config data_path")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "balancer.collapsed")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        parser.error("py-spy is not installed: pip install py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="wschaos-profile-"))
    with Supervisor(workdir / "logs") as sup:
        primary = start_backend(sup, "primary")
        secondary = start_backend(sup, "secondary")
        overrides: dict[str, object] = {"ping_interval_s": 5.0, "ping_timeout_s": 5.0} if args.hold else {}
        if args.data_path:
            overrides["data_path"] = args.data_path
        target = start_target(sup, "reference", primary.address, secondary.address, workdir, balancer=overrides)
        duration = args.seconds + 4.0
        start_at = time.time() + 1.5
        count = args.hold or args.conns
        per = [count // args.procs + (1 if i < count % args.procs else 0) for i in range(args.procs)]
        if args.hold:
            argv = ["hold", "--duration", str(duration), "--open-concurrency", "32"]
        else:
            argv = ["load", "--size", str(args.size), "--duration", str(duration), "--start-at", f"{start_at:.6f}"]
        workers = [
            sup.spawn(
                f"load-{i}",
                [sys.executable, str(BENCH / "loadgen.py"), *argv, "--url", target.url, "--conns", str(n)],
                wait=False,
            )
            for i, n in enumerate(per)
            if n
        ]
        wait_until(lambda: time.time() >= start_at + 1.0, timeout=30, what="the load to settle")
        assert target.proc is not None and target.proc.pid is not None
        balancer = psutil.Process(target.proc.pid)
        before, wall0 = balancer.cpu_times(), time.perf_counter()
        subprocess.run(
            [py_spy, "record", "--pid", str(target.proc.pid), "--duration", str(int(args.seconds)),
             "--rate", "200", "--format", "raw", "--output", str(args.out), "--nonblocking",
             *(["--gil"] if args.gil else [])],
            check=True, capture_output=True, timeout=args.seconds + 60,
        )  # fmt: skip
        after, wall = balancer.cpu_times(), time.perf_counter() - wall0
        for worker in workers:
            if args.hold:
                worker.terminate(timeout=30)
            elif worker.wait_exit(duration + 30) is None:
                raise TimeoutError(f"the load generator {worker.name} did not finish within {duration + 30:.0f} s")
    total, own, inclusive = shares(args.out, args.top)
    what = f"opening {args.hold} idle sessions" if args.hold else f"{args.conns} connections x {args.size} B"
    print(f"{total} samples of the balancer, {what}; collapsed stacks: {args.out}")
    user, system = after.user - before.user, after.system - before.system
    print(
        f"balancer CPU while sampled: user {user / wall * 100:.0f}% + system {system / wall * 100:.0f}% of one CPU "
        "(py-spy samples wall time: a frame in a syscall, e.g. a socket send, is counted whether or not it runs)"
    )
    print("\nown time (the function itself):")
    for name, share in own:
        print(f"  {share * 100:5.1f}%  {name}")
    print("\ninclusive time (the function and what it calls):")
    for name, share in inclusive:
        print(f"  {share * 100:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
