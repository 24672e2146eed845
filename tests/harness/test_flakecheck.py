"""harness.flakecheck: reading what each certify run left, and the summary it prints."""

from __future__ import annotations

import json
from pathlib import Path

from harness.flakecheck import outcome_of, summary


def _certificate(report: Path, verdict: str, scenarios: list[dict[str, object]]) -> None:
    report.mkdir(parents=True)
    (report / "certificate.json").write_text(json.dumps({"verdict": verdict, "scenarios": scenarios}))


def test_a_certified_run_passes(tmp_path: Path) -> None:
    _certificate(tmp_path / "run-01", "CERTIFIED", [{"name": "kill_primary", "passed": True, "run_dir": "r/01"}])
    outcome = outcome_of(1, tmp_path / "run-01", 0, 12.5)
    assert outcome.passed and outcome.failing == ()
    assert outcome.line(2).startswith("run  1/2: PASS CERTIFIED")


def test_a_rejected_run_names_its_failing_run_directories(tmp_path: Path) -> None:
    _certificate(
        tmp_path / "run-02",
        "REJECTED",
        [
            {"name": "kill_primary", "passed": True, "run_dir": "r/01"},
            {"name": "reconnect_storm", "passed": False, "run_dir": "r/02-reconnect_storm"},
        ],
    )
    outcome = outcome_of(2, tmp_path / "run-02", 1, 30.0)
    assert not outcome.passed
    assert outcome.failing == ("reconnect_storm: r/02-reconnect_storm",)
    assert "reconnect_storm: r/02-reconnect_storm" in outcome.line(2)
    lines = summary([outcome_of(1, tmp_path / "none", 0, 1.0), outcome])
    assert lines[0] == "flake-check: 1 passed, 0 inconclusive, 1 failed of 2 runs"
    assert "    reconnect_storm: r/02-reconnect_storm" in lines


def test_a_run_without_a_certificate_or_past_its_timeout_fails(tmp_path: Path) -> None:
    missing = outcome_of(3, tmp_path / "run-03", 2, 5.0)
    assert not missing.passed and missing.verdict == "no certificate"
    assert "exit 2" in missing.line(3)
    assert outcome_of(4, tmp_path / "run-04", None, 1200.0).verdict == "timed out"


def test_a_run_that_could_not_judge_everything_is_inconclusive_not_failed(tmp_path: Path) -> None:
    _certificate(
        tmp_path / "run-05",
        "inconclusive",
        [
            {"name": "kill_primary", "passed": True, "outcome": "pass", "run_dir": "r/01"},
            {
                "name": "thundering_herd",
                "passed": False,
                "outcome": "inconclusive",
                "reasons": ["check herd_recovered set findings aside: machine too slow"],
                "run_dir": "r/02-thundering_herd",
            },
        ],
    )
    outcome = outcome_of(5, tmp_path / "run-05", 3, 240.0)
    assert not outcome.passed and outcome.only_inconclusive
    assert outcome.line(5).startswith("run  5/5: INCONCLUSIVE inconclusive")
    assert "thundering_herd: check herd_recovered set findings aside: machine too slow" in outcome.line(5)
    lines = summary([outcome])
    assert lines[0] == "flake-check: 0 passed, 1 inconclusive, 0 failed of 1 runs"
