"""The recorded history of a run, and the run directory that holds it.

History is the interface between doing and judging: clients, the nemesis and the monitor append
records here while a run happens; checkers read a :class:`Run` afterwards and never touch a socket.
The formats are specified in docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from harness.records import RUN_META_FILE, Record, RecordError, RunMeta, read_json_object

Clock = Callable[[], float]

RUN_META = RUN_META_FILE
HISTORY_DIR = "history"
JOURNALS_DIR = "journals"
LOGS_DIR = "logs"
BALANCER_STDOUT = "balancer.stdout"
BALANCER_STDERR = "balancer.stderr"


def describe_write_failure(path: str | os.PathLike[str], exc: OSError) -> str:
    """Why a file in a run directory could not be written, in words that name a full disk."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"disk full ({exc.strerror})"
    elif exc.errno == errno.EFBIG:
        why = f"file size limit reached ({exc.strerror})"
    else:
        why = exc.strerror or str(exc)
    return f"{why} writing {path}"


def say(stream: TextIO, line: str) -> None:
    """Prints a line for a human to a log; a full disk under the log drops the line, not the process."""
    with contextlib.suppress(OSError):
        print(line, file=stream, flush=True)


class LineFile:
    """One JSON object per line appended to a file, flushed per line; a failed write is remembered.

    The one home for "a full disk never crashes the writer": the history writers and the game
    backend's journal both append through it. The first failed write is kept in :attr:`lost` and
    every later line is dropped (counted in :attr:`dropped`), so the file never has a hole in the
    middle; whoever owns the file reports the loss, and the run is set aside rather than judged
    from a record with holes in it. Not thread-safe: an owner with threads locks around it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")
        #: Why lines were lost (the first failed write), or None while the file is whole.
        self.lost: str | None = None
        #: Lines not written since then, the failing one included.
        self.dropped = 0

    def append(self, obj: Any) -> bool:
        """Writes and flushes one line; False if it was dropped."""
        if self.lost is None:
            try:
                self._file.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
                self._file.flush()
                return True
            except OSError as exc:
                self.lost = describe_write_failure(self.path, exc)
        self.dropped += 1
        return False

    def close(self) -> None:
        if not self._file.closed:
            # After a failed write the buffer still holds the lost line; closing flushes it.
            with contextlib.suppress(OSError):
                self._file.close()


class HistoryWriter:
    """Appends JSON records to one file, one line each, flushed per record (a :class:`LineFile`).

    Flushing per record matters: a writer process may be SIGKILLed by a test, and whatever it
    recorded before that must still be judged.

    A write that fails (a full disk) is never raised to the recording client or nemesis: the
    writer remembers it in :attr:`lost`, drops every later record, and whoever owns the writer
    reports the history as incomplete, so the run is set aside as inconclusive rather than judged
    from a history with holes in it.
    """

    def __init__(self, path: str | os.PathLike[str], process: str, clock: Clock = time.time) -> None:
        self._lines = LineFile(path)
        self.path = self._lines.path
        self.process = process
        self._clock = clock
        # The nemesis records from worker threads (toxiproxy-python is synchronous).
        self._lock = threading.Lock()

    @property
    def lost(self) -> str | None:
        """Why records were lost (the first failed write), or None while the history is whole."""
        return self._lines.lost

    @property
    def dropped(self) -> int:
        """Records not written since then, the failing one included."""
        return self._lines.dropped

    def record(self, type_: str, f: str, *, process: str | None = None, **fields: Any) -> Record:
        rec: Record = {"t": self._clock(), "process": process or self.process, "type": type_, "f": f}
        rec.update(fields)
        with self._lock:
            self._lines.append(rec)
        return rec

    def event(self, f: str, **fields: Any) -> Record:
        return self.record("event", f, **fields)

    def close(self) -> None:
        with self._lock:
            self._lines.close()

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
    _client_histories: dict[str, list[Record]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def run_meta(self) -> RunMeta:
        """run.json, typed; the one reader of it (a malformed section reads as absent)."""
        return RunMeta.from_json(self.meta)

    def by_process(self, process: str) -> list[Record]:
        return [r for r in self.history if r.get("process") == process]

    def client_ids(self) -> list[str]:
        from harness import analysis  # see client_histories

        return analysis.client_ids(self.history)

    def client_histories(self) -> dict[str, list[Record]]:
        """:func:`harness.analysis.client_histories` of this run's history, grouped once: a dozen
        checkers ask for it, and a herd's history holds hundreds of thousands of records. Each call
        gets lists of its own, so a caller that reorders one changes nothing for the next."""
        if self._client_histories is None:
            # Imported here, not at the top: every client swarm and backend imports this module for
            # HistoryWriter at its start, and analysis is a third of that import's CPU.
            from harness import analysis

            self._client_histories = analysis.client_histories(self.history)
        return {client: list(recs) for client, recs in self._client_histories.items()}

    def nemesis(self) -> list[Record]:
        return self.by_process("nemesis")

    def statuses(self) -> list[Record]:
        return [r for r in self.history if r.get("process") == "monitor" and r.get("f") == "status"]


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
    try:
        meta = read_json_object(root / RUN_META)
    except RecordError as exc:
        problems.append(str(exc).replace(str(root / RUN_META), RUN_META))

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
