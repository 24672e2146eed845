"""The report's plots: a timeline per run and the failover-gap histogram, as PNG bytes.

The facts drawn (clients, attachments, fault windows, gaps) come from :mod:`harness.analysis`;
this module only draws them. It uses matplotlib's object API with the Agg canvas directly rather
than ``pyplot``: no global figure state, no GUI backend selection, and nothing leaks between the
many figures one report draws.
"""

from __future__ import annotations

import io
import math
import statistics
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.analysis import attachments, fault_windows, run_end_time, run_failover_gaps
from harness.history import Run, load_run
from harness.records import RecoveryFigures, ScenarioEntry, clip, num

# Backend colours are fixed so the same server has the same colour in every plot of a report.
SERVER_COLOURS = {"primary": "#1f77b4", "secondary": "#ff7f0e"}
EXTRA_SERVER_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
UNKNOWN_COLOUR = "#b0b0b0"
FAULT_COLOUR = "#d62728"

# A timeline of hundreds of clients is unreadable and makes a huge PNG; past this many lanes the
# plot shows the first ones and says so in its title.
MAX_LANES = 48
MAX_FIG_HEIGHT_IN = 20.0
MAX_CLOSE_LABELS = 150
DPI = 90

PHASE_LINES = ("warmup_end", "faults_end", "heal_end", "deadline_end")


# -- failover gaps --------------------------------------------------------------------------------


def failover_gaps(run_dirs: list[Path]) -> list[float]:
    """Every client's failover gaps in these runs (``harness.analysis.failover_gaps_ms``), in ms."""
    return [g for run_dir in run_dirs for g in run_failover_gaps(load_run(run_dir))]


def gap_histogram_png(gaps_ms: list[float]) -> bytes:
    gaps = [g for g in gaps_ms if isinstance(g, int | float) and math.isfinite(g) and g >= 0]
    if not gaps:
        return no_data_png("no failover gaps: no client changed server and was acknowledged again")
    fig = Figure(figsize=(8, 3.2), dpi=DPI)
    ax = fig.add_subplot()
    bins = min(40, max(5, int(math.sqrt(len(gaps))) * 2))
    ax.hist(gaps, bins=bins, color=SERVER_COLOURS["secondary"], edgecolor="white")
    median = statistics.median(gaps)
    ax.axvline(median, color="black", linestyle="--", linewidth=1)
    ax.text(
        median, 0.97, f" median {median:.0f} ms", transform=ax.get_xaxis_transform(), va="top", ha="left", fontsize=8
    )
    ax.set_xlabel("failover gap: last ack before → first ack after a server change (ms)")
    ax.set_ylabel("transitions")
    ax.set_title(f"Failover gaps across all scenarios (n={len(gaps)})", fontsize=10)
    fig.tight_layout()
    return _png(fig)


# -- recovery -------------------------------------------------------------------------------------

RECOVER_COLOURS = {"p50": "#9ecae1", "p99": "#3182bd", "max": "#08519c"}
GAP_COLOUR = "#d62728"
RATE_COLOURS = {"reconnects": "#fdae6b", "upstream": "#e6550d"}


