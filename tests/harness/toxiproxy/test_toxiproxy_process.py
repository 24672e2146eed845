"""``python -m harness.toxiproxy`` as the harness runs it: a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from toxiproxy_support import Upstream, connect, is_refused, port_of, read_to_eof

ROOT = Path(__file__).resolve().parents[3]
DEADLINE = 10.0


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.toxiproxy", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ready_line(proc: subprocess.Popen[str]) -> str:
    """First stdout line, or fail after the deadline (a hung child is killed)."""
    timer = threading.Timer(DEADLINE, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        return proc.stdout.readline()
    finally:
        timer.cancel()


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = spawn("--host", "127.0.0.1", "--port", "0")
    try:
        line = ready_line(proc)
        assert line.startswith("toxiproxy listening on 127.0.0.1:"), line
        yield proc, int(line.rsplit(":", 1)[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=DEADLINE)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_subprocess_serves_and_exits_cleanly_on_signal(
    server: tuple[subprocess.Popen[str], int], echo: Upstream, signum: int
) -> None:
    proc, api_port = server
    base = f"http://127.0.0.1:{api_port}"
    reply = requests.post(
        f"{base}/proxies", timeout=DEADLINE, json={"name": "e", "listen": "127.0.0.1:0", "upstream": echo.address}
    )
    assert reply.status_code == 201
    port = port_of(reply.json()["listen"])
    with connect(port) as sock:
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        proc.send_signal(signum)
        assert proc.wait(DEADLINE) == 0
        # Every connection and listener is closed on exit.
        assert read_to_eof(sock) == b""
    assert is_refused(port) and is_refused(api_port)
    _, stderr = proc.communicate(timeout=DEADLINE)
    assert "Traceback" not in stderr


def test_bad_flags_exit_2_with_one_line() -> None:
    for args in (["--bogus"], ["--port", "99999"], ["--port", "x"], ["extra"]):
        result = subprocess.run(
            [sys.executable, "-m", "harness.toxiproxy", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert result.returncode == 2, args
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("toxiproxy: error: ")


def test_port_in_use_exits_1_with_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "harness.toxiproxy", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_go_style_flags_version_and_config(tmp_path: Path, echo: Upstream) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness.toxiproxy", "-version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip()
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "cfg", "listen": "127.0.0.1:0", "upstream": echo.address}]))
    proc = spawn("-host", "127.0.0.1", "-port", "0", "-config", os.fspath(config))
    try:
        line = ready_line(proc)
        api_port = int(line.rsplit(":", 1)[1])
        proxies = requests.get(f"http://127.0.0.1:{api_port}/proxies", timeout=DEADLINE).json()
        assert list(proxies) == ["cfg"] and proxies["cfg"]["enabled"] is True
        proc.terminate()
        assert proc.wait(DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=DEADLINE)
