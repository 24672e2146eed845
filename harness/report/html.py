"""report.html: the one page a person reads first.

Self-contained: the stylesheet (package data ``report.css``) is inlined and images are data: URIs.
Every certificate value is escaped.
"""

from __future__ import annotations

import base64
import html
import math
import re
import statistics
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from harness.records import FAIL, INCONCLUSIVE, NOT_CHECKED, Certificate, ScenarioEntry, num, shown_violations

from .junit import xml_safe
from .plots import failover_gaps, gap_histogram_png, no_data_png, timeline_png

STATUS_LABELS = {"pass": "pass", "fail": "FAIL", "not_checked": "not checked"}

_CAPABILITY_NAMES = {
    "status": "a /status endpoint",
    "events": "event lines on stdout",
    "drain": "SIGHUP drain (a boolean draining in /status)",
}


@cache
def stylesheet() -> str:
    return resources.files(__package__).joinpath("report.css").read_text(encoding="utf-8")


def _esc(text: str) -> str:
    return html.escape(xml_safe(text), quote=True)


def _anchor(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name)


def render_html(cert: Certificate) -> str:
    """The report page as a string."""
    verdict = cert.verdict
    command = cert.command or "(unknown build)"
    invariants = cert.all_invariants()
    scenarios = cert.scenarios
    e = _esc

    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>wschaos certify: {e(verdict.upper())}: {e(command)}</title>",
        f"<style>{stylesheet()}</style></head><body>",
        "<header>",
        '<h1>wschaos certification of <code class="command">' + e(command) + "</code></h1>",
        f'<div id="verdict" class="{e(verdict)}">{e(verdict.upper())}</div>',
        f'<p class="summary">{e(_summary(invariants, scenarios))}</p>',
        "</header>",
    ]
    missing = [name for name in _CAPABILITY_NAMES if name in cert.capabilities and not cert.capabilities[name]]
    if missing and verdict != "error":
        parts.append(_black_box_section(missing, scenarios))
    if cert.error:
        parts.append(f'<div class="errorbox"><strong>Error:</strong> <pre>{e(cert.error)}</pre></div>')

    parts.append("<h2>Verdict by scenario and invariant</h2>")
    parts.append(_legend())
    parts.append(_verdict_table(invariants, scenarios))
    parts.append("<h2>Run facts</h2>")
    parts.append(_facts(cert))

    undecided = [s for s in scenarios if s.effective_outcome == INCONCLUSIVE]
    if undecided:
        parts.append(f"<h2>Inconclusive scenarios ({len(undecided)})</h2>")
        for scenario in undecided:
            parts.append(_reasons_section(scenario))

    failing = [s for s in scenarios if s.failing]
    if failing:
        parts.append(f"<h2>Failing scenarios ({len(failing)})</h2>")
        for scenario in failing:
            parts.append(_failure_section(scenario, invariants))

    run_dirs = [Path(s.run_dir) for s in scenarios if s.run_dir]
    gaps = failover_gaps([d for d in run_dirs if d.is_dir()])
    parts.append("<h2>Failover gaps</h2>")
    parts.append(f'<p class="muted">{e(_gap_summary(gaps, len(run_dirs)))}</p>')
    parts.append(_img(gap_histogram_png(gaps), "histogram of failover gaps across all scenarios"))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _black_box_section(missing: list[str], scenarios: list[ScenarioEntry]) -> str:
    """docs/contract.md section 7: a black-box report lists the checks that were not made."""
    e = _esc
    lacks = " and ".join(_CAPABILITY_NAMES[m] for m in missing)
    partial: dict[str, str] = {}
    for scenario in scenarios:
        for invariant, result in scenario.results.items():
            note = result.note
            if result.status == NOT_CHECKED or "not checked" in note or "black-box" in note:
                partial.setdefault(invariant, note or "not checked")
    rows = "".join(f"<li><code>{e(inv)}</code>: {e(note)}</li>" for inv, note in sorted(partial.items()))
    return (
        '<div class="blackbox" id="black-box"><strong>Certified black-box.</strong> '
        f"This build lacks {e(lacks)}, so only what can be seen from outside was judged. "
        "A pass below means every check that could be made held; these were not made in full:"
        f"<ul>{rows or '<li>(no checker reported a skipped part)</li>'}</ul></div>"
    )


def _summary(invariants: list[str], scenarios: list[ScenarioEntry]) -> str:
    counts = {"pass": 0, "fail": 0, "not_checked": 0}
    for s in scenarios:
        for inv in invariants:
            status = s.status(inv)
            if status in counts:
                counts[status] += 1
    failing = sum(1 for s in scenarios if s.failing)
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


