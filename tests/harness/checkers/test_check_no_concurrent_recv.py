from __future__ import annotations

import pytest
from checker_runs import T0, RunBuilder, empty_status

from harness.checkers import check_no_concurrent_recv
from harness.history import make_run

NEW_MESSAGE = (
    "websockets.exceptions.ConcurrencyError: cannot call recv while another coroutine is already "
    "running recv or recv_streaming"
)
LEGACY_MESSAGE = "RuntimeError: cannot call recv while another coroutine is already waiting for the next message"


def test_healthy_run_passes(rb: RunBuilder) -> None:
    assert check_no_concurrent_recv(rb.healthy().build()).status == "pass"


@pytest.mark.parametrize(
    "line",
    [
        NEW_MESSAGE,
        LEGACY_MESSAGE,
        "relay failed: ConcurrencyError()",
        "Task exception was never retrieved",
        "Traceback (most recent call last):",
    ],
)
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_each_bad_output_line_fails(rb: RunBuilder, line: str, stream: str) -> None:
    rb.healthy()
    if stream == "stdout":
        rb.stdout_lines.append(line)
    else:
        rb.stderr = f"starting\n{line}\n"
    result = check_no_concurrent_recv(rb.build())
    assert result.status == "fail"
    assert any(line.strip() in e.get("text", "") for v in result.violations for e in v.evidence)


def test_traceback_evidence_names_the_exception(rb: RunBuilder) -> None:
    rb.healthy().stderr = (
        "Traceback (most recent call last):\n"
        '  File "balancer/session.py", line 10, in relay\n'
        "    await ws.recv()\n"
        f"{NEW_MESSAGE}\n"
    )
    result = check_no_concurrent_recv(rb.build())
    traceback = next(v for v in result.violations if "traceback" in v.message)
    assert traceback.evidence[0]["exception"] == NEW_MESSAGE
    assert any("concurrent recv" in v.message for v in result.violations)


def test_nonzero_counter_in_a_status_sample_fails(rb: RunBuilder) -> None:
    rb.healthy()
    rb.status_sample(T0 + 2.5, errors={"concurrent_recv": 1})
    result = check_no_concurrent_recv(rb.build())
    assert result.status == "fail"
    assert result.violations[0].evidence[0]["t"] == T0 + 2.5


def test_nonzero_counter_in_final_status_fails(rb: RunBuilder) -> None:
    rb.healthy().meta["final"]["status"] = empty_status(errors={"concurrent_recv": 3})
    result = check_no_concurrent_recv(rb.build())
    assert result.status == "fail"
    assert result.violations[0].evidence[0]["source"] == "final"


def test_nothing_to_judge_is_not_checked() -> None:
    assert check_no_concurrent_recv(make_run()).status == "not_checked"


def test_status_without_the_counter_and_no_output_is_not_checked(rb: RunBuilder) -> None:
    rb.rec(T0, "monitor", "event", "status", status={"sessions": 0})
    rb.meta["final"] = {"status": {"sessions": 0}}
    assert check_no_concurrent_recv(rb.build()).status == "not_checked"


def test_clean_output_alone_passes_and_says_status_was_missing() -> None:
    result = check_no_concurrent_recv(make_run(balancer_stdout='{"event": "listening", "ts": 1.0}\n'))
    assert result.status == "pass"
    assert "no /status" in result.note


def test_status_alone_passes() -> None:
    result = check_no_concurrent_recv(make_run(meta={"final": {"status": empty_status()}}))
    assert result.status == "pass"
