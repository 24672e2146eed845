"""report.html: the one page a person reads first.

Self-contained: the stylesheet (package data ``report.css``) is inlined and images are data: URIs.
Every certificate value is escaped.
"""

from __future__ import annotations

import base64
import html
import re
import statistics
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from harness.records import (
    FAIL,
    INCONCLUSIVE,
    INTERRUPTED,
    NOT_CHECKED,
    Certificate,
    ScenarioEntry,
    num,
    shown_violations,
)
from harness.recovery import nearest_rank

from .junit import xml_safe
from .plots import failover_gaps, gap_histogram_png, no_data_png, recovery_png, timeline_png

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
        label = "Interrupted" if verdict == INTERRUPTED else "Error"
        parts.append(
            f'<div class="errorbox" id="{label.lower()}"><strong>{label}:</strong> <pre>{e(cert.error)}</pre></div>'
        )

    parts.append("<h2>Verdict by scenario and invariant</h2>")
    parts.append(_legend())
    parts.append(_verdict_table(invariants, scenarios))
    parts.append("<h2>Run facts</h2>")
    parts.append(_facts(cert))
    parts.append(_recovery_section(scenarios))

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


RECOVERY_INVARIANT = "recovery_goals"


def _recovery_section(scenarios: list[ScenarioEntry]) -> str:
    """Recovery measured, per scenario (harness.recovery; docs/verdicts.md "Recovery figures")."""
    e = _esc
    rows: list[str] = []
    for s in scenarios:
        f = s.recovery
        if f is None:
            why = (
                "not measured: a summary of several plans (each plan's figures: python -m harness judge RUN_DIR)"
                if s.kind == "generated"
                else "not measured"
            )
            not_measured = f'<td colspan="9" class="muted">{e(why)}</td>'
            rows.append(f'<tr><td class="scenario">{e(s.name)}</td>{not_measured}</tr>')
            continue
        if f.episodes:
            recover = " / ".join(_seconds(v) for v in (f.p50_recover_s, f.p99_recover_s, f.max_recover_s))
            disrupted = f"{f.disrupted_clients} of {f.clients}"
        else:
            recover, disrupted = '<span class="muted">nothing to recover from</span>', f"0 of {f.clients}"
        goal = s.results.get(RECOVERY_INVARIANT)
        status = goal.status if goal is not None else None
        goal_cell = '<td class="cell missing">—</td>'
        if goal is not None and status in STATUS_LABELS:
            label = e(STATUS_LABELS[status])
            if status == FAIL:  # to the failing section, where the missed goal and its evidence are
                label = f'<a href="#scenario-{e(_anchor(s.name))}">{label}</a>'
            goal_cell = f'<td class="cell {status}" title="{e(goal.note)}">{label}</td>'

        cells = [
            disrupted,
            recover,
            str(f.unrecovered),
            _seconds(f.longest_gap_s) + (f" ({e(f.longest_gap_client)})" if f.longest_gap_client else ""),
            str(f.peak_reconnects_per_s),
            str(f.peak_upstream_connects_per_s),
            str(f.resent),
            str(f.lost),
        ]
        lost_title = f' title="{e(", ".join(f.lost_examples))}"' if f.lost_examples else ""
        tds = "".join(f"<td>{c}</td>" for c in cells[:-1]) + f"<td{lost_title}>{cells[-1]}</td>"
        rows.append(f'<tr><td class="scenario">{e(s.name)}</td>{tds}{goal_cell}</tr>')
    heads = "".join(
        f"<th>{h}</th>"
        for h in (
            "scenario",
            "clients disrupted",
            "recover p50 / p99 / max (s)",
            "never recovered",
            "longest gap in play (s)",
            "peak reconnects /s",
            "peak upstream connects /s",
            "re-sent",
            "lost",
            "goals",
        )
    )
    return (
        '<section id="recovery"><h2>Recovery</h2>'
        '<p class="muted">Time to recover: from a client\'s last acknowledged move before a disruption (its '
        "connection closed or refused, or moved in place to another upstream) to its next acknowledged move; "
        "nearest-rank percentiles over every disrupted client. Peaks: the most connection attempts after a "
        "client's first, and the most connections the backends accepted, in any 1 s window after the warm-up. "
        "Lost: moves no server took. Goals: the scenario's <code>expect.recovery</code>, judged as "
        "<code>recovery_goals</code>.</p>"
        f'<table id="recovery-table"><thead><tr>{heads}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f"{_img(recovery_png(scenarios), 'time to recover, longest gap and peak connection rates per scenario')}"
        "</section>"
    )


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _gap_summary(gaps: Sequence[float], n_runs: int) -> str:
    if not gaps:
        return f"No measured failover gaps in {n_runs} run(s)."
    p95 = nearest_rank(gaps, 0.95) or 0.0
    return (
        f"{len(gaps)} server transition(s) in {n_runs} run(s): median {statistics.median(gaps):.0f} ms, "
        f"p95 {p95:.0f} ms, max {max(gaps):.0f} ms (last ack before → first ack after)."
    )


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{_esc(alt)}" src="data:image/png;base64,{data}">'