def recovery_png(scenarios: list[ScenarioEntry]) -> bytes:
    """Per scenario: time to recover (p50, p99, max bars) with the longest gap in play as a marker,
    and beside it the peak reconnect and upstream-connect rates. Drawn from the certificate's
    figures (harness.recovery), so it needs no run directory."""
    measured = [(s.name, s.recovery) for s in scenarios if s.recovery is not None]
    if not measured:
        return no_data_png("no recovery figures in this certificate")
    height = min(MAX_FIG_HEIGHT_IN, 2.0 + 0.42 * len(measured))
    fig = Figure(figsize=(10, height), dpi=DPI, layout="constrained")
    times, rates = fig.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    ys = list(range(len(measured)))
    bar = 0.26
    for offset, key in ((-bar, "p50"), (0.0, "p99"), (bar, "max")):
        values = [_or_zero(getattr(f, f"{key}_recover_s")) for _, f in measured]
        times.barh([y + offset for y in ys], values, height=bar, color=RECOVER_COLOURS[key], label=f"recover {key}")
    gaps = [(y, f.longest_gap_s) for y, (_, f) in zip(ys, measured, strict=True) if f.longest_gap_s is not None]
    if gaps:
        times.scatter([g for _, g in gaps], [y for y, _ in gaps], marker="D", s=28, color=GAP_COLOUR, zorder=5,
                      label="longest gap in play")  # fmt: skip
    for y, (_, f) in zip(ys, measured, strict=True):
        label = _recovery_label(f)
        if label:
            times.annotate(label, (0, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7,
                           color="#57606a")  # fmt: skip
    times.set_xlabel("seconds: last ack before a disruption → next ack")
    times.set_title("Time to recover per client, and the longest gap in play", fontsize=10)
    for offset, key, attr in ((-0.2, "reconnects", "peak_reconnects_per_s"),
                              (0.2, "upstream", "peak_upstream_connects_per_s")):  # fmt: skip
        rates.barh([y + offset for y in ys], [getattr(f, attr) for _, f in measured], height=0.4,
                   color=RATE_COLOURS[key], label=f"peak {key}/s")  # fmt: skip
    rates.set_xlabel("most in any 1 s window")
    rates.set_title("Peak reconnects and upstream connects", fontsize=10)
    times.set_yticks(ys, labels=[name for name, _ in measured], fontsize=8 if len(ys) <= 24 else 6)
    times.set_ylim(len(ys) - 0.5, -0.5)
    handles: list[Any] = []
    for ax in (times, rates):
        ax.grid(axis="x", color="#eeeeee")
        ax.set_axisbelow(True)
        handles.extend(ax.get_legend_handles_labels()[0])
    # Below the plots: inside, a legend would hide the bars of some scenario.
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7, frameon=False)
    return _png(fig)


def _or_zero(value: float | None) -> float:
    return value if value is not None else 0.0


def _recovery_label(f: RecoveryFigures) -> str:
    if not f.episodes:
        return "no client disrupted"
    return f"{f.unrecovered} never recovered" if f.unrecovered else ""


# -- timeline -------------------------------------------------------------------------------------


def timeline_png(run_dir: Path) -> bytes:
    """Client lanes coloured by the backend each was attached to, with faults, failovers and closes.

    Never raises: a report is still worth writing when one run directory is damaged, so anything
    unplottable becomes a small "no data" image that says why.
    """
    try:
        run = load_run(run_dir)
        return _timeline(run, Path(run_dir).name)
    except Exception as exc:  # the report must survive a damaged run; the image says what went wrong
        return no_data_png(f"timeline failed: {type(exc).__name__}: {exc}")


class _Lanes:
    """Server colours as they are first met, and which were used (for the legend)."""

    def __init__(self) -> None:
        self.colours = dict(SERVER_COLOURS)
        self.used: set[str] = set()

    def colour(self, server: str) -> str:
        if server not in self.colours:
            extra = [c for c in EXTRA_SERVER_COLOURS if c not in self.colours.values()]
            self.colours[server] = extra[0] if extra and server != "?" else UNKNOWN_COLOUR
        self.used.add(server)
        return self.colours[server]


