"""Turning the balancer benchmark's measurements into numbers, tables, a plot and docs.

Pure: no processes, no sockets, no clock. ``balancer_bench.py`` measures; this summarises (medians
over rounds, ratios to HAProxy measured in the same run), formats the tables it prints, draws the
plot, and rewrites the generated section of docs/performance.md between its markers.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from targets import TARGETS


def percentile(histogram: Counter[int], q: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for key in sorted(histogram):
        seen += histogram[key]
        if seen >= rank:
            return float(key)
    return float(max(histogram))


def quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.5), "p99": at(0.99), "max": ordered[-1]}


# (measure, its ratio to HAProxy)
RATIOS = (("rps", "rps_vs_haproxy"), ("p99_us", "p99_vs_haproxy"), ("proxy_cpu_us_per_rt", "cpu_vs_haproxy"))


def paired_ratios(cells: list[dict[str, Any]], haproxy: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per measure, the ratio to HAProxy's cell of the same round, round by round.

    A burst of load from elsewhere moves every target's rate by a third between rounds on this
    machine; within a round the targets run back to back, so the ratio of one round's pair moves
    far less than either rate, and their median is the run's ratio (not the ratio of the medians,
    which can pair one target's good round with the other's bad one).
    """
    theirs = {c["round"]: c for c in haproxy}
    out: dict[str, list[float]] = {key: [] for key, _ in RATIOS}
    for cell in sorted(cells, key=lambda c: c["round"]):
        other = theirs.get(cell["round"])
        if other is None:
            continue
        for key, _ in RATIOS:
            a, b = cell.get(key), other.get(key)
            if a and b:
                out[key].append(a / b)
    return out


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over rounds per (target, size, conns), plus ratios against HAProxy: the median of the
    ratios to HAProxy's cell of the same round (``paired_ratios``)."""
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["target"], cell["size"], cell["conns"]), []).append(cell)

    def med(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(values) if values else None

    rows: list[dict[str, Any]] = []
    for (target, size, conns), group in groups.items():
        rows.append(
            {
                "target": target,
                "size": size,
                "conns": conns,
                "rounds": len(group),
                "rps": med(group, "rps"),
                "p50_us": med(group, "p50_us"),
                "p99_us": med(group, "p99_us"),
                "p999_us": med(group, "p999_us"),
                "proxy_cpu_us_per_rt": med(group, "proxy_cpu_us_per_rt"),
                "rps_per_round": [round(r["rps"]) for r in group],
            }
        )
    by_key = {(r["target"], r["size"], r["conns"]): r for r in rows}
    for row in rows:
        ref = by_key.get(("haproxy", row["size"], row["conns"]))
        if ref and ref["rps"] and row["rps"]:
            paired = paired_ratios(groups[(row["target"], row["size"], row["conns"])],
                                   groups[("haproxy", row["size"], row["conns"])])  # fmt: skip
            for key, ratio_key in RATIOS:
                per_round = paired[key]
                row[ratio_key] = statistics.median(per_round) if per_round else None
                row[f"{ratio_key}_per_round"] = per_round
    order = {t: i for i, t in enumerate(TARGETS)}
    rows.sort(key=lambda r: (r["size"], r["conns"], order.get(r["target"], 9)))
    return rows


def pct(share: float | None) -> float | None:
    return None if share is None else share * 100


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def load_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| size | conns | target | round trips/s | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/rt "
        "| rt/s ÷ HAProxy | p99 ÷ HAProxy | CPU ÷ HAProxy |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} B | {r['conns']} | {r['target']} | {fmt(r['rps'])} | {fmt(r['p50_us'])} | "
            f"{fmt(r['p99_us'])} | {fmt(r['p999_us'])} | {fmt(r['proxy_cpu_us_per_rt'], '.1f')} | "
            f"{fmt(r.get('rps_vs_haproxy'), '.2f')} | {fmt(r.get('p99_vs_haproxy'), '.2f')} | "
            f"{fmt(r.get('cpu_vs_haproxy'), '.2f')} |"
        )
    return lines


