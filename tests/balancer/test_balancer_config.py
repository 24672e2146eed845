"""The JSON contract, the flags, and the one-line exit-2 config errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from balancer_support import (
    REPO,
    child_env,
    client,
    free_port,
    recv_json,
    spawn,
    wait_tcp,
    ws_url,
)

from balancer.config import (
    DEFAULT_MAX_OPENING,
    Address,
    Config,
    ConfigError,
    config_from_args,
    from_dict,
    load_config,
)

EXAMPLE: dict[str, Any] = {
    "listen": "127.0.0.1:40001",
    "admin": "127.0.0.1:40002",
    "backends": [
        {"name": "primary", "url": "ws://127.0.0.1:40011"},
        {"name": "secondary", "url": "ws://127.0.0.1:40012"},
    ],
    "failover": {"max_attempts": 3, "window_s": 60.0, "min_interval_s": 5.0},
    "ping_interval_s": 1.0,
    "ping_timeout_s": 1.0,
}


def test_example_config_from_the_contract(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**EXAMPLE, "some_future_key": {"x": 1}}))
    cfg = load_config(path)
    assert cfg.listen == Address("127.0.0.1", 40001)
    assert cfg.admin == Address("127.0.0.1", 40002)
    assert [b.name for b in cfg.backends] == ["primary", "secondary"]
    assert cfg.failover.max_attempts == 3 and cfg.failover.min_interval_s == 5.0
    assert cfg.ping_interval_s == 1.0 and cfg.close_timeout_s == 1.0


def test_admin_optional_and_defaults() -> None:
    cfg = from_dict({k: v for k, v in EXAMPLE.items() if k not in ("admin", "failover")})
    assert cfg.admin is None
    assert (cfg.failover.max_attempts, cfg.failover.window_s, cfg.failover.min_interval_s) == (
        3,
        60.0,
        5.0,
    )
    assert from_dict({**EXAMPLE, "admin": ":9000"}).admin == Address("127.0.0.1", 9000)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(EXAMPLE))
    cfg = config_from_args(
        [
            str(path),
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "x=ws://h:2/",
            "--max-attempts",
            "7",
            "--min-interval-s",
            "0.5",
            "--ping-interval-s",
            "0.25",
            "--max-size",
            "10",
            "--max-connections",
            "3",
            "--close-timeout-s",
            "0.1",
            "--open-timeout-s",
            "2",
            "--health-interval-s",
            "0.3",
            "--ping-timeout-s",
            "0.4",
            "--window-s",
            "9",
        ]
    )
    assert cfg.listen.port == 1 and [b.name for b in cfg.backends] == ["x"]
    assert cfg.failover.max_attempts == 7 and cfg.failover.window_s == 9.0
    assert cfg.failover.min_interval_s == 0.5
    assert (cfg.ping_interval_s, cfg.ping_timeout_s, cfg.close_timeout_s) == (0.25, 0.4, 0.1)
    assert (cfg.max_size, cfg.max_connections, cfg.open_timeout_s) == (10, 3, 2.0)
    assert cfg.admin == Address("127.0.0.1", 40002), "unflagged keys come from the file"


def test_flags_alone() -> None:
    cfg = config_from_args(["--listen", "127.0.0.1:5", "--backend", "a=ws://127.0.0.1:6"])
    assert cfg.backends[0].url == "ws://127.0.0.1:6" and cfg.admin is None


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"listen": None}, "listen"),
        ({"listen": "nope"}, "listen"),
        ({"listen": "127.0.0.1:99999"}, "listen"),
        ({"backends": []}, "no backends"),
        ({"backends": None}, "backends"),
        ({"backends": [{"name": "a"}]}, "backends[0].url"),
        ({"backends": [{"name": "a", "url": "http://x:1"}]}, "backends[0].url"),
        ({"backends": [{"name": "a", "url": "ws://x:1"}, {"name": "a", "url": "ws://y:1"}]}, "duplicate"),
        ({"failover": {"max_attempts": -1}}, "failover.max_attempts"),
        ({"failover": {"window_s": "60"}}, "failover.window_s"),
        ({"ping_timeout_s": -1}, "ping_timeout_s"),
        ({"max_size": 0}, "max_size"),
        ({"max_connections": -5}, "max_connections"),
        ({"open_timeout_s": 0}, "open_timeout_s: must be positive"),
        ({"ping_interval_s": 10**400}, "ping_interval_s: too large"),
        ({"failover": {"window_s": 10**400}}, "failover.window_s: too large"),
        ({"close_timeout_s": -(10**400)}, "close_timeout_s: must not be negative"),
        ({"max_size": -(10**400)}, "max_size: must not be negative"),
        ({"drain_timeout_s": -1}, "drain_timeout_s: must not be negative"),
        ({"drain_timeout_s": "5"}, "drain_timeout_s"),
        ({"drain_timeout_s": 10**400}, "drain_timeout_s: too large"),
        ({"max_opening": 0}, "max_opening: must be at least 1, got 0"),
        ({"max_opening": -3}, "max_opening: must not be negative"),
        ({"max_opening": "64"}, "max_opening: expected an integer"),
        ({"max_opening": True}, "max_opening: expected an integer"),
        ({"max_opening": 2.5}, "max_opening: expected an integer"),
    ],
)
def test_invalid_fields_name_the_field(change: dict[str, Any], needle: str) -> None:
    raw = {**EXAMPLE, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_drain_timeout_default_key_and_flag() -> None:
    assert from_dict(EXAMPLE).drain_timeout_s == 30.0
    assert from_dict({**EXAMPLE, "drain_timeout_s": 2.5}).drain_timeout_s == 2.5
    assert from_dict({**EXAMPLE, "drain_timeout_s": 0}).drain_timeout_s == 0.0, "0: close at once"
    cfg = config_from_args(["--listen", "127.0.0.1:1", "--backend", "a=ws://127.0.0.1:2", "--drain-timeout-s", "4"])
    assert cfg.drain_timeout_s == 4.0


def test_max_opening_default_key_and_flag() -> None:
    assert from_dict(EXAMPLE).max_opening == DEFAULT_MAX_OPENING
    assert from_dict({**EXAMPLE, "max_opening": 7}).max_opening == 7
    cfg = config_from_args(["--listen", "127.0.0.1:1", "--backend", "a=ws://127.0.0.1:2", "--max-opening", "9"])
    assert cfg.max_opening == 9
    assert cfg.max_connections == Config(listen=cfg.listen, backends=cfg.backends).max_connections, "a separate limit"


def test_send_deadline_is_always_finite() -> None:
    """Keepalive bounds a stalled send; without keepalive, close_timeout_s does."""
    base = {**EXAMPLE, "close_timeout_s": 0.3}
    assert from_dict(base).send_deadline_s == 2.0
    for off in ({"ping_interval_s": 0}, {"ping_timeout_s": 0}):
        assert from_dict({**base, **off}).send_deadline_s == 3.0
    no_keepalive_no_close_wait = {**base, "ping_interval_s": 0, "close_timeout_s": 0}
    assert from_dict(no_keepalive_no_close_wait).send_deadline_s == 1.0, "a floor, not 0"


def run_balancer(args: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "balancer", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=child_env(),
    )


def assert_one_line_exit_2(res: subprocess.CompletedProcess[str], needle: str) -> None:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert needle in lines[0], lines[0]
    assert res.stdout == ""


BAD_FILES = {
    "not_json": ("{listen: oops", "not valid JSON"),
    "not_object": ("[1, 2]", "JSON object"),
    "missing_listen": (json.dumps({"backends": EXAMPLE["backends"]}), "listen"),
    "missing_backends": (json.dumps({"listen": "127.0.0.1:1"}), "backends"),
    "no_backends": (json.dumps({**EXAMPLE, "backends": []}), "no backends"),
    "bad_url": (json.dumps({**EXAMPLE, "backends": [{"name": "a", "url": "ws//nope"}]}), "backends[0].url"),
    "bad_port_url": (json.dumps({**EXAMPLE, "backends": [{"name": "a", "url": "ws://h:x"}]}), "backends[0].url"),
    "negative_limit": (json.dumps({**EXAMPLE, "failover": {"min_interval_s": -1}}), "failover.min_interval_s"),
    "negative_size": (json.dumps({**EXAMPLE, "max_size": -1}), "max_size"),
    "invalid_field": (json.dumps({**EXAMPLE, "ping_interval_s": "fast"}), "ping_interval_s"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_one_line_exit_2(tmp_path: Path, case: str) -> None:
    text, needle = BAD_FILES[case]
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert_one_line_exit_2(run_balancer([str(path)]), needle)


@pytest.mark.parametrize("where", ["ping_interval_s", "failover.window_s"])
def test_huge_integer_one_line_exit_2(tmp_path: Path, where: str) -> None:
    """A 400-digit JSON integer overflows float(); it must be a config error, not a traceback."""
    huge = "1" + "0" * 400
    raw = {**EXAMPLE, "failover": dict(EXAMPLE["failover"])}
    if where == "ping_interval_s":
        raw["ping_interval_s"] = "HUGE"
    else:
        raw["failover"]["window_s"] = "HUGE"
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(raw).replace('"HUGE"', huge))
    assert_one_line_exit_2(run_balancer([str(path)]), f"{where}: too large")


def test_integer_too_long_to_parse_one_line_exit_2(tmp_path: Path) -> None:
    # Past sys.get_int_max_str_digits() json.loads raises a plain ValueError.
    path = tmp_path / "huger.json"
    path.write_text(json.dumps({**EXAMPLE, "max_size": "HUGE"}).replace('"HUGE"', "9" * 5000))
    assert_one_line_exit_2(run_balancer([str(path)]), "not usable JSON")


def test_zero_open_timeout_flag_one_line_exit_2() -> None:
    args = ["--listen", "127.0.0.1:1", "--backend", "a=ws://127.0.0.1:2", "--open-timeout-s", "0"]
    assert_one_line_exit_2(run_balancer(args), "open_timeout_s")


def test_missing_file_and_bad_flags(tmp_path: Path) -> None:
    assert_one_line_exit_2(run_balancer([str(tmp_path / "absent.json")]), "cannot read")
    assert_one_line_exit_2(run_balancer(["--listen", "127.0.0.1:1"]), "backends")
    assert_one_line_exit_2(run_balancer(["--listen", "127.0.0.1:1", "--backend", "nameonly"]), "--backend")
    assert_one_line_exit_2(run_balancer(["--max-size", "big"]), "usage")


@pytest.mark.parametrize("which", ["listen", "admin"])
def test_port_in_use_one_line_exit_2(tmp_path: Path, which: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = free_port()
        ports = {"listen": port, "admin": other} if which == "listen" else {"listen": other, "admin": port}
        path = tmp_path / "c.json"
        path.write_text(
            json.dumps(
                {
                    **EXAMPLE,
                    "listen": f"127.0.0.1:{ports['listen']}",
                    "admin": f"127.0.0.1:{ports['admin']}",
                }
            )
        )
        assert_one_line_exit_2(run_balancer([str(path)]), f"{which} 127.0.0.1:{port}")


async def test_runs_from_flags_alone(echo_backends: Any) -> None:
    backend = await echo_backends("solo")
    listen = free_port()
    proc = spawn(
        [
            sys.executable,
            "-m",
            "balancer",
            "--listen",
            f"127.0.0.1:{listen}",
            "--backend",
            f"solo={ws_url(backend)}",
            "--ping-interval-s",
            "0.5",
        ],
        subprocess.DEVNULL,
        subprocess.DEVNULL,
    )
    try:
        await wait_tcp(listen, 10, proc)
        async with client(f"ws://127.0.0.1:{listen}/flags?only=1") as ws:
            await ws.send("hello")
            reply = await recv_json(ws)
        assert reply == {"server": "solo", "path": "/flags?only=1", "msg": "hello"}
    finally:
        proc.kill()
        proc.wait(timeout=10)
