"""bench/cpu_split.py's reading of ``perf stat -x,`` output (the measurement itself needs the targets)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent.parent


def _cpu_split() -> ModuleType:
    bench = str(REPO / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)  # cpu_split imports its sibling ``targets``
    spec = importlib.util.spec_from_file_location("cpu_split", REPO / "bench" / "cpu_split.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_syscall_count_reads_the_counter_line() -> None:
    output = "848994,,raw_syscalls:sys_enter,5323825120,100.00,159.473,K/sec\n"
    assert _cpu_split().syscall_count(output) == 848994


def test_syscall_count_is_none_when_perf_could_not_count() -> None:
    # What perf prints for an event it may not open (no root, a strict perf_event_paranoid).
    output = "<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n"
    assert _cpu_split().syscall_count(output) is None
    assert _cpu_split().syscall_count("") is None