def failover_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| fault | target | clients closed | recovered in window | gap p50 ms | gap p99 ms | gap max ms "
        "| steady RTT p50 / p99 ms before the fault |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        g = r["gap_ms"]
        steady = r.get("steady_rtt_ms") or {}
        lines.append(
            f"| {r['fault']} | {r['target']} | {r['closed']}/{r['clients']} | {r['recovered']}/{r['clients']} "
            f"(window {r['window_ms'] / 1000:.0f} s) | {fmt(g['p50'], '.1f')} | {fmt(g['p99'], '.1f')} | "
            f"{fmt(g['max'], '.1f')} | {fmt(steady.get('p50'), '.1f')} / {fmt(steady.get('p99'), '.1f')} |"
        )
    phases = [line for r in runs if (line := phases_line(r))]
    if phases:
        lines += ["", *[f"- {line}" for line in phases]]
    return lines


def phases_line(run: dict[str, Any]) -> str | None:
    """Where a reference balancer's failover gap went, from its own event lines (``phases_ms``):
    the rest of a client's gap after ``upstream_open`` is the first trip through the new upstream."""
    ph = run.get("phases_ms")
    if not ph:
        return None
    lost, opened = ph["to_upstream_lost"], ph["to_upstream_open"]
    closed = run.get("backend_sockets_closed_ms")
    floor = "" if closed is None else f"; an idle TCP connection to the killed backend read EOF after {closed:.1f} ms"
    return (
        f"{run['fault']}, {run['target']}: the balancer logged `upstream_lost` "
        f"{fmt(lost['p50'], '.1f')} ms (p50) / {fmt(lost['max'], '.1f')} ms (last) after the fault, "
        f"and `upstream_open` on the secondary {fmt(opened['p50'], '.1f')} / {fmt(opened['max'], '.1f')} ms "
        f"({ph['sessions']} sessions){floor}"
    )


def sessions_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| sessions | held | open s | RSS MiB | KiB/session | idle CPU % | on primary / secondary before kill "
        "| re-homed in s | closed | peak connects/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['sessions']} | {r['held']} | {fmt(r['open_s'], '.1f')} | {fmt(r['rss_mib'])} | "
            f"{fmt(r['rss_kib_per_session'], '.1f')} | {fmt(pct(r['idle_cpu_share']), '.1f')} | "
            f"{r['on_primary_before_kill']} / {r['on_secondary_before_kill']} | "
            f"{fmt(r['rehome_s'], '.2f')} | {fmt(r['closed'])} | {fmt(r['peak_connects_per_s'])} |"
        )
    return lines


# The issue's goals for the reference balancer. The load ones are judged on one cell, (message
# size, connections) as in the issue's own measurement, by ratios to HAProxy in the same rounds.
GOAL_CELL = (64, 16)
GOAL_RPS_VS_HAPROXY = 0.75
GOAL_CPU_VS_HAPROXY = 2.0
GOAL_P99_VS_HAPROXY = 1.5
GOAL_KILL_GAP_P99_MS = 10.0
GOAL_BLACKHOLE_MARGIN_MS = 100.0
GOAL_REHOME_S = {5000: 3.0, 10000: 5.0}
GOAL_RSS_10K_MIB = 1024.0


