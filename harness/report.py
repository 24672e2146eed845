"""The certification report: certificate.json, junit.xml and report.html.

``certify`` builds the certificate (a plain dict, shape in issue 5) and hands it to
:func:`write_report`. Everything here reads finished run directories only (through
:func:`harness.history.load_run`); nothing runs a process or opens a socket, so a report can be
rebuilt from stored runs at any time.

Plots use matplotlib's object API with the Agg canvas directly rather than ``pyplot``: no global
figure state, no GUI backend selection, and nothing leaks between the many figures one report draws.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.history import Record, Run, failover_gaps_ms, load_run

CERTIFICATE_FILE = "certificate.json"
JUNIT_FILE = "junit.xml"
HTML_FILE = "report.html"

SUITE_NAME = "wschaos certify"

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

# What report.html shows of each failure; certificate.json keeps everything.
MAX_VIOLATIONS_SHOWN = 10
MAX_EVIDENCE_SHOWN = 6
MAX_EVIDENCE_CHARS = 600

PHASE_LINES = ("warmup_end", "faults_end", "heal_end", "deadline_end")

STATUS_LABELS = {"pass": "pass", "fail": "FAIL", "not_checked": "not checked"}

# XML 1.0 forbids most control characters; evidence can carry them (torn log lines, raw frames),
# and ElementTree would write them anyway and produce a file no JUnit reader can parse.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# -- entry points ---------------------------------------------------------------------------------


def write_report(report_dir: Path, certificate: dict[str, Any]) -> dict[str, Path]:
    """Writes certificate.json, junit.xml and report.html into ``report_dir`` (created if needed)."""
    report_dir = Path(report_dir)
    return {
        "certificate": write_certificate(report_dir, certificate),
        "junit": write_junit(report_dir, certificate),
        "html": write_html(report_dir, certificate),
    }


def write_certificate(report_dir: Path, certificate: dict[str, Any]) -> Path:
    """Writes the certificate as given: it is the machine-readable record, so nothing is trimmed."""
    text = json.dumps(certificate, indent=2, default=str) + "\n"
    return _write_text(Path(report_dir) / CERTIFICATE_FILE, text)


def write_junit(report_dir: Path, certificate: dict[str, Any]) -> Path:
    """One testsuite; one testcase per scenario and invariant, so CI shows exactly which check failed."""
    invariants = _invariants(certificate)
    suite = ET.Element("testsuite", name=SUITE_NAME)
    props = ET.SubElement(suite, "properties")
    build = _dict(certificate.get("build"))
    for key, value in (
        ("verdict", certificate.get("verdict")),
        ("build_command", build.get("command")),
        ("profile", certificate.get("profile")),
        ("error", certificate.get("error")),
    ):
        if value is not None:
            ET.SubElement(props, "property", name=key, value=_xml_text(str(value)))

    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for scenario in _scenarios(certificate):
        name = str(scenario.get("name", "?"))
        results = _dict(scenario.get("results"))
        replay = scenario.get("replay")
        for invariant in invariants:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=_xml_text(name), name=_xml_text(invariant))
            raw = results.get(invariant)
            result = _dict(raw)
            status = result.get("status")
            note = str(result.get("note") or "")
            if status == "pass":
                continue
            if status == "fail":
                counts["failures"] += 1
                violations = _violations(result)
                first = violations[0].get("message") if violations else None
                message = str(first or note or f"{invariant} violated")
                failure = ET.SubElement(
                    case, "failure", message=_xml_text(_trim(message, 500)), type=_xml_text(invariant)
                )
                failure.text = _xml_text(_failure_text(note, violations, replay))
            elif status == "not_checked":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=_xml_text(f"not checked: {note or 'no reason given'}"))
            else:
                # A missing or unknown result is neither a pass nor a skip: the harness did not
                # judge it, which JUnit calls an error.
                counts["errors"] += 1
                what = "no result recorded" if raw is None else f"unknown status {status!r}"
                ET.SubElement(case, "error", message=_xml_text(what))

    # An errored certification (the build never started) has no testcases; say why in the suite.
    if certificate.get("verdict") == "error" and counts["tests"] == 0:
        counts["tests"] = counts["errors"] = 1
        case = ET.SubElement(suite, "testcase", classname="certify", name="build_starts")
        ET.SubElement(case, "error", message=_xml_text(str(certificate.get("error") or "certification error")))

    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", f"{_number(certificate.get('duration_s')) or 0.0:.3f}")
    if certificate.get("started"):
        suite.set("timestamp", _xml_text(str(certificate["started"])))
    machine = _dict(certificate.get("machine"))
    if machine.get("hostname"):
        suite.set("hostname", _xml_text(str(machine["hostname"])))

    root = ET.Element("testsuites", name=SUITE_NAME)
    for key in ("tests", "failures", "errors", "skipped", "time"):
        root.set(key, suite.get(key, "0"))
    root.append(suite)
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return _write_bytes(Path(report_dir) / JUNIT_FILE, data + b"\n")


def write_html(report_dir: Path, certificate: dict[str, Any]) -> Path:
    """The one page a person reads first. Self-contained: CSS inline, images as data: URIs."""
    return _write_text(Path(report_dir) / HTML_FILE, render_html(certificate))


# -- failover gaps --------------------------------------------------------------------------------


def failover_gaps(run_dirs: list[Path]) -> list[float]:
    """Every client's failover gaps in these runs (``harness.history.failover_gaps_ms``), in ms."""
    gaps: list[float] = []
    for run_dir in run_dirs:
        run = load_run(run_dir)
        by_client = _by_client(run)
        for client in sorted(by_client):
            gaps.extend(failover_gaps_ms(by_client[client]))
    return gaps


