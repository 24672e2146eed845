"""Overhead of the embedded Toxiproxy with no toxics, against a direct connection.

Upstream: a threaded TCP echo server (socketserver.ThreadingTCPServer) on loopback.
The proxy runs as a separate process (``python -m harness.toxiproxy --port 0``), as the
harness runs it. Each round measures, side by side:

* small: N sequential 64-byte round trips on one connection (mean time per trip),
  direct and proxied interleaved in blocks of 100 on two open connections;
* bulk: M MiB echoed on one connection, sent and received concurrently (throughput).

Ratios: small = proxied / direct time per trip (lower is better, goal <= 2.45),
bulk = proxied / direct throughput (higher is better, goal >= 0.25); those are the Go
Toxiproxy 2.x figures on this kind of machine (issue 3). Run from the repository root:

    .venv/bin/python bench/toxiproxy_overhead.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
SMALL_SIZE = 64
BLOCK = 100
CHUNK = 64 * 1024
GOAL_SMALL = 2.45
GOAL_BULK = 0.25


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                data = sock.recv(CHUNK)
            except OSError:
                return
            if not data:
                return
            sock.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, size: int) -> None:
    while size:
        data = sock.recv(size)
        if not data:
            raise ConnectionError("unexpected EOF")
        size -= len(data)


def small_round_trips(direct_port: int, proxy_port: int, count: int) -> tuple[float, float]:
    """Mean seconds per 64-byte round trip, (direct, proxied).

    Both connections stay open and alternate in blocks of ``BLOCK`` trips, so a burst of
    load from other processes hits both sides alike instead of skewing the ratio.
    """
    payload = b"x" * SMALL_SIZE
    totals = [0.0, 0.0]
    with _connect(direct_port) as direct, _connect(proxy_port) as proxied:
        socks = (direct, proxied)
        for sock in socks:
            for _ in range(50):
                sock.sendall(payload)
                _recv_exactly(sock, SMALL_SIZE)
        done = 0
        while done < count:
            block = min(BLOCK, count - done)
            for index, sock in enumerate(socks):
                start = time.perf_counter()
                for _ in range(block):
                    sock.sendall(payload)
                    _recv_exactly(sock, SMALL_SIZE)
                totals[index] += time.perf_counter() - start
            done += block
    return totals[0] / count, totals[1] / count


def bulk_echo(port: int, total: int) -> float:
    """Bytes per second for ``total`` bytes echoed, sending and receiving concurrently."""
    block = os.urandom(CHUNK)
    with _connect(port) as sock:
        received = 0
        failure: list[BaseException] = []

        def sender() -> None:
            try:
                left = total
                while left:
                    piece = block[: min(CHUNK, left)]
                    sock.sendall(piece)
                    left -= len(piece)
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)

        start = time.perf_counter()
        thread = threading.Thread(target=sender)
        thread.start()
        while received < total:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("unexpected EOF")
            received += len(data)
        elapsed = time.perf_counter() - start
        thread.join()
        if failure:
            raise failure[0]
        return total / elapsed


def start_proxy(loop: str) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ)
    if loop == "asyncio":
        env["WSCHAOS_TOXIPROXY_LOOP"] = "asyncio"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.toxiproxy", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("toxiproxy listening on "):
        proc.kill()
        raise RuntimeError(f"proxy did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def run(rounds: int, count: int, mebibytes: int, loop: str = "default") -> dict[str, Any]:
    echo = EchoServer(("127.0.0.1", 0), _EchoHandler)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    echo_port = echo.server_address[1]
    proc, api_port = start_proxy(loop)
    try:
        reply = requests.post(
            f"http://127.0.0.1:{api_port}/proxies",
            json={"name": "bench", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo_port}"},
            timeout=10,
        )
        reply.raise_for_status()
        proxy_port = int(reply.json()["listen"].rsplit(":", 1)[1])
        total = mebibytes * 1024 * 1024
        results: list[dict[str, float]] = []
        for _ in range(rounds):
            direct_rt, proxy_rt = small_round_trips(echo_port, proxy_port, count)
            direct_bps = bulk_echo(echo_port, total)
            proxy_bps = bulk_echo(proxy_port, total)
            results.append(
                {
                    "direct_rt_us": direct_rt * 1e6,
                    "proxy_rt_us": proxy_rt * 1e6,
                    "small_ratio": proxy_rt / direct_rt,
                    "direct_mib_s": direct_bps / 2**20,
                    "proxy_mib_s": proxy_bps / 2**20,
                    "bulk_ratio": proxy_bps / direct_bps,
                }
            )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        echo.shutdown()
        echo.server_close()
    median = {key: statistics.median(r[key] for r in results) for key in results[0]}
    return {
        "date": time.strftime("%Y-%m-%d"),
        "loop": loop,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "round_trips": count,
        "bulk_mib": mebibytes,
        "rounds": results,
        "median": median,
        "goals_met": {
            "small": median["small_ratio"] <= GOAL_SMALL,
            "bulk": median["bulk_ratio"] >= GOAL_BULK,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    parser.add_argument(
        "--loop",
        choices=("default", "asyncio", "both"),
        default="default",
        help="the proxy's event loop: default (uvloop when installed), the standard asyncio loop, "
        "or both, one after the other in this run",
    )
    parser.add_argument("--plot", metavar="PNG", help="also draw the per-round ratios against the goals")
    args = parser.parse_args()
    loops = ("default", "asyncio") if args.loop == "both" else (args.loop,)
    reports = [run(args.rounds, args.round_trips, args.mib, loop) for loop in loops]
    if args.plot:
        plot(reports, Path(args.plot))
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
        return 0
    for report in reports:
        print(f"== proxy loop: {report['loop']}")
        print_report(report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    for index, r in enumerate(report["rounds"], 1):
        print(
            f"round {index}: 64 B rtt direct {r['direct_rt_us']:.1f} us, proxy "
            f"{r['proxy_rt_us']:.1f} us, ratio {r['small_ratio']:.2f} | bulk direct "
            f"{r['direct_mib_s']:.0f} MiB/s, proxy {r['proxy_mib_s']:.0f} MiB/s, "
            f"ratio {r['bulk_ratio']:.2f}"
        )
    m = report["median"]
    print(
        f"median of {len(report['rounds'])}: small ratio {m['small_ratio']:.2f} "
        f"(goal <= {GOAL_SMALL}), bulk ratio {m['bulk_ratio']:.2f} (goal >= {GOAL_BULK})"
    )
    print(f"goals met: {report['goals_met']}")


def plot(reports: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (small, bulk) = plt.subplots(1, 2, figsize=(10, 3.6))
    for report in reports:
        label = "uvloop (default)" if report["loop"] == "default" else "standard asyncio loop"
        rounds = range(1, len(report["rounds"]) + 1)
        small.plot(rounds, [r["small_ratio"] for r in report["rounds"]], "o-", label=label)
        bulk.plot(rounds, [r["bulk_ratio"] for r in report["rounds"]], "o-", label=label)
    small.axhline(GOAL_SMALL, color="red", linestyle="--", label=f"goal <= {GOAL_SMALL} (Go Toxiproxy)")
    bulk.axhline(GOAL_BULK, color="red", linestyle="--", label=f"goal >= {GOAL_BULK} (Go Toxiproxy)")
    small.set(title="64 B round trip: proxied / direct time", xlabel="round", ylabel="ratio (lower is better)")
    bulk.set(title="32 MiB echo: proxied / direct throughput", xlabel="round", ylabel="ratio (higher is better)")
    small.set_ylim(bottom=0)
    bulk.set_ylim(bottom=0)
    for ax in (small, bulk):
        ax.set_xticks(range(1, len(reports[0]["rounds"]) + 1))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"embedded Toxiproxy overhead, {reports[0]['date']}, {reports[0]['cpus']} CPUs", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