def goals(report: dict[str, Any], ping_s: float) -> list[tuple[str, str, str, str]]:
    """(goal, target, measured, verdict) for each goal this run can judge; others are "not measured"."""
    out: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "**not met**")

    rows = {(r["target"], r["size"], r["conns"]): r for r in report.get("load") or []}
    ref = rows.get(("reference", *GOAL_CELL), {})
    cell = f"({GOAL_CELL[0]} B, {GOAL_CELL[1]} conns)"
    for key, label, goal, better_low in (
        ("rps_vs_haproxy", f"round trips/s ÷ HAProxy {cell}", GOAL_RPS_VS_HAPROXY, False),
        ("cpu_vs_haproxy", f"proxy CPU per round trip ÷ HAProxy {cell}", GOAL_CPU_VS_HAPROXY, True),
        ("p99_vs_haproxy", f"p99 RTT ÷ HAProxy {cell}", GOAL_P99_VS_HAPROXY, True),
    ):
        value = ref.get(key)
        ok = None if value is None else (value <= goal if better_low else value >= goal)
        measured = fmt(value, ".2f")
        per_round = ref.get(f"{key}_per_round") or []
        if len(per_round) > 1:
            measured += f" (median of {len(per_round)} rounds; {min(per_round):.2f} to {max(per_round):.2f})"
        out.append((label, f"{'≤' if better_low else '≥'} {goal}", measured, verdict(ok)))
    runs = {(r["target"], r["fault"]): r for r in report.get("failover") or []}
    kill = runs.get(("reference", "sigkill"))
    if kill:
        p99 = kill["gap_ms"]["p99"]
        ok = p99 is not None and p99 <= GOAL_KILL_GAP_P99_MS and kill["closed"] == 0
        measured = f"p99 {fmt(p99, '.1f')} ms, {kill['closed']}/{kill['clients']} closed"
    else:
        ok, measured = None, "-"
    out.append(
        ("failover gap after SIGKILL", f"p99 ≤ {GOAL_KILL_GAP_P99_MS:.0f} ms, none closed", measured, verdict(ok))
    )
    hole = runs.get(("reference", "blackhole"))
    bound = 2 * ping_s * 1000 + GOAL_BLACKHOLE_MARGIN_MS
    if hole:
        worst = hole["gap_ms"]["max"]
        ok = worst is not None and worst <= bound and hole["recovered"] == hole["clients"] and hole["closed"] == 0
        measured = (f"max {fmt(worst, '.0f')} ms, {hole['recovered']}/{hole['clients']} recovered, "
                    f"{hole['closed']} closed")  # fmt: skip
    else:
        ok, measured = None, "-"
    out.append(("blackhole noticed and failed over", f"≤ ping_interval + ping_timeout + 100 ms = {bound:.0f} ms",
                measured, verdict(ok)))  # fmt: skip
    sessions = {r["sessions"]: r for r in report.get("sessions") or []}
    for count, limit in GOAL_REHOME_S.items():
        run = sessions.get(count)
        if run is None:
            out.append((f"{count} sessions re-homed", f"≤ {limit:.0f} s, none closed", "-", verdict(None)))
            continue
        ok = run["rehome_s"] is not None and run["rehome_s"] <= limit and run["closed"] == 0
        if run["rehome_s"] is None and run["open_s"] is None:
            measured = f"could not open them: {run['held']} held at the deadline"
        else:
            measured = f"{fmt(run['rehome_s'], '.1f')} s, {fmt(run['closed'])} closed"
        out.append((f"{count} sessions re-homed", f"≤ {limit:.0f} s, none closed", measured, verdict(ok)))
    # Only runs that opened all their sessions say what an idle session costs; a run cut short at
    # its deadline is full of half-open handshakes.
    complete = {n: r for n, r in sessions.items() if r["open_s"] is not None}
    big = complete.get(10000)
    if big is not None:
        measured, ok = f"{big['rss_mib']:.0f} MiB with {big['held']} held", big["rss_mib"] < GOAL_RSS_10K_MIB
    elif complete:
        largest = complete[max(complete)]
        per = largest["rss_kib_per_session"]
        measured = f"about {per * 10000 / 1024:.0f} MiB (extrapolated from {largest['held']} sessions)" if per else "-"
        ok = None if not per else per * 10000 / 1024 < GOAL_RSS_10K_MIB
    else:
        measured, ok = "-", None
    out.append(("RSS with 10k idle sessions", f"< {GOAL_RSS_10K_MIB:.0f} MiB", measured, verdict(ok)))
    return out


def goals_table(report: dict[str, Any], ping_s: float) -> list[str]:
    lines = ["| goal | target | measured in this run | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in goals(report, ping_s)]
    return lines


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r["size"], r["conns"]) for r in rows})
    targets = [t for t in TARGETS if any(r["target"] == t for r in rows)]
    by_key = {(r["target"], r["size"], r["conns"]): r for r in rows}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    width = 0.8 / max(1, len(targets))
    for i, target in enumerate(targets):
        xs = [j + (i - (len(targets) - 1) / 2) * width for j in range(len(cells))]
        rps = [(by_key.get((target, *c)) or {}).get("rps") or 0 for c in cells]
        p99 = [((by_key.get((target, *c)) or {}).get("p99_us") or 0) / 1000 for c in cells]
        top.bar(xs, rps, width, label=target)
        bottom.bar(xs, p99, width, label=target)
    top.set(ylabel="round trips/s", title=title)
    bottom.set(ylabel="p99 RTT (ms, log)", yscale="log")
    bottom.set_xticks(range(len(cells)), [f"{'64 B' if s == 64 else f'{s // 1024} KiB'}\n{c} conn" for s, c in cells])
    for ax in (top, bottom):
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