def gap_histogram_png(gaps_ms: list[float]) -> bytes:
    gaps = [g for g in gaps_ms if isinstance(g, int | float) and math.isfinite(g) and g >= 0]
    if not gaps:
        return _no_data_png("no failover gaps: no client changed server and was acknowledged again")
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
        return _no_data_png(f"timeline failed: {type(exc).__name__}: {exc}")


def _timeline(run: Run, title: str) -> bytes:
    by_client = _by_client(run)
    clients = sorted(by_client)
    if not clients:
        reason = "; ".join(run.problems[:2]) or "no client records"
        return _no_data_png(f"no data for {title}: {reason}")
    times = [t for t in (_number(r.get("t")) for r in run.history) if t is not None]
    if not times:
        return _no_data_png(f"no data for {title}: no timestamped records")
    meta_start = _number(run.meta.get("started"))
    t0 = meta_start if meta_start is not None else min(times)
    phases = {k: v for k, v in ((k, _number(v)) for k, v in run.phases.items()) if v is not None}
    candidates = [max(times), *phases.values()]
    meta_end = _number(run.meta.get("ended"))
    if meta_end is not None:
        candidates.append(meta_end)
    t_end = max(candidates)
    span = max(t_end - t0, 1e-3)

    shown = clients[:MAX_LANES]
    height = min(MAX_FIG_HEIGHT_IN, 2.0 + 0.35 * len(shown))
    # Constrained layout places the top phase axis, the title and the figure legend without overlap.
    fig = Figure(figsize=(10, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    lane = {c: i for i, c in enumerate(shown)}
    colours = dict(SERVER_COLOURS)
    used_servers: set[str] = set()
    failovers: list[tuple[float, int]] = []
    closes: list[tuple[float, int, Any]] = []

    for client in shown:
        y = lane[client]
        timed = [(t, r) for t, r in ((_number(r.get("t")), r) for r in by_client[client]) if t is not None]
        if not timed:
            continue
        first_t, last_t = timed[0][0], timed[-1][0]
        # The grey band is the client's whole life: every part not overdrawn by a server colour is
        # time it was connecting, disconnected or attached to an unknown server.
        ax.broken_barh(
            [(first_t - t0, max(last_t - first_t, span * 0.002))],
            (y - 0.12, 0.24),
            facecolors=UNKNOWN_COLOUR,
            linewidth=0,
        )
        attached: tuple[float, str] | None = None
        welcomes_in_conn: dict[Any, int] = {}
        for t, rec in timed:
            f = rec.get("f")
            if rec.get("type") != "event" or f not in ("welcome", "conn_close", "stopped"):
                continue
            if attached is not None:
                start, server = attached
                _lane_segment(ax, y, start - t0, t - start, colours, server, used_servers, span)
                attached = None
            if f == "welcome":
                attached = (t, str(rec.get("server") or "?"))
                conn = rec.get("conn")
                welcomes_in_conn[conn] = welcomes_in_conn.get(conn, 0) + 1
                if welcomes_in_conn[conn] > 1:
                    failovers.append((t - t0, y))
            elif f == "conn_close":
                closes.append((t - t0, y, rec.get("code")))
        if attached is not None:
            # Still attached when the history ends: the segment runs to the end of the run.
            start, server = attached
            _lane_segment(ax, y, start - t0, t_end - start, colours, server, used_servers, span)

    _shade_faults(ax, run, t0, t_end)

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
    handles: list[Any] = [Patch(color=colours[s], label=s) for s in sorted(used_servers)]
    handles.append(Patch(color=UNKNOWN_COLOUR, label="not attached / unknown"))
    handles.append(Patch(color=FAULT_COLOUR, alpha=0.15, label="fault window"))
    scatter_handles, _ = ax.get_legend_handles_labels()
    handles.extend(scatter_handles)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
    return _png(fig)


def _lane_segment(
    ax: Any, y: int, x: float, width: float, colours: dict[str, str], server: str, used: set[str], span: float
) -> None:
    if server not in colours:
        extra = [c for c in EXTRA_SERVER_COLOURS if c not in colours.values()]
        colours[server] = extra[0] if extra and server != "?" else UNKNOWN_COLOUR
    used.add(server)
    # A zero-length attachment (welcome then immediate close) would be invisible; give it a sliver.
    ax.broken_barh([(x, max(width, span * 0.002))], (y - 0.3, 0.6), facecolors=colours[server], linewidth=0, zorder=2)


def _shade_faults(ax: Any, run: Run, t0: float, t_end: float) -> None:
    applied: dict[str, tuple[float, str]] = {}
    windows: list[tuple[float, float, str]] = []
    for rec in run.nemesis():
        if rec.get("type") != "ok":
            continue
        t = _number(rec.get("t"))
        if t is None:
            continue
        fid = str(rec.get("fault_id"))
        fault = _dict(rec.get("fault"))
        label = f"{fault.get('kind', '?')}:{fault.get('target', '?')}"
        if rec.get("f") == "apply":
            applied[fid] = (t, label)
        elif rec.get("f") == "heal" and fid in applied:
            start, label = applied.pop(fid)
            windows.append((start, t, label))
    # Never healed (the run ended, or the heal failed): shaded to the end, which is what happened.
    windows.extend((start, t_end, label + " (no heal)") for start, label in applied.values())
    for i, (start, end, label) in enumerate(sorted(windows)):
        ax.axvspan(start - t0, end - t0, color=FAULT_COLOUR, alpha=0.12, zorder=0, linewidth=0)
        # Labels sit in the band above the first lane, staggered so overlapping faults stay readable.
        ax.text(
            start - t0,
            -0.75 - 0.35 * (i % 2),
            f" {label}",
            fontsize=7,
            color=FAULT_COLOUR,
            va="center",
            ha="left",
            zorder=8,
        )


# -- HTML -----------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 24px; color: #1f2328; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin-top: 32px;
  border-bottom: 1px solid #d0d7de; padding-bottom: 4px; } h3 { font-size: 16px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
pre { background: #f6f8fa; padding: 8px 10px; border-radius: 6px; overflow-x: auto;
      white-space: pre-wrap; word-break: break-all; margin: 4px 0; }
.command { font-size: 15px; }
#verdict { display: inline-block; font-size: 44px; font-weight: 800; letter-spacing: 2px;
           padding: 8px 28px; border-radius: 10px; margin: 14px 0 6px; color: #fff; }
#verdict.certified { background: #1a7f37; } #verdict.rejected { background: #cf222e; }
#verdict.error { background: #8250df; }
.summary { font-size: 15px; margin: 6px 0 0; }
.errorbox { border: 2px solid #8250df; background: #fbefff; padding: 10px 14px; border-radius: 6px; }
.blackbox { border: 2px solid #bf8700; background: #fff8c5; padding: 10px 14px; border-radius: 6px; margin: 12px 0; }
table { border-collapse: collapse; }
#verdict-table th, #verdict-table td { border: 1px solid #d0d7de; padding: 5px 7px; font-size: 13px; }
#verdict-table thead th { background: #f6f8fa; vertical-align: bottom; max-width: 96px; }
#verdict-table td.scenario { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: nowrap; }
td.cell, span.cell { text-align: center; font-weight: 600; white-space: nowrap; }
.pass { background: #dafbe1; color: #116329; } .fail { background: #cf222e; color: #fff; }
.not_checked { background: #fff8c5; color: #7d4e00; } .missing { background: #eaeef2; color: #57606a; }
.legend span.cell { display: inline-block; padding: 2px 8px; margin-right: 10px; border: 1px solid #d0d7de; }
.legend { margin: 8px 0; font-size: 13px; }
.facts th { text-align: left; padding: 3px 14px 3px 0; color: #57606a; font-weight: 500; vertical-align: top; }
.facts td { padding: 3px 0; }
.scenario-failure { border-left: 4px solid #cf222e; padding: 2px 0 2px 14px; margin: 20px 0 28px; }
.violation { margin: 8px 0 14px; } .violation .message { font-weight: 600; }
.muted { color: #57606a; font-size: 13px; }
img.plot { max-width: 100%; border: 1px solid #d0d7de; margin-top: 8px; }
"""


_CAPABILITY_NAMES = {"status": "a /status endpoint", "events": "event lines on stdout"}


def _missing_capabilities(build: dict[str, Any]) -> list[str]:
    caps = _dict(build.get("capabilities"))
    return [name for name in _CAPABILITY_NAMES if name in caps and not caps[name]]


def _black_box_section(missing: list[str], scenarios: list[dict[str, Any]]) -> str:
    """docs/contract.md section 7: a black-box report lists the checks that were not made."""
    e = _esc
    lacks = " and ".join(_CAPABILITY_NAMES[m] for m in missing)
    partial: dict[str, str] = {}
    for scenario in scenarios:
        for invariant, result in _dict(scenario.get("results")).items():
            note = str(_dict(result).get("note") or "")
            if _dict(result).get("status") == "not_checked" or "not checked" in note or "black-box" in note:
                partial.setdefault(invariant, note or "not checked")
    rows = "".join(f"<li><code>{e(inv)}</code>: {e(note)}</li>" for inv, note in sorted(partial.items()))
    return (
        '<div class="blackbox" id="black-box"><strong>Certified black-box.</strong> '
        f"This build lacks {e(lacks)}, so only what can be seen from outside was judged. "
        "A pass below means every check that could be made held; these were not made in full:"
        f"<ul>{rows or '<li>(no checker reported a skipped part)</li>'}</ul></div>"
    )


def render_html(certificate: dict[str, Any]) -> str:
    """The report page as a string (write_html writes it); every certificate value is escaped."""
    verdict = str(certificate.get("verdict") or "error")
    build = _dict(certificate.get("build"))
    command = str(build.get("command") or "(unknown build)")
    invariants = _invariants(certificate)
    scenarios = _scenarios(certificate)
    e = _esc

    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>wschaos certify: {e(verdict.upper())}: {e(command)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header>",
        '<h1>wschaos certification of <code class="command">' + e(command) + "</code></h1>",
        f'<div id="verdict" class="{e(verdict)}">{e(verdict.upper())}</div>',
        f'<p class="summary">{e(_summary(certificate, invariants, scenarios))}</p>',
        "</header>",
    ]
    missing = _missing_capabilities(build)
    if missing and verdict != "error":
        parts.append(_black_box_section(missing, scenarios))
    if certificate.get("error"):
        parts.append(f'<div class="errorbox"><strong>Error:</strong> <pre>{e(str(certificate["error"]))}</pre></div>')

    parts.append("<h2>Verdict by scenario and invariant</h2>")
    parts.append(_legend())
    parts.append(_verdict_table(invariants, scenarios))
    parts.append("<h2>Run facts</h2>")
    parts.append(_facts(certificate, build))

    failing = [s for s in scenarios if _is_failing(s)]
    if failing:
        parts.append(f"<h2>Failing scenarios ({len(failing)})</h2>")
        for scenario in failing:
            parts.append(_failure_section(scenario, invariants))

    run_dirs = [Path(str(s["run_dir"])) for s in scenarios if s.get("run_dir")]
    gaps = failover_gaps([d for d in run_dirs if d.is_dir()])
    parts.append("<h2>Failover gaps</h2>")
    parts.append(f'<p class="muted">{e(_gap_summary(gaps, len(run_dirs)))}</p>')
    parts.append(_img(gap_histogram_png(gaps), "histogram of failover gaps across all scenarios"))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary(certificate: dict[str, Any], invariants: list[str], scenarios: list[dict[str, Any]]) -> str:
    counts = {"pass": 0, "fail": 0, "not_checked": 0}
    for s in scenarios:
        for inv in invariants:
            status = _status(s, inv)
            if status in counts:
                counts[status] += 1
    failing = sum(1 for s in scenarios if _is_failing(s))
    return (
        f"{len(scenarios)} scenario(s), {failing} failing; {len(invariants)} invariant(s): "
        f"{counts['pass']} pass, {counts['fail']} fail, {counts['not_checked']} not checked."
    )


def _legend() -> str:
    items = "".join(
        f'<span class="cell {cls}">{_esc(label)}</span>{_esc(text)} '
        for cls, label, text in (
            ("pass", "pass", "the invariant held"),
            ("fail", "FAIL", "violated (details below)"),
            ("not_checked", "not checked", "the build lacks what the check needs; not a pass"),
            ("missing", "—", "no result"),
        )
    )
    return f'<div class="legend">{items}</div>'


def _verdict_table(invariants: list[str], scenarios: list[dict[str, Any]]) -> str:
    # Underscores are the only break points in invariant names; <wbr> lets narrow columns wrap.
    heads = "".join(f"<th>{_esc(inv).replace('_', '_<wbr>')}</th>" for inv in invariants)
    rows: list[str] = []
    for s in scenarios:
        name = str(s.get("name", "?"))
        label = _esc(name)
        if _is_failing(s):
            label = f'<a href="#scenario-{_esc(_anchor(name))}">{label}</a>'
        kind = f' <span class="muted">({_esc(str(s["kind"]))})</span>' if s.get("kind") == "generated" else ""
        cells = []
        for inv in invariants:
            status = _status(s, inv)
            cls = status if status in STATUS_LABELS else "missing"
            text = STATUS_LABELS.get(status or "", "—")
            note = _note(s, inv)
            title = f' title="{_esc(note)}"' if note else ""
            cells.append(f'<td class="cell {cls}"{title}>{_esc(text)}</td>')
        rows.append(f'<tr><td class="scenario">{label}{kind}</td>{"".join(cells)}</tr>')
    if not rows:
        rows.append(f'<tr><td colspan="{len(invariants) + 1}" class="muted">no scenario ran</td></tr>')
    return (
        f'<table id="verdict-table"><thead><tr><th>scenario</th>{heads}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _facts(certificate: dict[str, Any], build: dict[str, Any]) -> str:
    harness = _dict(certificate.get("harness"))
    machine = _dict(certificate.get("machine"))
    caps = _dict(build.get("capabilities"))
    duration = _number(certificate.get("duration_s"))
    memory = _number(machine.get("memory_gb"))
    rows = [
        ("build command", build.get("command")),
        ("capabilities", ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in caps.items()) or None),
        ("profile", certificate.get("profile")),
        ("started", certificate.get("started")),
        ("duration", f"{duration:.1f} s" if duration is not None else None),
        ("harness", " · ".join(f"{k} {v}" for k, v in harness.items()) or None),
        (
            "machine",
            " · ".join(
                str(x)
                for x in (
                    machine.get("hostname"),
                    machine.get("platform"),
                    f"{machine['cpus']} CPU(s)" if machine.get("cpus") is not None else None,
                    f"{memory:.1f} GB memory" if memory is not None else None,
                )
                if x
            )
            or None,
        ),
    ]
    body = "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(str(v)) if v is not None else '<span class=muted>unknown</span>'}</td></tr>"
        for k, v in rows
    )
    return f'<table class="facts">{body}</table>'


def _failure_section(scenario: dict[str, Any], invariants: list[str]) -> str:
    name = str(scenario.get("name", "?"))
    out = [f'<section class="scenario-failure" id="scenario-{_esc(_anchor(name))}">', f"<h3>{_esc(name)}</h3>"]
    if scenario.get("description"):
        out.append(f"<p>{_esc(str(scenario['description']))}</p>")
    duration = _number(scenario.get("duration_s"))
    facts = [f"run dir: {scenario.get('run_dir') or 'unknown'}"]
    if duration is not None:
        facts.append(f"{duration:.1f} s")
    out.append(f'<p class="muted">{_esc(" · ".join(facts))}</p>')
    if scenario.get("replay"):
        out.append(f"<div>Replay:</div><pre>{_esc(str(scenario['replay']))}</pre>")
    results = _dict(scenario.get("results"))
    # Invariants in the certificate's order first, then any the certificate did not list.
    order = invariants + [k for k in results if k not in invariants]
    for inv in order:
        result = results.get(inv)
        if not isinstance(result, dict) or result.get("status") != "fail":
            continue
        out.append(f'<h4><span class="cell fail" style="padding:1px 6px">FAIL</span> {_esc(inv)}</h4>')
        if result.get("note"):
            out.append(f'<p class="muted">{_esc(str(result["note"]))}</p>')
        violations = _violations(result)
        for v in violations[:MAX_VIOLATIONS_SHOWN]:
            out.append('<div class="violation">')
            out.append(f'<div class="message">{_esc(str(v.get("message", "")))}</div>')
            evidence = _list(v.get("evidence"))
            for item in evidence[:MAX_EVIDENCE_SHOWN]:
                out.append(f"<pre>{_esc(_trim(_compact(item), MAX_EVIDENCE_CHARS))}</pre>")
            if len(evidence) > MAX_EVIDENCE_SHOWN:
                out.append(
                    f'<div class="muted">… {len(evidence) - MAX_EVIDENCE_SHOWN} more evidence '
                    "record(s) in certificate.json</div>"
                )
            out.append("</div>")
        if len(violations) > MAX_VIOLATIONS_SHOWN:
            out.append(
                f'<p class="muted">… {len(violations) - MAX_VIOLATIONS_SHOWN} more violation(s) in certificate.json</p>'
            )
    run_dir = scenario.get("run_dir")
    png = timeline_png(Path(str(run_dir))) if run_dir else _no_data_png("no run directory recorded")
    out.append(_img(png, f"timeline of {name}"))
    out.append("</section>")
    return "\n".join(out)


def _gap_summary(gaps: Sequence[float], n_runs: int) -> str:
    if not gaps:
        return f"No measured failover gaps in {n_runs} run(s)."
    ordered = sorted(gaps)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return (
        f"{len(gaps)} server transition(s) in {n_runs} run(s): median {statistics.median(gaps):.0f} ms, "
        f"p95 {p95:.0f} ms, max {ordered[-1]:.0f} ms (last ack before → first ack after)."
    )


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


# -- helpers --------------------------------------------------------------------------------------


def _invariants(certificate: dict[str, Any]) -> list[str]:
    listed = certificate.get("invariants")
    invariants = [str(i) for i in listed] if isinstance(listed, list) else []
    # A scenario may report an invariant the list lacks; it must still appear, not vanish.
    for s in _scenarios(certificate):
        results = s.get("results")
        if isinstance(results, dict):
            invariants.extend(str(k) for k in results if str(k) not in invariants)
    return invariants


def _scenarios(certificate: dict[str, Any]) -> list[dict[str, Any]]:
    scenarios = certificate.get("scenarios")
    return [s for s in scenarios if isinstance(s, dict)] if isinstance(scenarios, list) else []


def _status(scenario: dict[str, Any], invariant: str) -> str | None:
    results = scenario.get("results")
    result = results.get(invariant) if isinstance(results, dict) else None
    status = result.get("status") if isinstance(result, dict) else None
    return str(status) if status is not None else None


def _note(scenario: dict[str, Any], invariant: str) -> str:
    results = scenario.get("results")
    result = results.get(invariant) if isinstance(results, dict) else None
    return str(result.get("note") or "") if isinstance(result, dict) else ""


def _is_failing(scenario: dict[str, Any]) -> bool:
    results = scenario.get("results")
    any_fail = isinstance(results, dict) and any(
        isinstance(r, dict) and r.get("status") == "fail" for r in results.values()
    )
    return any_fail or scenario.get("passed") is False


def _violations(result: dict[str, Any]) -> list[dict[str, Any]]:
    violations = result.get("violations")
    return [v for v in violations if isinstance(v, dict)] if isinstance(violations, list) else []


def _failure_text(note: str, violations: list[dict[str, Any]], replay: Any) -> str:
    lines: list[str] = []
    if note:
        lines.append(note)
    for v in violations:
        lines.append(f"- {v.get('message', '')}")
        evidence = _list(v.get("evidence"))
        for item in evidence[:MAX_EVIDENCE_SHOWN]:
            lines.append(f"    {_trim(_compact(item), MAX_EVIDENCE_CHARS)}")
        if len(evidence) > MAX_EVIDENCE_SHOWN:
            lines.append(f"    … {len(evidence) - MAX_EVIDENCE_SHOWN} more in certificate.json")
    if replay:
        lines.append(f"replay: {replay}")
    return "\n".join(lines)


def _by_client(run: Run) -> dict[str, list[Record]]:
    """Each game client's records in time order, grouped in one pass (a storm run has 200 clients).

    Only processes that behave like game clients count; anything else a future writer adds to
    history/ (beyond nemesis and monitor) would otherwise become an empty lane.
    """
    client_fs = {"conn_open", "welcome", "move", "conn_close", "conn_fail"}
    grouped: dict[str, list[Record]] = {}
    clients: set[str] = set()
    for rec in run.history:
        process = rec.get("process")
        if process in (None, "nemesis", "monitor"):
            continue
        grouped.setdefault(str(process), []).append(rec)
        if rec.get("f") in client_fs:
            clients.add(str(process))
    return {c: grouped[c] for c in clients}


def _dict(value: Any) -> dict[str, Any]:
    # The certificate and history are JSON from elsewhere: a wrong type reads as "absent".
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _compact(item: Any) -> str:
    if isinstance(item, str):
        return item
    return json.dumps(item, default=str, ensure_ascii=False, separators=(", ", ": "))


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _esc(text: str) -> str:
    return html.escape(_XML_INVALID.sub("\ufffd", text), quote=True)


def _xml_text(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


def _anchor(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def _no_data_png(message: str) -> bytes:
    fig = Figure(figsize=(6, 1.2), dpi=DPI)
    fig.text(0.5, 0.5, _trim(message, 110), ha="center", va="center", fontsize=9, color="#57606a", wrap=True)
    return _png(fig)


def _write_text(path: Path, text: str) -> Path:
    return _write_bytes(path, text.encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> Path:
    # Written whole then renamed: a reader (CI uploading artifacts) never sees half a report.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
