"""The recorded history of a run, and the run directory that holds it.

History is the interface between doing and judging: clients, the nemesis and the monitor append
records here while a run happens; checkers read a :class:`Run` afterwards and never touch a socket.
The formats are specified in docs/architecture.md.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

Record = dict[str, Any]
Clock = Callable[[], float]

RUN_META = "run.json"
HISTORY_DIR = "history"
JOURNALS_DIR = "journals"
LOGS_DIR = "logs"
BALANCER_STDOUT = "balancer.stdout"
BALANCER_STDERR = "balancer.stderr"


class HistoryWriter:
    """Appends JSON records to one file, one line each, flushed per record.

    Flushing per record matters: a writer process may be SIGKILLed by a test, and whatever it
    recorded before that must still be judged.
    """

    def __init__(self, path: str | os.PathLike[str], process: str, clock: Clock = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.process = process
        self._clock = clock
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")
        # The nemesis records from worker threads (toxiproxy-python is synchronous).
        self._lock = threading.Lock()

    def record(self, type_: str, f: str, *, process: str | None = None, **fields: Any) -> Record:
        rec: Record = {"t": self._clock(), "process": process or self.process, "type": type_, "f": f}
        rec.update(fields)
        line = json.dumps(rec, separators=(",", ":"), default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
        return rec

    def event(self, f: str, **fields: Any) -> Record:
        return self.record("event", f, **fields)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike[str]) -> tuple[list[Record], list[str]]:
    """Reads a JSONL file. Returns the records and a description of every unreadable line.

    A process killed mid-write leaves a torn last line; that is reported, not raised.
    """
    records: list[Record] = []
    problems: list[str] = []
    p = Path(path)
    if not p.exists():
        return records, problems
    with open(p, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{p.name}:{lineno}: not JSON ({exc.msg})")
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                problems.append(f"{p.name}:{lineno}: not a JSON object")
    return records, problems


def _sort_key_t(rec: Record) -> float:
    t = rec.get("t", rec.get("ts"))
    return float(t) if isinstance(t, int | float) else float("inf")


@dataclass
class Run:
    """Everything recorded about one run, loaded into memory. Pure data."""

    path: Path | None
    meta: Record
    history: list[Record]
    journals: dict[str, list[Record]]
    balancer_events: list[Record]
    balancer_stdout: str
    balancer_stderr: str
    problems: list[str] = field(default_factory=list)

    # Convenience views; checkers should not need to re-parse anything.
    def by_process(self, process: str) -> list[Record]:
        return [r for r in self.history if r.get("process") == process]

    def client_ids(self) -> list[str]:
        ids = {str(r["process"]) for r in self.history if r.get("process") not in ("nemesis", "monitor", None)}
        return sorted(ids)

    def nemesis(self) -> list[Record]:
        return self.by_process("nemesis")

    def statuses(self) -> list[Record]:
        return [r for r in self.history if r.get("process") == "monitor" and r.get("f") == "status"]

    @property
    def failover(self) -> Record:
        return dict(self.meta.get("failover") or {})

    @property
    def capabilities(self) -> Record:
        return dict(self.meta.get("capabilities") or {})

    @property
    def expect(self) -> Record:
        return dict(self.meta.get("expect") or {})

    @property
    def phases(self) -> Record:
        return dict(self.meta.get("phases") or {})


def parse_event_lines(text: str) -> list[Record]:
    """Extracts the contract's JSON event lines from a balancer's stdout; other lines are skipped."""
    events: list[Record] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "event" in obj:
            events.append(obj)
    return events


def load_run(path: str | os.PathLike[str]) -> Run:
    """Loads a run directory written by the runner (or by hand, for checker tests)."""
    root = Path(path)
    problems: list[str] = []
    meta: Record = {}
    meta_path = root / RUN_META
    if meta_path.exists():
        try:
            loaded = json.loads(meta_path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                meta = loaded
            else:
                problems.append(f"{RUN_META}: not a JSON object")
        except json.JSONDecodeError as exc:
            problems.append(f"{RUN_META}: not JSON ({exc.msg})")
    else:
        problems.append(f"{RUN_META}: missing")

    history: list[Record] = []
    hdir = root / HISTORY_DIR
    if hdir.is_dir():
        for f in sorted(hdir.glob("*.jsonl")):
            recs, probs = read_jsonl(f)
            history.extend(recs)
            problems.extend(probs)
    history.sort(key=_sort_key_t)

    journals: dict[str, list[Record]] = {}
    jdir = root / JOURNALS_DIR
    if jdir.is_dir():
        for f in sorted(jdir.glob("*.jsonl")):
            recs, probs = read_jsonl(f)
            recs.sort(key=_sort_key_t)
            journals[f.stem] = recs
            problems.extend(probs)

    def _read(name: str) -> str:
        p = root / LOGS_DIR / name
        return p.read_text(encoding="utf-8", errors="replace") if p.exists() else ""

    stdout = _read(BALANCER_STDOUT)
    stderr = _read(BALANCER_STDERR)
    return Run(
        path=root,
        meta=meta,
        history=history,
        journals=journals,
        balancer_events=parse_event_lines(stdout),
        balancer_stdout=stdout,
        balancer_stderr=stderr,
        problems=problems,
    )


def make_run(
    *,
    meta: Record | None = None,
    history: Iterable[Record] = (),
    journals: dict[str, list[Record]] | None = None,
    balancer_stdout: str = "",
    balancer_stderr: str = "",
) -> Run:
    """Builds a Run in memory: the way checker unit tests make small synthetic runs."""
    hist = sorted(history, key=_sort_key_t)
    return Run(
        path=None,
        meta=dict(meta or {}),
        history=hist,
        journals={k: sorted(v, key=_sort_key_t) for k, v in (journals or {}).items()},
        balancer_events=parse_event_lines(balancer_stdout),
        balancer_stdout=balancer_stdout,
        balancer_stderr=balancer_stderr,
    )


def write_run_meta(root: str | os.PathLike[str], meta: Record) -> None:
    p = Path(root) / RUN_META
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, p)


def failover_gaps_ms(client_records: Iterable[Record]) -> list[float]:
    """One client's failover gaps: milliseconds from its last ack before a server transition to
    its first ack after it.

    A transition is a ``welcome`` from a different server than the client's previous one (inside
    one connection or across a reconnect). Several transitions with no ack in between (a flapping
    primary) are one gap: what the player saw is one stall. A transition never followed by an ack
    has no gap to measure (the liveness checkers judge that), and neither does one before the
    client's first ack.
    """
    gaps: list[float] = []
    last_server: str | None = None
    last_ack: float | None = None
    pending = False
    for rec in client_records:
        t = rec.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float):
            continue
        if rec.get("type") == "event" and rec.get("f") == "welcome":
            server = str(rec.get("server"))
            if last_server is not None and server != last_server and last_ack is not None:
                pending = True
            last_server = server
        elif rec.get("type") == "ok" and rec.get("f") == "move":
            if pending and last_ack is not None:
                gaps.append((t - last_ack) * 1000.0)
                pending = False
            last_ack = float(t)
    return gaps


def iter_client_records(run: Run, client: str) -> Iterator[Record]:
    return (r for r in run.history if r.get("process") == client)