def _timeline(run: Run, title: str) -> bytes:
    by_client = run.client_histories()
    clients = sorted(by_client)
    if not clients:
        reason = "; ".join(run.problems[:2]) or "no client records"
        return no_data_png(f"no data for {title}: {reason}")
    times = [t for t in (num(r.get("t")) for r in run.history) if t is not None]
    if not times:
        return no_data_png(f"no data for {title}: no timestamped records")
    meta = run.run_meta
    t0 = meta.started if meta.started is not None else min(times)
    phases = meta.phase_times()
    run_end = run_end_time(run)
    t_end = max([max(times), *phases.values(), *([run_end] if run_end is not None else [])])
    span = max(t_end - t0, 1e-3)

    shown = clients[:MAX_LANES]
    height = min(MAX_FIG_HEIGHT_IN, 2.0 + 0.35 * len(shown))
    # Constrained layout places the top phase axis, the title and the figure legend without overlap.
    fig = Figure(figsize=(10, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    lanes = _Lanes()
    failovers: list[tuple[float, int]] = []
    closes: list[tuple[float, int, Any]] = []

    for y, client in enumerate(shown):
        recs = by_client[client]
        timed = [t for t in (num(r.get("t")) for r in recs) if t is not None]
        if not timed:
            continue
        first_t, last_t = timed[0], timed[-1]
        # The grey band is the client's whole life: every part not overdrawn by a server colour is
        # time it was connecting, disconnected or attached to an unknown server.
        ax.broken_barh(
            [(first_t - t0, max(last_t - first_t, span * 0.002))],
            (y - 0.12, 0.24),
            facecolors=UNKNOWN_COLOUR,
            linewidth=0,
        )
        for seg in attachments(recs, t_end):
            # A zero-length attachment (welcome then immediate close) would be invisible; give it a sliver.
            width = max(seg.end - seg.start, span * 0.002)
            ax.broken_barh(
                [(seg.start - t0, width)], (y - 0.3, 0.6), facecolors=lanes.colour(seg.server), linewidth=0, zorder=2
            )
            if seg.in_place_failover:
                failovers.append((seg.start - t0, y))
        for rec in recs:
            if rec.get("type") == "event" and rec.get("f") == "conn_close":
                t = num(rec.get("t"))
                if t is not None:
                    closes.append((t - t0, y, rec.get("code")))

    _shade_faults(ax, run, t0, t_end)
    _mark_failovers_and_closes(ax, failovers, closes)

    # Phases get their own tick labels on a top axis: drawn as text inside the plot they would
    # collide with the fault labels, and faults_end/heal_end are often close together.
    phase_x = [(name.removesuffix("_end"), phases[name] - t0) for name in PHASE_LINES if name in phases]
    for _, x in phase_x:
        # Above the lanes: a phase boundary matters most where it crosses a client's attachment.
        ax.axvline(x, color="#444444", linestyle="--", linewidth=0.9, alpha=0.8, zorder=4)
    if phase_x:
        top = ax.secondary_xaxis("top")
        top.set_xticks(
            [x for _, x in phase_x], labels=[n for n, _ in phase_x], fontsize=7, rotation=30, ha="left", color="#555555"
        )

    # First client on top; the band above lane 0 holds the fault labels.
    ax.set_ylim(len(shown) - 0.5, -1.4)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels(shown, fontsize=8 if len(shown) <= 24 else 6)
    ax.set_xlim(min(0.0, min(times) - t0), span * 1.01)
    ax.set_xlabel("seconds since run start")
    heading = f"{title}: {len(clients)} client(s)"
    if len(clients) > len(shown):
        heading += f", first {len(shown)} shown"
    ax.set_title(heading, fontsize=10)
    ax.set_axisbelow(True)
    ax.grid(axis="x", color="#eeeeee")

    # Legend: servers actually seen, then markers; proxy artists keep it free of one entry per bar.
    handles: list[Any] = [Patch(color=lanes.colours[s], label=s) for s in sorted(lanes.used)]
    handles.append(Patch(color=UNKNOWN_COLOUR, label="not attached / unknown"))
    handles.append(Patch(color=FAULT_COLOUR, alpha=0.15, label="fault window"))
    scatter_handles, _ = ax.get_legend_handles_labels()
    handles.extend(scatter_handles)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
    return _png(fig)


def _mark_failovers_and_closes(
    ax: Any, failovers: list[tuple[float, int]], closes: list[tuple[float, int, Any]]
) -> None:
    if failovers:
        ax.scatter(
            [x for x, _ in failovers],
            [y for _, y in failovers],
            marker="v",
            s=40,
            color="black",
            zorder=5,
            label="failover (new server, same connection)",
        )
    if closes:
        ax.scatter(
            [x for x, _, _ in closes],
            [y for _, y, _ in closes],
            marker="x",
            s=45,
            color=FAULT_COLOUR,
            linewidths=1.6,
            zorder=6,
            label="connection closed (code)",
        )
        for x, y, code in closes[:MAX_CLOSE_LABELS]:
            ax.annotate(
                str(code) if code is not None else "?",
                (x, y),
                xytext=(3, 5),
                textcoords="offset points",
                fontsize=7,
                color=FAULT_COLOUR,
                zorder=7,
            )


def _shade_faults(ax: Any, run: Run, t0: float, t_end: float) -> None:
    for i, w in enumerate(fault_windows(run.nemesis(), t_end)):
        ax.axvspan(w.start - t0, w.end - t0, color=FAULT_COLOUR, alpha=0.12, zorder=0, linewidth=0)
        # Labels sit in the band above the first lane, staggered so overlapping faults stay readable.
        ax.text(
            w.start - t0,
            -0.75 - 0.35 * (i % 2),
            f" {w.label}",
            fontsize=7,
            color=FAULT_COLOUR,
            va="center",
            ha="left",
            zorder=8,
        )


# -- images ---------------------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def no_data_png(message: str) -> bytes:
    fig = Figure(figsize=(6, 1.2), dpi=DPI)
    fig.text(0.5, 0.5, clip(message, 110), ha="center", va="center", fontsize=9, color="#57606a", wrap=True)
    return _png(fig)
