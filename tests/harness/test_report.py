"""The certification report: files, JUnit counts, the HTML page, failover gaps and timelines.

Everything runs on synthetic run directories written here; no process is started except Chromium,
in the one test that renders the page as a browser would (skipped when Chromium is absent).
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.report import (
    failover_gaps,
    gap_histogram_png,
    timeline_png,
    write_html,
    write_junit,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_764_162_000.0
INVARIANTS = [
    "no_concurrent_recv",
    "reconnect_limits",
    "cleanup_complete",
    "single_upstream",
    "no_crosstalk",
    "ordered",
    "clean_failover",
    "state_continuity",
    "recovers_after_heal",
]
EVIL = "<script>alert('x')</script> & \"quotes\""


# -- a tiny synthetic run-dir builder --------------------------------------------------------------


def client_story(
    client: str, *, last_ack_before: float, failover_at: float | None, first_ack_after: float, close_code: int = 1000
) -> list[dict[str, Any]]:
    """A client that plays on primary and (when failover_at is set) is moved to secondary.

    Times are seconds after T0. The expected failover gap is first_ack_after - last_ack_before.
    """

    def rec(t: float, type_: str, f: str, **fields: Any) -> dict[str, Any]:
        return {"t": T0 + t, "process": client, "type": type_, "f": f, **fields}

    recs = [
        rec(0.1, "event", "conn_open", conn=1),
        rec(
            0.2, "event", "welcome", conn=1, server="primary", server_conn="primary-1", state={"seq": 0, "x": 0, "y": 0}
        ),
        rec(1.0, "invoke", "move", conn=1, seq=1, attempt=1),
        rec(1.05, "ok", "move", conn=1, seq=1, server="primary", client=client, dup=False, state={"seq": 1}),
        rec(last_ack_before - 0.05, "invoke", "move", conn=1, seq=2, attempt=1),
        rec(last_ack_before, "ok", "move", conn=1, seq=2, server="primary", client=client, dup=False, state={"seq": 2}),
    ]
    server = "primary"
    if failover_at is not None:
        server = "secondary"
        recs += [
            rec(
                failover_at,
                "event",
                "welcome",
                conn=1,
                server="secondary",
                server_conn="secondary-1",
                state={"seq": 0, "x": 0, "y": 0},
            ),
            rec(failover_at + 0.01, "event", "resume", conn=1, state={"seq": 2}, resent=[]),
        ]
    recs += [
        rec(first_ack_after - 0.05, "invoke", "move", conn=1, seq=3, attempt=1),
        rec(first_ack_after, "ok", "move", conn=1, seq=3, server=server, client=client, dup=False, state={"seq": 3}),
        rec(9.0, "event", "conn_close", conn=1, code=close_code, reason="", initiator="remote"),
        rec(9.1, "event", "stopped", hung=False),
    ]
    return recs


def nemesis_kill_primary(apply_at: float, heal_at: float | None) -> list[dict[str, Any]]:
    fault = {"kind": "kill", "target": "primary", "params": {}}
    recs = []
    for t, type_, f in (
        (apply_at - 0.05, "invoke", "apply"),
        (apply_at, "ok", "apply"),
        (None if heal_at is None else heal_at - 0.05, "invoke", "heal"),
        (heal_at, "ok", "heal"),
    ):
        if t is not None:
            recs.append({"t": T0 + t, "process": "nemesis", "type": type_, "f": f, "fault": fault, "fault_id": "f1"})
    return recs


def build_run_dir(
    root: Path,
    name: str,
    clients: dict[str, list[dict[str, Any]]],
    nemesis: list[dict[str, Any]],
    *,
    torn_tail: bool = False,
) -> Path:
    """Writes RUN/run.json and RUN/history/*.jsonl as the runner would (docs/architecture.md)."""
    run = root / name
    (run / "history").mkdir(parents=True)
    phases = {
        "started": T0,
        "warmup_end": T0 + 2,
        "faults_end": T0 + 5,
        "heal_end": T0 + 6,
        "deadline_end": T0 + 8,
        "quiesce_end": T0 + 9.5,
    }
    meta = {
        "run_id": name,
        "started": T0,
        "ended": T0 + 10,
        "phases": phases,
        "balancer_cmd": "python -m balancer {config}",
        "capabilities": {"status": True, "events": True},
    }
    (run / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    for client, recs in clients.items():
        lines = [json.dumps(r) for r in recs]
        (run / "history" / f"{client}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    text = "\n".join(json.dumps(r) for r in nemesis) + "\n"
    if torn_tail:
        text += '{"t": 17641620'  # a writer killed mid-line
    (run / "history" / "nemesis.jsonl").write_text(text, encoding="utf-8")
    (run / "scenario.json").write_text("{}", encoding="utf-8")
    return run


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    kill = build_run_dir(
        tmp_path / "runs",
        "kill_primary",
        {
            "c000": client_story("c000", last_ack_before=2.05, failover_at=3.4, first_ack_after=3.5),
            "c001": client_story("c001", last_ack_before=2.10, failover_at=3.6, first_ack_after=3.9, close_code=1011),
        },
        nemesis_kill_primary(3.0, 6.0),
        torn_tail=True,
    )
    calm = build_run_dir(
        tmp_path / "runs",
        "latency_primary",
        {
            "c000": client_story("c000", last_ack_before=2.0, failover_at=None, first_ack_after=3.0),
            "c001": client_story("c001", last_ack_before=2.0, failover_at=None, first_ack_after=3.0),
        },
        [],
    )
    return {"kill": kill, "calm": calm}


# Recovery figures as certify records them (harness.recovery): the kill scenario's two clients
# recovered in 1.45 s and 1.8 s; the calm one had nothing to recover from.
KILL_RECOVERY: dict[str, Any] = {
    "clients": 2,
    "disrupted_clients": 2,
    "episodes": 2,
    "unrecovered": 0,
    "p50_recover_s": 1.45,
    "p99_recover_s": 1.8,
    "max_recover_s": 1.8,
    "max_recover_client": "c001",
    "longest_gap_s": 1.8,
    "longest_gap_client": "c001",
    "longest_gap_at_s": 2.1,
    "reconnects": 0,
    "peak_reconnects_per_s": 0,
    "upstream_connects": 2,
    "peak_upstream_connects_per_s": 2,
    "peak_upstream_connects_at_s": 3.39,
    "resent": 1,
    "lost": 1,
    "lost_examples": ["c001#3"],
}
CALM_RECOVERY: dict[str, Any] = {"clients": 2, "longest_gap_s": 1.0, "longest_gap_client": "c000"}


def results(**overrides: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {inv: {"status": "pass", "note": "", "violations": []} for inv in INVARIANTS}
    out.update(overrides)
    return out


def make_certificate(runs: dict[str, Path]) -> dict[str, Any]:
    failing = results(
        clean_failover={
            "status": "fail",
            "note": "a client saw a close during failover",
            "violations": [
                {
                    "message": f"c001 closed with 1011 during failover {EVIL}",
                    "evidence": [{"t": T0 + 9.0, "process": "c001", "f": "conn_close", "code": 1011, "reason": EVIL}],
                }
            ],
        },
        state_continuity={
            "status": "fail",
            "note": "",
            "violations": [
                {"message": "c000 state went backwards", "evidence": [{"seq": 3, "\x00bad": "\x01"}]},
                {"message": "c001 state went backwards", "evidence": ["x" * 5000]},
            ],
        },
        no_concurrent_recv={"status": "not_checked", "note": "the build prints no event lines", "violations": []},
    )
    passing = results(
        no_concurrent_recv={"status": "not_checked", "note": "the build prints no event lines", "violations": []}
    )
    return {
        "verdict": "rejected",
        "error": None,
        "build": {"command": "python -m balancer {config}", "capabilities": {"status": True, "events": False}},
        "harness": {"version": "0.1.0", "python": "3.11.7", "websockets": "17.4"},
        "machine": {"hostname": "ci-1", "platform": "Linux-6.1-x86_64", "cpus": 2, "memory_gb": 23.4},
        "profile": "quick",
        "started": "2026-11-26T14:00:00Z",
        "duration_s": 123.4,
        "invariants": INVARIANTS,
        "scenarios": [
            {
                "name": "latency_primary",
                "description": "latency spike on the primary link",
                "run_dir": str(runs["calm"]),
                "duration_s": 10.0,
                "passed": True,
                "kind": "named",
                "results": passing,
                "replay": f"python -m harness replay {runs['calm']}/scenario.json",
                "recovery": CALM_RECOVERY,
            },
            {
                "name": "kill_primary",
                "description": "kill the primary while 2 clients play",
                "run_dir": str(runs["kill"]),
                "duration_s": 9.1,
                "passed": False,
                "kind": "named",
                "results": failing,
                "replay": f"python -m harness replay {runs['kill']}/scenario.json",
                "recovery": KILL_RECOVERY,
            },
        ],
    }


def png_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


# -- the files -------------------------------------------------------------------------------------


def test_write_report_writes_all_three(tmp_path: Path, runs: dict[str, Path]) -> None:
    cert = make_certificate(runs)
    paths = write_report(tmp_path / "report", cert)
    assert set(paths) == {"certificate", "junit", "html"}
    assert paths["certificate"].name == "certificate.json"
    assert paths["junit"].name == "junit.xml"
    assert paths["html"].name == "report.html"
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    # The certificate is the full record: nothing trimmed or dropped.
    loaded = json.loads(paths["certificate"].read_text(encoding="utf-8"))
    assert loaded["scenarios"][1]["results"]["state_continuity"]["violations"][1]["evidence"] == ["x" * 5000]
    assert not list((tmp_path / "report").glob("*.tmp"))


def test_junit_counts_and_messages(tmp_path: Path, runs: dict[str, Path]) -> None:
    path = write_junit(tmp_path, make_certificate(runs))
    root = ET.parse(path).getroot()  # also proves the control characters were made XML-safe
    suites = list(root.iter("testsuite"))
    assert len(suites) == 1 and suites[0].get("name") == "wschaos certify"
    suite = suites[0]
    cases = suite.findall("testcase")
    assert len(cases) == 2 * len(INVARIANTS)
    assert sum(1 for c in cases if c.find("failure") is not None) == 2
    assert sum(1 for c in cases if c.find("skipped") is not None) == 2
    assert sum(1 for c in cases if c.find("error") is not None) == 0
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == (
        "18",
        "2",
        "2",
        "0",
    )

    by_id = {(c.get("classname"), c.get("name")): c for c in cases}
    failure = by_id[("kill_primary", "clean_failover")].find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("c001 closed with 1011 during failover <script>")
    assert "1011" in (failure.text or "")
    assert "python -m harness replay" in (failure.text or "")
    skipped = by_id[("latency_primary", "no_concurrent_recv")].find("skipped")
    assert skipped is not None
    assert skipped.get("message") == "not checked: the build prints no event lines"
    assert list(by_id[("latency_primary", "ordered")]) == []  # a pass has no child element


def test_junit_for_a_build_that_never_started(tmp_path: Path) -> None:
    cert = {
        "verdict": "error",
        "error": "the build exited with code 1 before it was ready",
        "invariants": INVARIANTS,
        "scenarios": [],
    }
    paths = write_report(tmp_path, cert)
    suite = next(ET.parse(paths["junit"]).getroot().iter("testsuite"))
    assert suite.get("errors") == "1"
    page = paths["html"].read_text(encoding="utf-8")
    assert 'id="verdict"' in page and "ERROR" in page
    assert "the build exited with code 1" in page


# -- the page --------------------------------------------------------------------------------------


def test_html_page(tmp_path: Path, runs: dict[str, Path]) -> None:
    cert = make_certificate(runs)
    page = write_html(tmp_path, cert).read_text(encoding="utf-8")

    assert 'id="verdict-table"' in page
    assert re.search(r'id="verdict"[^>]*>REJECTED<', page)
    assert "python -m balancer {config}" in page
    table = page[page.index('id="verdict-table"') : page.index("</table>", page.index('id="verdict-table"'))]
    assert table.count("<tr>") == 3  # header + 2 scenarios
    assert table.count(">FAIL<") == 2 and table.count(">not checked<") == 2
    assert table.count(">pass<") == 2 * len(INVARIANTS) - 4
    # The failing scenario: its evidence (escaped, trimmed) and the replay command.
    assert f"python -m harness replay {runs['kill']}/scenario.json" in page
    assert "c001 closed with 1011 during failover" in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "x" * 5000 not in page and "x" * 100 in page
    assert "\x00" not in page
    # The passing scenario gets no failure section.
    assert 'id="scenario-kill_primary"' in page and 'id="scenario-latency_primary"' not in page
    # Facts.
    for fact in ("quick", "ci-1", "3.11.7", "123.4 s", "2 CPU(s)"):
        assert fact in page
    # Self-contained: a timeline for the failing scenario, the recovery plot and the gap histogram,
    # nothing external.
    images = png_images(page)
    assert len(images) == 3
    assert all(img.startswith(PNG_MAGIC) for img in images)
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_recovery_figures_in_the_page_and_junit(tmp_path: Path, runs: dict[str, Path]) -> None:
    cert = make_certificate(runs)
    cert["scenarios"][1]["results"]["recovery_goals"] = {
        "status": "pass",
        "note": "met: p99_recover_s 1.8 <= 5",
        "violations": [],
    }
    cert["scenarios"].append({"name": "old_entry", "results": {}})  # a certificate row from before figures
    page = write_html(tmp_path, cert).read_text(encoding="utf-8")
    section = page[page.index('<section id="recovery">') : page.index("</section>", page.index('id="recovery"'))]
    rows = re.findall(r"<tr>(.*?)</tr>", section[section.index("<tbody>") :])
    assert len(rows) == 3
    assert "nothing to recover from" in rows[0] and "1.00 (c000)" in rows[0]
    kill = rows[1]
    for shown in ("2 of 2", "1.45 / 1.80 / 1.80", "1.80 (c001)", 'title="c001#3"', 'title="met: p99_recover_s 1.8'):
        assert shown in kill, shown
    assert re.search(r'class="cell pass"[^>]*>pass<', kill)
    assert "not measured" in rows[2]
    assert len(png_images(section)) == 1

    suite = next(ET.parse(write_junit(tmp_path, cert)).getroot().iter("testsuite"))
    props = {p.get("name"): p.get("value") for p in suite.find("properties") or []}
    assert props["recovery.kill_primary.p99_recover_s"] == "1.8"
    assert props["recovery.kill_primary.max_recover_s"] == "1.8"
    assert props["recovery.kill_primary.peak_upstream_connects_per_s"] == "2"
    assert props["recovery.kill_primary.lost"] == "1"
    assert props["recovery.kill_primary.lost_examples"] == "c001#3"
    assert props["recovery.latency_primary.episodes"] == "0"
    assert "recovery.latency_primary.p99_recover_s" not in props  # not measured: left out, never 0
    assert not any(name and name.startswith("recovery.old_entry.") for name in props)

    # A missed goal links to the failing scenario's section, where its evidence is.
    cert["scenarios"][1]["results"]["recovery_goals"] = {"status": "fail", "note": "", "violations": []}
    page = write_html(tmp_path, cert).read_text(encoding="utf-8")
    section = page[page.index('<section id="recovery">') : page.index("</section>", page.index('id="recovery"'))]
    assert '<td class="cell fail" title=""><a href="#scenario-kill_primary">FAIL</a></td>' in section


def test_recovery_png() -> None:
    from harness.records import ScenarioEntry
    from harness.report.plots import recovery_png

    full = recovery_png([ScenarioEntry.from_json({"name": "k", "recovery": KILL_RECOVERY}),
                         ScenarioEntry.from_json({"name": "c", "recovery": CALM_RECOVERY})])  # fmt: skip
    assert full.startswith(PNG_MAGIC)
    empty = recovery_png([ScenarioEntry(name="old")])
    assert empty.startswith(PNG_MAGIC) and len(empty) < len(full)


# -- failover gaps and plots ---------------------------------------------------------------------------


def test_failover_gaps_of_the_synthetic_runs(runs: dict[str, Path]) -> None:
    assert failover_gaps([runs["kill"]]) == pytest.approx([1450.0, 1800.0], abs=0.01)
    assert failover_gaps([runs["calm"]]) == []
    assert failover_gaps([runs["kill"], runs["calm"], runs["kill"] / "missing"]) == pytest.approx(
        [1450.0, 1800.0], abs=0.01
    )


def test_failover_gap_rules(tmp_path: Path) -> None:
    def rec(t: float, type_: str, f: str, **fields: Any) -> dict[str, Any]:
        return {"t": T0 + t, "process": "c000", "type": type_, "f": f, **fields}

    history = [
        rec(0.1, "event", "welcome", conn=1, server="primary"),
        rec(0.5, "ok", "move", seq=1),
        # Flapping: two transitions with no ack in between are one stall, measured from 0.5.
        rec(1.0, "event", "welcome", conn=1, server="secondary"),
        rec(1.2, "event", "welcome", conn=1, server="primary"),
        rec(1.7, "ok", "move", seq=2),
        # A reconnect to the same server is not a server transition.
        rec(2.0, "event", "conn_close", conn=1, code=1006),
        rec(2.5, "event", "welcome", conn=2, server="primary"),
        rec(3.0, "ok", "move", seq=3),
        # A transition never acknowledged afterwards has no gap to measure.
        rec(4.0, "event", "welcome", conn=2, server="secondary"),
    ]
    run = build_run_dir(tmp_path, "rules", {"c000": history}, [])
    assert failover_gaps([run]) == pytest.approx([1200.0], abs=0.01)


def test_timeline_png(tmp_path: Path, runs: dict[str, Path]) -> None:
    full = timeline_png(runs["kill"])  # this one also has a torn nemesis line
    assert full.startswith(PNG_MAGIC)

    empty = tmp_path / "empty"
    empty.mkdir()
    no_clients = build_run_dir(tmp_path, "no_clients", {}, nemesis_kill_primary(1.0, None))
    torn = tmp_path / "torn"
    (torn / "history").mkdir(parents=True)
    (torn / "run.json").write_text("{not json", encoding="utf-8")
    (torn / "history" / "c000.jsonl").write_text(
        '{"t": "soon", "process": "c000", "f": "welcome"}\n{"t"', encoding="utf-8"
    )
    for broken in (empty, tmp_path / "does-not-exist", no_clients, torn):
        png = timeline_png(broken)
        assert png.startswith(PNG_MAGIC), broken
        assert len(png) < len(full)  # the small "no data" image, not a plot


def test_gap_histogram_png() -> None:
    assert gap_histogram_png([120.0, 340.5, 80.0, 2000.0]).startswith(PNG_MAGIC)
    assert gap_histogram_png([]).startswith(PNG_MAGIC)
    assert gap_histogram_png([float("nan"), -1.0]).startswith(PNG_MAGIC)


# -- the page in a real browser --------------------------------------------------------------------


# Appended to a copy of the page (the report itself has no script): reports where the recovery
# section was laid out, whether it is shown, and whether its plot decoded.
PROBE_RECOVERY = """<script>
window.addEventListener("load", () => {
  const section = document.getElementById("recovery");
  const box = section.getBoundingClientRect();
  const style = getComputedStyle(section);
  const img = section.querySelector("img");
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    top: box.top + window.scrollY, bottom: box.bottom + window.scrollY, left: box.left,
    width: box.width, height: box.height, display: style.display, visibility: style.visibility,
    rows: section.querySelectorAll("tbody tr").length, text: section.innerText,
    imgNaturalWidth: img ? img.naturalWidth : 0, imgHeight: img ? img.getBoundingClientRect().height : 0,
  });
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # These flags keep a headless Chromium from touching the network or a user profile, and
    # --no-sandbox is needed when the tests run as root in a container.
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def test_report_renders_in_headless_chromium(tmp_path: Path, runs: dict[str, Path]) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    page = write_report(tmp_path / "report", make_certificate(runs))["html"]
    url = page.resolve().as_uri()

    shot = tmp_path / "shot.png"
    proc = _run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2000)
    # Non-trivial: a rendered page with coloured table cells and plots, not a blank canvas.
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert len(data) > 20_000
    assert float(pixels[..., :3].std()) > 0.05

    proc = _run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert 'id="verdict-table"' in dom
    assert re.search(r'id="verdict"[^>]*>REJECTED<', dom)
    assert "kill_primary" in dom

    # The recovery section renders and is visible: laid out with a size, not hidden, both
    # scenarios' rows present and its plot decoded; then its pixels in a screenshot are not blank.
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE_RECOVERY + "</body>"), "utf-8")
    proc = _run_chromium(binary, tmp_path / "profile-probe", "--window-size=1280,2000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"the probe did not run (exit {proc.returncode}): {proc.stderr[-2000:]}"
    box = json.loads(html.unescape(found.group(1)))
    assert (box["display"], box["visibility"]) == ("block", "visible"), box
    assert box["width"] > 600 and box["height"] > 300, box
    assert box["rows"] == 2 and "kill_primary" in box["text"] and "1.45 / 1.80 / 1.80" in box["text"], box
    assert box["imgNaturalWidth"] > 0 and box["imgHeight"] > 100, box
    bottom = int(box["bottom"]) + 10
    shot = tmp_path / "shot-recovery.png"
    _run_chromium(binary, tmp_path / "profile-shot2", f"--screenshot={shot}", f"--window-size=1280,{bottom}", url)
    pixels = matplotlib.image.imread(str(shot))
    region = pixels[int(box["top"]) : bottom - 10, int(box["left"]) : int(box["left"] + box["width"]), :3]
    assert region.shape[0] > 300 and float(region.std()) > 0.05


def test_an_interrupted_certificate_is_never_green(tmp_path: Path) -> None:
    cert = {
        "verdict": "interrupted",
        "error": "interrupted by SIGTERM during scenario kill_primary, after 0 finished scenario(s)",
        "interrupted": {"signal": "SIGTERM", "exit_code": 143, "during": "scenario kill_primary",
                        "finished_scenarios": 0},
        "build": {"command": "python -m balancer {config}"},
        "invariants": INVARIANTS,
        "scenarios": [{"name": "kill_primary", "outcome": "inconclusive", "passed": False, "results": {},
                       "reasons": ["interrupted by SIGTERM 1.2 s into the run; the partial run was not judged"]}],
    }  # fmt: skip
    paths = write_report(tmp_path, cert)
    html = paths["html"].read_text()
    assert '<div id="verdict" class="interrupted">INTERRUPTED</div>' in html
    assert "<strong>Interrupted:</strong>" in html and "1.2 s into the run" in html
    suite = ET.parse(paths["junit"]).getroot().find("testsuite")
    assert suite is not None and int(suite.get("errors", "0")) >= 1
    assert json.loads(paths["certificate"].read_text())["interrupted"]["exit_code"] == 143
