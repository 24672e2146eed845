"""certify from the command line: exit codes, black-box builds, and the report a person reads.

Bad input to the harness gets a clear message within a bounded time, exit 2, and leaves no process
behind: every run here carries its own owner token, and its survivors are looked for afterwards.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ports import allocate_port
from tests.chaos import cli_support
from tests.selftest.mutants import BLACK_BOX_CMD

pytestmark = pytest.mark.chaos
#: Bad input is refused before any scenario runs: the cluster start-up (or less) at most.
BAD_INPUT_BOUND_S = 60.0


def certify(*args: str, timeout: float = 300) -> cli_support.CertifyResult:
    """certify as a person runs it; afterwards, no process of that run may be alive."""
    token = cli_support.new_token("certify-cli")
    result = cli_support.certify(*args, token=token, timeout=timeout)
    cli_support.assert_no_survivors(token, f"certify {' '.join(args)}")
    return result


def refused_input(*args: str) -> cli_support.CertifyResult:
    """certify with bad input: exit 2 within the bound, a message and no traceback."""
    result = certify(*args, timeout=BAD_INPUT_BOUND_S + 60)
    output = result.output
    assert result.returncode == 2, output[-3000:]
    assert result.elapsed_s < BAD_INPUT_BOUND_S, f"took {result.elapsed_s:.1f} s"
    assert "Traceback" not in output, output[-3000:]
    return result


def test_a_build_that_exits_at_once_is_exit_2_with_its_output(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import sys\nprint('cannot parse config: boom', file=sys.stderr)\nsys.exit(3)\n")
    proc = refused_input("--balancer-cmd", f"python {script} {{config}}", "--report", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "did not start or never became ready" in proc.stdout
    assert "cannot parse config: boom" in proc.stdout  # its last log lines are shown
    assert "Traceback" not in proc.stdout + proc.stderr
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    assert cert["verdict"] == "error"


def test_a_build_that_never_listens_is_exit_2(tmp_path: Path) -> None:
    script = tmp_path / "silent.py"
    script.write_text("import time\ntime.sleep(600)\n")
    proc = refused_input(
        "--balancer-cmd", f"python {script} {{config}}", "--ready-timeout", "3", "--report", str(tmp_path / "r"),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "did not accept within 3.0s" in proc.stdout


def test_a_missing_program_is_exit_2(tmp_path: Path) -> None:
    proc = refused_input("--balancer-cmd", "/nonexistent/balancer {config}", "--report", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "cannot start" in proc.stdout


def test_a_command_without_config_placeholder_is_refused(tmp_path: Path) -> None:
    proc = refused_input("--balancer-cmd", "python -m balancer", "--report", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "{config}" in proc.stdout


def test_an_unknown_scenario_is_refused(tmp_path: Path) -> None:
    proc = refused_input("--scenario", "no_such_thing", "--report", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "unknown scenario(s): no_such_thing" in proc.stdout


def test_black_box_build_is_certified_with_not_checked_cells(tmp_path: Path) -> None:
    report = tmp_path / "r"
    proc = certify(
        "--balancer-cmd", BLACK_BOX_CMD, "--scenario", "kill_primary", "--hypothesis-examples", "0",
        "--report", str(report),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "black-box" in proc.stdout
    cert = json.loads((report / "certificate.json").read_text())
    assert cert["verdict"] == "certified"
    assert cert["build"]["capabilities"] == {"status": False, "events": False, "drain": False}
    results = cert["scenarios"][0]["results"]
    # Judged from the clients' and backends' side, so still checked:
    for invariant in ("single_upstream", "no_crosstalk", "ordered", "clean_failover", "state_continuity"):
        assert results[invariant]["status"] == "pass", (invariant, results[invariant])
    # Whatever needed /status or event lines says so instead of passing silently.
    notes = " ".join(r["note"] for r in results.values())
    assert "status" in notes
    html = (report / "report.html").read_text()
    assert "CERTIFIED" in html
    # The page says it was black-box and lists what was not judged (docs/contract.md section 7).
    assert 'id="black-box"' in html and "no_concurrent_recv" in html.split('id="black-box"')[1].split("</div>")[0]


@contextlib.contextmanager
def plain_http_server(body: bytes) -> Iterator[str]:
    """An HTTP server that answers every GET with 200 and ``body`` as text: not a Toxiproxy."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = allocate_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="plain-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_toxiproxy_url_that_is_not_a_toxiproxy_is_refused(tmp_path: Path) -> None:
    with plain_http_server(b"hello, I am a web page") as url:
        proc = refused_input("--toxiproxy-url", url, "--scenario", "kill_primary", "--report", str(tmp_path / "r"))
    assert f"toxiproxy at {url} answers, but is not a Toxiproxy server" in proc.stdout
    assert "hello, I am a web page" in proc.stdout  # what it did answer
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    assert cert["verdict"] == "error" and "--toxiproxy-url" in cert["error"]


def test_a_report_directory_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    report = tmp_path / "a-file" / "report"
    proc = refused_input("--scenario", "kill_primary", "--report", str(report))
    assert f"cannot write the report directory {report}: Not a directory" in proc.stdout


def test_a_read_only_report_directory_is_refused(tmp_path: Path) -> None:
    # chmod does not stop root, which runs these tests; a read-only mount does.
    with cli_support.tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        proc = refused_input("--scenario", "kill_primary", "--report", str(ro))
    assert f"cannot write the report directory {ro}: Read-only file system" in proc.stdout
