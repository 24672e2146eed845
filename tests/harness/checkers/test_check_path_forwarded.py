from __future__ import annotations

from typing import Any

from harness.checkers import check_path_forwarded
from harness.history import make_run

T0 = 1_700_000_000.0


def run(backend_path: str, client_path: str | None = "/play?client=c1") -> Any:
    history = [{"t": T0, "process": "c1", "type": "event", "f": "conn_open", "conn": 1, "path": client_path}]
    journals = {"primary": [{"t": T0 + 0.01, "event": "open", "conn": "p-1", "client": "c1", "path": backend_path}]}
    return make_run(history=history, journals=journals)


def test_the_requested_path_passes() -> None:
    assert check_path_forwarded(run("/play?client=c1")).status == "pass"


def test_a_dropped_path_fails() -> None:
    result = check_path_forwarded(run("/?client=c1"))
    assert result.status == "fail"
    assert "got path '/?client=c1' for client c1, which asked for '/play?client=c1'" in result.violations[0].message


def test_clients_that_recorded_no_path_are_not_judged() -> None:
    assert check_path_forwarded(run("/?client=c1", client_path=None)).status == "not_checked"


def test_probe_paths_count_as_requested() -> None:
    history = [{"t": T0, "process": "probe", "type": "event", "f": "connect_attempt", "path": "/play?client=p-1"}]
    journals = {"secondary": [{"t": T0, "event": "open", "conn": "s-1", "client": "p-1", "path": "/play?client=p-1"}]}
    assert check_path_forwarded(make_run(history=history, journals=journals)).status == "pass"