DOC_BEGIN = "<!-- balancer-bench:begin -->"
DOC_END = "<!-- balancer-bench:end -->"


def write_doc(doc: Path, report: dict[str, Any], plot_path: Path | None) -> None:
    """Replaces the generated balancer section of docs/performance.md; the rest is kept."""
    m = report["machine"]
    v = report["versions"]
    lines = [
        DOC_BEGIN,
        "## Balancer benchmark (generated by `make bench`)",
        "",
        f"Run of {report['date']} ({report['wall_s'] / 60:.1f} min), written by `bench/balancer_bench.py`; "
        "do not edit between the markers, the next run replaces it. Method and reading notes: "
        "[Balancer benchmark: method](#balancer-benchmark-method).",
        "",
        f"Machine: {m['cpus']} CPUs ({m['platform']}), load average at start {m['loadavg_start']}, at end "
        f"{m['loadavg_end']}; ulimit -n {m['fd_limit']['now']} (hard {m['fd_limit']['hard']}). "
        f"Versions: Python {v.get('python')}, websockets {v.get('websockets')}, picows {v.get('picows')}, "
        f"uvloop {v.get('uvloop')}; {v.get('haproxy', 'HAProxy absent')}; {v.get('nginx', 'nginx absent')}.",
        "",
    ]
    for note in report["notes"]:
        lines.append(f"- **Note:** {note}")
    if report["notes"]:
        lines.append("")
    g = report.get("generator_check")
    if g:
        lines += [
            "### Generator check",
            "",
            f"Direct, 64 B, 16 connections: 1 generator process {fmt(g['one']['rps'])} round trips/s, "
            f"{g['procs']} processes {fmt(g['many']['rps'])} round trips/s; worker CPU shares "
            f"{g['one']['generator_cpu_share']} and {g['many']['generator_cpu_share']}. "
            f"{g['verdict']}",
            "",
        ]
    lines += ["### Where the reference balancer stands against the goals", ""]
    lines += goals_table(report, report.get("failover_ping_s", 1.0))
    lines.append("")
    if report.get("load"):
        lines += [
            "### Throughput and RTT (median over rounds; ratios: median of the per-round ratios to HAProxy)",
            "",
        ]
        lines += load_table(report["load"])
        lines.append("")
        if plot_path:
            lines += [f"![throughput and p99 per target]({plot_path.name})", ""]
    if report.get("failover"):
        lines += [
            "### Failover gap (8 clients, one message per 5 ms)",
            "",
            "Gap: from the fault to the client's first reply to a message sent after the fault. "
            "Closed: the client's connection was closed (it then reconnects at once).",
            "",
        ]
        lines += failover_table(report["failover"])
        lines.append("")
    if report.get("sessions"):
        lines += [
            "### Idle sessions and mass failover (reference balancer, keepalive 5 s / 5 s)",
            "",
        ]
        lines += sessions_table(report["sessions"])
        for run in report["sessions"]:
            for note in run["notes"]:
                lines.append(f"- {run['sessions']} sessions: {note}")
            if run["open_failed"]:
                lines.append(f"- {run['sessions']} sessions: failed opens {run['open_failed']}")
        lines.append("")
    if report.get("harness"):
        lines += [
            "### Harness throughput",
            "",
            "| what | wall s | scenarios | scenarios/min | result |",
            "|---|---:|---:|---:|---|",
        ]
        for what, h in report["harness"].items():
            lines.append(
                f"| {what} | {h['wall_s']:.0f} | {h.get('scenarios', '-')} | "
                f"{fmt(h.get('scenarios_per_min'), '.1f')} | "
                f"{h.get('verdict', h.get('summary', ''))} |"
            )
        lines.append("")
    lines.append(DOC_END)
    block = "\n".join(lines)
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Performance\n"
    if DOC_BEGIN in text and DOC_END in text:
        head, rest = text.split(DOC_BEGIN, 1)
        _, tail = rest.split(DOC_END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")
