"""A builder for small synthetic runs, so each checker test states only what matters to it.

`rb.healthy()` writes a complete, correct run (clients failing over in place after a nemesis kill,
a restart, a client joining after the heal) that every checker passes; a test then adds or edits
the one thing that must make its checker fail. The `rb` fixture (conftest.py) gives a fresh builder.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from harness.checkers.game_state import expected_state
from harness.history import Run, make_run

T0 = 1_000.0
LIMITS = {"max_attempts": 3, "window_s": 6.0, "min_interval_s": 0.5}
HOP_S = 0.001  # one network hop on loopback


def state(seq: int) -> dict[str, int]:
    expected = expected_state(seq)
    assert expected is not None
    return expected


class RunBuilder:
    def __init__(self) -> None:
        self.meta: dict[str, Any] = {
            "run_id": "synthetic",
            "started": T0,
            "failover": dict(LIMITS),
            "capabilities": {"status": True, "events": True},
            "expect": {"close_codes": [], "failover_deadline_s": 10.0, "recovery_deadline_s": 10.0},
        }
        self.history: list[dict[str, Any]] = []
        self.journals: dict[str, list[dict[str, Any]]] = {}
        self.stdout_lines: list[str] = []
        self.stderr = ""
        self._conn_ids = itertools.count(1)
        self._upstream: dict[tuple[str, Any], tuple[str, str]] = {}
        self.acked: dict[str, int] = {}

    # -- raw records ---------------------------------------------------------------------------

    def rec(self, t: float, process: str, type_: str, f: str, **fields: Any) -> dict[str, Any]:
        record = {"t": t, "process": process, "type": type_, "f": f, **fields}
        self.history.append(record)
        return record

    def journal(self, server: str, t: float, event: str, **fields: Any) -> dict[str, Any]:
        record = {"t": t, "server": server, "event": event, **fields}
        self.journals.setdefault(server, []).append(record)
        return record

    def balancer_event(self, ts: float, event: str, **fields: Any) -> None:
        self.stdout_lines.append(json.dumps({"event": event, "ts": ts, **fields}))

    def status_sample(self, t: float, **overrides: Any) -> dict[str, Any]:
        return self.rec(t, "monitor", "event", "status", status=empty_status(**overrides))

    def fault(self, t: float, kind: str, target: str, fault_id: str, heal_at: float | None = None) -> None:
        fault = {"kind": kind, "target": target, "params": {}}
        self.rec(t, "nemesis", "invoke", "apply", fault=fault, fault_id=fault_id)
        self.rec(t + 0.01, "nemesis", "ok", "apply", fault=fault, fault_id=fault_id)
        if heal_at is not None:
            self.rec(heal_at, "nemesis", "invoke", "heal", fault=fault, fault_id=fault_id)
            self.rec(heal_at + 0.01, "nemesis", "ok", "heal", fault=fault, fault_id=fault_id)

    # -- a client's life -----------------------------------------------------------------------

    def backend_start(self, server: str, t: float) -> None:
        self.journal(server, t, "start", pid=1, port=40011)

    def conn_open(self, client: str, t: float, conn: int = 1) -> None:
        self.rec(t, client, "event", "conn_open", conn=conn)

    def welcome(self, client: str, /, t: float, server: str, conn: int = 1, **fields: Any) -> str:
        """The backend accepts an upstream for this client connection, then the client is welcomed."""
        server_conn = f"{server}-{next(self._conn_ids)}"
        self.journal(server, t - HOP_S, "open", conn=server_conn, client=client, path=f"/play?client={client}")
        welcome_state = fields.pop("state", {"seq": 0, "x": 0, "y": 0})
        self.rec(
            t,
            client,
            "event",
            "welcome",
            conn=conn,
            server=server,
            server_conn=server_conn,
            state=welcome_state,
            **fields,
        )
        self._upstream[(client, conn)] = (server, server_conn)
        return server_conn

    def move(
        self,
        client: str,
        /,
        t: float,
        seq: int,
        conn: int = 1,
        attempt: int = 1,
        latency: float = 0.01,
        ack: bool = True,
        **ack_fields: Any,
    ) -> None:
        self.rec(t, client, "invoke", "move", conn=conn, seq=seq, attempt=attempt)
        server, server_conn = self._upstream[(client, conn)]
        dup = seq <= self.acked.get(client, 0)
        self.journal(
            server, t + latency / 2, "recv", conn=server_conn, client=client, kind="move", seq=seq, applied=not dup
        )
        if not ack:
            return
        fields: dict[str, Any] = {
            "conn": conn,
            "seq": seq,
            "server": server,
            "client": client,
            "dup": dup,
            "state": state(max(seq, self.acked.get(client, 0))),
            "latency_ms": latency * 1000,
        }
        fields.update(ack_fields)
        self.rec(t + latency, client, "ok", "move", **fields)
        self.acked[client] = max(self.acked.get(client, 0), seq)

    def close_upstream(self, client: str, t: float, conn: int = 1, code: int = 1000) -> None:
        server, server_conn = self._upstream[(client, conn)]
        self.journal(server, t, "close", conn=server_conn, client=client, code=code, reason="")

    def conn_close(self, client: str, t: float, conn: int = 1, code: int = 1000, initiator: str = "client") -> None:
        self.rec(t, client, "event", "conn_close", conn=conn, code=code, reason="", initiator=initiator)
        if initiator == "client" and (client, conn) in self._upstream:
            self.close_upstream(client, t + HOP_S, conn)

    def stopped(self, client: str, t: float, hung: bool = False) -> None:
        self.rec(t, client, "event", "stopped", hung=hung)

    def play(self, client: str, start: float, seqs: range, server: str = "primary", conn: int = 1) -> float:
        """conn_open, welcome, then one move every 0.1 s; returns the time of the last ack."""
        self.conn_open(client, start, conn)
        self.welcome(client, start + 0.01, server, conn)
        t = start + 0.1
        for seq in seqs:
            self.move(client, t, seq, conn)
            t += 0.1
        return t

    # -- whole runs ----------------------------------------------------------------------------

    def healthy(self) -> RunBuilder:
        """Two clients play through the primary; at T0+2 it is killed and both fail over in place to
        the secondary. c1 re-sends move 11, which the primary received but never acknowledged. The
        primary restarts at T0+3; after the heal a new client c3 plays through it. Then all stop."""
        self.meta["phases"] = {
            "warmup_end": T0 + 1.0,
            "faults_end": T0 + 3.0,
            "heal_end": T0 + 3.5,
            "deadline_end": T0 + 5.0,
            "quiesce_end": T0 + 6.0,
        }
        self.meta["baseline"] = {"balancer_sockets": 3}
        self.meta["final"] = {
            "status": empty_status(),
            "balancer_sockets": 3,
            "backend_open_connections": {"primary": 0, "secondary": 0},
            "backend_alive": {"primary": True, "secondary": True},
        }
        self.backend_start("primary", T0 - 1)
        self.backend_start("secondary", T0 - 1)
        self.status_sample(T0 + 0.5, sessions=2)
        for session, client in (("s1", "c1"), ("s2", "c2"), ("s3", "c3")):
            self.balancer_event(T0, "session_open", session=session, path=f"/play?client={client}")

        self.play("c1", T0, range(1, 11))  # acks 1..10 by T0+1.01
        self.play("c2", T0, range(1, 11))
        self.move("c1", T0 + 1.99, 11, ack=False)  # reaches the primary just before it dies
        self.fault(T0 + 2.0, "kill", "primary", "f1", heal_at=T0 + 3.0)

        self.balancer_event(T0 + 2.29, "failover_attempt", session="s1", allowed=True)
        self.welcome("c1", T0 + 2.3, "secondary")
        self.rec(T0 + 2.31, "c1", "event", "resume", conn=1, state=state(10), resent=[11])
        self.rec(
            T0 + 2.32, "c1", "event", "reply", conn=1,
            msg={"type": "resumed", "server": "secondary", "client": "c1", "state": state(10)},
        )  # fmt: skip
        self.move("c1", T0 + 2.32, 11, attempt=2)
        self.move("c1", T0 + 2.5, 12)

        self.balancer_event(T0 + 2.39, "failover_attempt", session="s2", allowed=True)
        self.welcome("c2", T0 + 2.4, "secondary")
        self.rec(T0 + 2.41, "c2", "event", "resume", conn=1, state=state(10), resent=[])
        self.move("c2", T0 + 2.5, 11)

        self.backend_start("primary", T0 + 3.0)
        self.move("c1", T0 + 3.6, 13)
        self.move("c2", T0 + 3.6, 12)
        self.play("c3", T0 + 3.7, range(1, 4))

        for client in ("c1", "c2", "c3"):
            self.conn_close(client, T0 + 5.1)
            self.stopped(client, T0 + 5.2)
        self.meta["ended"] = T0 + 6.0
        self.status_sample(T0 + 5.9)
        return self

    def build(self) -> Run:
        stdout = "\n".join(self.stdout_lines) + ("\n" if self.stdout_lines else "")
        return make_run(
            meta=self.meta,
            history=self.history,
            journals=self.journals,
            balancer_stdout=stdout,
            balancer_stderr=self.stderr,
        )

    def records(self, process: str, f: str, type_: str | None = None) -> list[dict[str, Any]]:
        return [
            r for r in self.history if r["process"] == process and r["f"] == f and (type_ is None or r["type"] == type_)
        ]


def empty_status(**overrides: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "sessions": 0,
        "tables": {"active_connections": 0, "connection_states": 0, "reconnect_attempts": 0},
        "backends": [
            {"name": "primary", "connection_count": 0, "healthy": True},
            {"name": "secondary", "connection_count": 0, "healthy": True},
        ],
        "errors": {"concurrent_recv": 0},
    }
    status.update(overrides)
    return status


def write_run_dir(root: Path, rb: RunBuilder, torn: bool = True) -> None:
    """Lays a builder's run out as the runner does: one history file per writer process."""
    (root / "run.json").write_text(json.dumps(rb.meta))
    by_process: dict[str, list[dict[str, Any]]] = {}
    for rec in rb.history:
        by_process.setdefault(rec["process"], []).append(rec)
    for directory, files in (("history", by_process), ("journals", rb.journals)):
        (root / directory).mkdir()
        for name, recs in files.items():
            text = "".join(json.dumps(r) + "\n" for r in recs)
            if torn:
                text += '{"t": 1009.0, "process": "' + name + '", "type": "ev'  # SIGKILLed mid-write
            (root / directory / f"{name}.jsonl").write_text(text)
    (root / "logs").mkdir()
    (root / "logs" / "balancer.stdout").write_text("\n".join(["balancer starting", *rb.stdout_lines]) + "\n")
    (root / "logs" / "balancer.stderr").write_text(rb.stderr)
