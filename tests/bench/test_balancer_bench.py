"""The balancer benchmark's pure parts (bench/bench_report.py), and one real round trip through its load generator.

The benchmark itself (``make bench``) takes minutes; these check what turns its measurements into
numbers (percentiles, medians, ratios, the generated section of docs/performance.md) and that the
picows generator and echo backend really talk to each other.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent.parent


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_percentile_walks_the_histogram() -> None:
    bench = _load("balancer_bench")
    histogram = Counter({10: 98, 50: 1, 900: 1})
    assert bench.percentile(histogram, 0.5) == 10
    assert bench.percentile(histogram, 0.99) == 50
    assert bench.percentile(histogram, 0.999) == 900
    assert bench.percentile(Counter(), 0.5) is None


def test_summary_takes_the_median_and_ratios_to_haproxy_of_the_same_cell() -> None:
    bench = _load("balancer_bench")

    def cell(target: str, rnd: int, rps: float, p99: float, cpu: float | None) -> dict[str, object]:
        return {"target": target, "size": 64, "conns": 16, "round": rnd, "rps": rps, "p50_us": 1.0,
                "p99_us": p99, "p999_us": p99, "proxy_cpu_us_per_rt": cpu}  # fmt: skip

    cells = [
        cell("haproxy", 1, 1000, 100, 20),
        cell("haproxy", 2, 3000, 300, 40),
        cell("haproxy", 3, 2000, 200, 30),
        cell("reference", 1, 250, 300, 100),
        cell("reference", 2, 750, 900, 200),
        cell("reference", 3, 500, 600, 150),
        cell("direct", 1, 9000, 50, None),
    ]
    rows = {r["target"]: r for r in bench.summarise(cells)}
    assert rows["haproxy"]["rps"] == 2000 and rows["haproxy"]["rounds"] == 3
    assert rows["reference"]["rps_vs_haproxy"] == pytest.approx(0.25)
    assert rows["reference"]["p99_vs_haproxy"] == pytest.approx(3.0)
    assert rows["reference"]["cpu_vs_haproxy"] == pytest.approx(5.0)
    assert rows["direct"]["cpu_vs_haproxy"] is None  # no proxy, no proxy CPU
    assert [r["target"] for r in bench.summarise(cells)] == ["direct", "reference", "haproxy"]


def test_ratios_to_haproxy_pair_the_rounds_and_take_their_median() -> None:
    bench = _load("balancer_bench")

    def cell(target: str, rnd: int, rps: float, p99: float, cpu: float) -> dict[str, object]:
        return {"target": target, "size": 64, "conns": 16, "round": rnd, "rps": rps, "p50_us": 1.0,
                "p99_us": p99, "p999_us": p99, "proxy_cpu_us_per_rt": cpu}  # fmt: skip

    # Round 2 was slow for both (a burst of load from elsewhere): paired, it changes nothing.
    cells = [
        cell("haproxy", 1, 4000, 100, 10), cell("reference", 1, 3200, 150, 20),
        cell("reference", 2, 800, 600, 30), cell("haproxy", 2, 1000, 400, 15),
        cell("haproxy", 3, 4200, 110, 10), cell("reference", 3, 3360, 165, 20),
        cell("reference", 4, 3000, 1000, 99),  # no HAProxy cell in round 4: nothing to pair with
    ]  # fmt: skip
    ref = {r["target"]: r for r in bench.summarise(cells)}["reference"]
    assert ref["rps_vs_haproxy_per_round"] == pytest.approx([0.8, 0.8, 0.8])
    assert ref["rps_vs_haproxy"] == pytest.approx(0.8)  # the ratio of the medians would say 3100 / 4000
    assert ref["p99_vs_haproxy_per_round"] == pytest.approx([1.5, 1.5, 1.5])
    assert ref["cpu_vs_haproxy"] == pytest.approx(2.0)
    verdicts = {goal: (measured, verdict) for goal, _, measured, verdict in
                sys.modules["bench_report"].goals({"load": bench.summarise(cells)}, ping_s=1.0)}  # fmt: skip
    assert verdicts["round trips/s ÷ HAProxy (64 B, 16 conns)"] == ("0.80 (median of 3 rounds; 0.80 to 0.80)", "met")
    assert verdicts["p99 RTT ÷ HAProxy (64 B, 16 conns)"][1] == "met"
    assert verdicts["proxy CPU per round trip ÷ HAProxy (64 B, 16 conns)"][1] == "met"


def test_the_goals_cell_gets_its_extra_rounds_after_the_matrix() -> None:
    bench = _load("balancer_bench")
    args = bench.parse_args(["--rounds", "2", "--goal-rounds", "4", "--sizes", "64,16384", "--conns", "1,16"])
    plan = bench.load_plan(args)
    matrix = [(r, s, c) for r in (0, 1) for s in (64, 16384) for c in (1, 16)]
    assert plan == [*matrix, (2, 64, 16), (3, 64, 16)]
    # Fewer goal rounds than matrix rounds: the matrix alone; a matrix without the cell: no extra rounds.
    assert bench.load_plan(bench.parse_args(["--rounds", "3", "--goal-rounds", "1"]))[-1][0] == 2
    assert bench.load_plan(bench.parse_args(["--sizes", "16384", "--goal-rounds", "9"])) == [
        (r, 16384, c) for r in (0, 1) for c in (1, 16, 256)
    ]
    assert bench.parse_args(["--quick"]).goal_rounds == 1


def test_failover_quantiles_of_nothing_are_absent_not_zero() -> None:
    bench = _load("balancer_bench")
    assert bench.quantiles([]) == {"p50": None, "p99": None, "max": None}
    assert bench.quantiles([3.0, 1.0, 2.0])["max"] == 3.0


def test_the_generated_section_replaces_itself_and_keeps_the_rest(tmp_path: Path) -> None:
    _load("balancer_bench")  # puts bench/ on sys.path for its sibling modules
    bench = sys.modules["bench_report"]
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n## Toxiproxy overhead\n\nkept\n")
    report = {
        "date": "2026-11-30 13:00 UTC", "wall_s": 60.0,
        "machine": {"cpus": 2, "platform": "linux", "loadavg_start": [1], "loadavg_end": [2],
                    "fd_limit": {"now": 20000, "hard": 20000}},
        "versions": {"python": "3.11"}, "notes": ["nginx skipped: not installed"],
        "failover": [{"target": "reference", "fault": "sigkill", "clients": 8, "closed": 0, "recovered": 8,
                      "window_ms": 3000, "gap_ms": {"p50": 20.0, "p99": 30.0, "max": 31.0}}],
    }  # fmt: skip
    bench.write_doc(doc, report, None)
    report["failover"][0]["gap_ms"]["p99"] = 44.0
    bench.write_doc(doc, report, None)
    text = doc.read_text()
    assert "## Toxiproxy overhead\n\nkept" in text
    assert text.count(bench.DOC_BEGIN) == 1 and text.count(bench.DOC_END) == 1
    assert "| 44.0 |" in text and "| 30.0 |" not in text
    assert "nginx skipped: not installed" in text


def test_bad_flags_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("balancer_bench")
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--targets", "direct,envoy"])
    assert exc.value.code == 2
    assert "unknown target(s) envoy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--sessions", "1000,lots"])
    assert "comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--goal-rounds", "0"])
    assert "--goal-rounds must be >= 1" in capsys.readouterr().err


def test_the_generator_refuses_anything_but_loopback() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "loadgen.py"), "load", "--url", "ws://10.0.0.1:80/"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "only targets loopback" in done.stderr


@pytest.mark.timeout(60)
def test_a_real_load_run_against_the_echo_backend(tmp_path: Path) -> None:
    targets = _load("targets")
    from harness.procs import Supervisor

    with Supervisor(tmp_path / "logs") as sup:
        backend = targets.start_backend(sup, "primary")
        done = subprocess.run(
            [sys.executable, str(REPO / "bench" / "loadgen.py"), "load", "--url", f"ws://127.0.0.1:{backend.port}/",
             "--conns", "2", "--size", "64", "--duration", "0.5"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["connections"] == 2
        assert result["count"] > 10
        assert sum(result["histogram"].values()) == result["count"]
        assert result["errors"] == {}
        lines = backend.stats_lines()
        assert lines and max(line["accepted"] for line in lines) == 2


def test_goals_are_judged_from_the_run_and_unmeasured_ones_say_so() -> None:
    _load("balancer_bench")
    report_module = sys.modules["bench_report"]
    report = {
        "load": [{"target": "reference", "size": 64, "conns": 16, "rps_vs_haproxy": 0.8, "cpu_vs_haproxy": 2.5,
                  "p99_vs_haproxy": 1.5}],
        "failover": [
            {"target": "reference", "fault": "sigkill", "clients": 8, "closed": 0, "recovered": 8,
             "gap_ms": {"p50": 5.0, "p99": 9.0, "max": 9.5}},
            {"target": "reference", "fault": "blackhole", "clients": 8, "closed": 0, "recovered": 8,
             "gap_ms": {"p50": 2000.0, "p99": 2150.0, "max": 2150.0}},
        ],
    }  # fmt: skip
    verdicts = {goal: verdict for goal, _, _, verdict in report_module.goals(report, ping_s=1.0)}
    assert verdicts["round trips/s ÷ HAProxy (64 B, 16 conns)"] == "met"
    assert verdicts["proxy CPU per round trip ÷ HAProxy (64 B, 16 conns)"] == "**not met**"
    assert verdicts["p99 RTT ÷ HAProxy (64 B, 16 conns)"] == "met"  # the bound is inclusive
    assert verdicts["failover gap after SIGKILL"] == "met"
    assert verdicts["blackhole noticed and failed over"] == "**not met**"  # 2150 > 1000 + 1000 + 100
    assert verdicts["5000 sessions re-homed"] == "not measured"
    assert verdicts["RSS with 10k idle sessions"] == "not measured"


def test_the_timed_make_test_steps_are_the_makefiles_recipes() -> None:
    bench = _load("balancer_bench")
    recipes = [
        shlex.split(line.strip().replace("$(BIN)/", "").replace("$(PYTEST_ARGS)", ""))
        for line in (REPO / "Makefile").read_text().splitlines()
        if line.startswith("\t$(BIN)/")
    ]
    for step in bench.make_test_steps(Path("/venv/bin")):
        words = [Path(step[0]).name, *step[1:]]
        if "-q" in words:
            # The bench keeps pytest's output short; the rest of the recipe is its durations table.
            words = words[: words.index("-q")]
            assert any(recipe[: len(words)] == words for recipe in recipes), (words, recipes)
        else:
            assert words in recipes, (words, recipes)