def _verdict_table(invariants: list[str], scenarios: list[ScenarioEntry]) -> str:
    # Underscores are the only break points in invariant names; <wbr> lets narrow columns wrap.
    heads = "".join(f"<th>{_esc(inv).replace('_', '_<wbr>')}</th>" for inv in invariants)
    rows: list[str] = []
    for s in scenarios:
        label = _esc(s.name)
        if s.failing:
            label = f'<a href="#scenario-{_esc(_anchor(s.name))}">{label}</a>'
        kind = f' <span class="muted">({_esc(s.kind)})</span>' if s.kind == "generated" else ""
        if s.effective_outcome in ("inconclusive", "flaky"):
            kind += f' <span class="outcome {_esc(s.effective_outcome)}">{_esc(s.effective_outcome.upper())}</span>'
            label = f'<a href="#scenario-{_esc(_anchor(s.name))}">{_esc(s.name)}</a>'
        if s.earlier_runs:
            runs_title = _esc(" ".join(s.earlier_runs))
            kind += f' <span class="muted" title="{runs_title}">(run {len(s.earlier_runs) + 1}x)</span>'
        cells = []
        for inv in invariants:
            status = s.status(inv)
            cls = status if status in STATUS_LABELS else "missing"
            text = STATUS_LABELS.get(status or "", "—")
            note = s.note(inv)
            title = f' title="{_esc(note)}"' if note else ""
            cells.append(f'<td class="cell {cls}"{title}>{_esc(text)}</td>')
        rows.append(f'<tr><td class="scenario">{label}{kind}</td>{"".join(cells)}</tr>')
    if not rows:
        rows.append(f'<tr><td colspan="{len(invariants) + 1}" class="muted">no scenario ran</td></tr>')
    return (
        f'<table id="verdict-table"><thead><tr><th>scenario</th>{heads}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _facts(cert: Certificate) -> str:
    machine = cert.machine
    memory = num(machine.get("memory_gb"))
    rows = [
        ("build command", cert.command),
        ("capabilities", ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in cert.capabilities.items()) or None),
        ("profile", cert.profile),
        ("started", cert.started),
        ("duration", f"{cert.duration_s:.1f} s" if cert.duration_s is not None else None),
        ("harness", " · ".join(f"{k} {v}" for k, v in cert.harness.items()) or None),
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


def _failure_section(scenario: ScenarioEntry, invariants: list[str]) -> str:
    name = scenario.name
    out = [f'<section class="scenario-failure" id="scenario-{_esc(_anchor(name))}">', f"<h3>{_esc(name)}</h3>"]
    if scenario.description:
        out.append(f"<p>{_esc(scenario.description)}</p>")
    facts = [f"run dir: {scenario.run_dir or 'unknown'}"]
    facts += [f"also run: {d}" for d in scenario.earlier_runs]
    if scenario.effective_outcome == "flaky":
        out.append("<p><strong>FLAKY</strong>: it failed, then passed when run again; a failure is not a pass.</p>")
    if scenario.duration_s is not None:
        facts.append(f"{scenario.duration_s:.1f} s")
    out.append(f'<p class="muted">{_esc(" · ".join(facts))}</p>')
    if scenario.replay:
        out.append(f"<div>Replay:</div><pre>{_esc(scenario.replay)}</pre>")
    # Invariants in the certificate's order first, then any the certificate did not list.
    order = invariants + [k for k in scenario.results if k not in invariants]
    for inv in order:
        result = scenario.results.get(inv)
        if result is None or result.status != FAIL:
            continue
        out.append(f'<h4><span class="cell fail" style="padding:1px 6px">FAIL</span> {_esc(inv)}</h4>')
        if result.note:
            out.append(f'<p class="muted">{_esc(result.note)}</p>')
        shown, more = shown_violations(result.violations)
        for v in shown:
            out.append('<div class="violation">')
            out.append(f'<div class="message">{_esc(v.message)}</div>')
            out.extend(f"<pre>{_esc(item)}</pre>" for item in v.evidence)
            if v.more_evidence:
                out.append(f'<div class="muted">… {v.more_evidence} more evidence record(s) in certificate.json</div>')
            out.append("</div>")
        if more:
            out.append(f'<p class="muted">… {more} more violation(s) in certificate.json</p>')
    png = timeline_png(Path(scenario.run_dir)) if scenario.run_dir else no_data_png("no run directory recorded")
    out.append(_img(png, f"timeline of {name}"))
    out.append("</section>")
    return "\n".join(out)


def _reasons_section(scenario: ScenarioEntry) -> str:
    e = _esc
    runs = [*scenario.earlier_runs, scenario.run_dir or "unknown"]
    reasons = "".join(f"<li>{e(r)}</li>" for r in dict.fromkeys(scenario.reasons))  # repeated reasons folded
    return (
        f'<section class="scenario-inconclusive" id="scenario-{e(_anchor(scenario.name))}">'
        f"<h3>{e(scenario.name)}</h3><p>Could not judge the build, so this is not a pass:</p><ul>{reasons}</ul>"
        f'<p class="muted">runs: {e(" · ".join(runs))}</p></section>'
    )


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
