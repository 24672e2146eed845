"""Limit probes: short, scripted client sessions that drive a build to the edge of a configured
limit and record what it did on both sides of it.

The game workload never opens more connections than it has clients, never sends a large message
and never sees a backend end a session, so three contract rules need a workload of their own:

- ``max_connections``: open connections one at a time, each held, until one is refused (HTTP 503)
  or ``max_connections + 1`` of our own were admitted;
- ``max_size``: one message of exactly ``max_size`` bytes (it must be relayed), then one of
  ``max_size + 1`` (the build must close with 1009);
- ``close_codes``: sessions whose backend ends them with 1000 and with an application code
  (the backend does that when asked by the ``end_with`` query parameter); the client must get
  that code.

Probes only act and record (process ``probe`` in the history); ``harness.checkers.edges`` judges.
Every wait has a bound, so a build that hangs costs seconds, not the run.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from harness.backend import END_WITH_PARAM
from harness.history import HistoryWriter

if TYPE_CHECKING:  # harness.scenario imports this module for PROBE_KINDS
    from harness.scenario import Limits

PROBE_KINDS = ("max_connections", "max_size", "close_codes")
PROBE_PROCESS = "probe"
#: A normal close and an application code: both must reach the client unchanged (contract §4).
PROBED_CLOSE_CODES = (1000, 4321)
STEP_TIMEOUT_S = 3.0
#: The most a whole probe may take; far above what a correct build needs.
PROBE_TIMEOUT_S = 30.0


def probe_path(client_id: str, **extra: str) -> str:
    return "/play?" + urlencode({"client": client_id, **extra})


class _Prober:
    def __init__(self, base_url: str, id_prefix: str, history: HistoryWriter) -> None:
        self.base_url = base_url.rstrip("/")
        self.id_prefix = id_prefix
        self.history = history
        self.serial = 0

    def rec(self, f: str, **fields: Any) -> None:
        self.history.record("event", f, process=PROBE_PROCESS, **fields)

    def next_path(self, **extra: str) -> str:
        self.serial += 1
        return probe_path(f"{self.id_prefix}-{self.serial}", **extra)

    async def open(self, path: str) -> ClientConnection:
        # No compression: a message's size on the wire is then the size the build must judge.
        return await connect(
            self.base_url + path, proxy=None, open_timeout=STEP_TIMEOUT_S, close_timeout=1.0, compression=None
        )

    @staticmethod
    async def next_frame(ws: ClientConnection) -> str | bytes | None:
        """The next frame, or None when the connection closed or nothing came in time."""
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                return await ws.recv()
        except (ConnectionClosed, TimeoutError):
            return None

    @staticmethod
    def closed_fields(ws: ClientConnection) -> dict[str, Any]:
        return {"code": ws.close_code, "reason": ws.close_reason or ""}

    # -- max_connections ------------------------------------------------------------------------
    async def max_connections(self, limit: int) -> None:
        held: list[tuple[int, ClientConnection]] = []
        try:
            for slot in range(1, limit + 2):
                path = self.next_path()
                started = self.history.record("event", "connect_attempt", process=PROBE_PROCESS, slot=slot, path=path)
                try:
                    ws = await self.open(path)
                except InvalidStatus as exc:
                    self.rec("connect_refused", slot=slot, started=started["t"], status=exc.response.status_code)
                    break
                except (OSError, TimeoutError, WebSocketException) as exc:
                    self.rec("connect_failed", slot=slot, started=started["t"], error=f"{type(exc).__name__}: {exc}")
                    break
                held.append((slot, ws))
                welcomed = await self.next_frame(ws) is not None
                self.rec("connect_admitted", slot=slot, started=started["t"], welcomed=welcomed, limit=limit)
        finally:
            for slot, ws in held:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STEP_TIMEOUT_S):
                        await ws.close()
                self.rec("connect_released", slot=slot)

    # -- max_size -------------------------------------------------------------------------------
    async def max_size(self, limit: int) -> None:
        path = self.next_path()
        try:
            ws = await self.open(path)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.rec("message_probe_failed", path=path, error=f"{type(exc).__name__}: {exc}")
            return
        try:
            if await self.next_frame(ws) is None:
                self.rec("message_probe_failed", path=path, error="no welcome", **self.closed_fields(ws))
                return
            for size in (limit, limit + 1):
                try:
                    await ws.send("x" * size)
                except ConnectionClosed:
                    self.rec("message_sent", size=size, limit=limit, outcome="closed", **self.closed_fields(ws))
                    return
                reply = await self.next_frame(ws)
                if reply is not None:
                    self.rec("message_sent", size=size, limit=limit, outcome="relayed")
                elif ws.close_code is not None:
                    self.rec("message_sent", size=size, limit=limit, outcome="closed", **self.closed_fields(ws))
                    return
                else:
                    self.rec("message_sent", size=size, limit=limit, outcome="no_reply")
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    await ws.close()

    # -- close codes ----------------------------------------------------------------------------
    async def close_codes(self) -> None:
        for code in PROBED_CLOSE_CODES:
            path = self.next_path(**{END_WITH_PARAM: str(code)})
            try:
                ws = await self.open(path)
            except (OSError, TimeoutError, WebSocketException) as exc:
                error = f"{type(exc).__name__}: {exc}"
                self.rec("close_probe", expected=code, path=path, outcome="failed", error=error)
                continue
            # The backend closes after its welcome; a build that fails over instead may take a
            # few refused attempts to give up, hence the longer bound.
            try:
                async with asyncio.timeout(3 * STEP_TIMEOUT_S):
                    while True:
                        await ws.recv()
            except ConnectionClosed:
                self.rec("close_probe", expected=code, path=path, outcome="closed", **self.closed_fields(ws))
            except TimeoutError:
                self.rec("close_probe", expected=code, path=path, outcome="still_open")
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STEP_TIMEOUT_S):
                        await ws.close()


async def _run(kinds: tuple[str, ...], base_url: str, id_prefix: str, history: HistoryWriter, limits: Limits) -> None:
    prober = _Prober(base_url, id_prefix, history)
    for kind in kinds:
        if kind == "max_connections":
            await prober.max_connections(limits.max_connections)
        elif kind == "max_size":
            await prober.max_size(limits.max_size)
        elif kind == "close_codes":
            await prober.close_codes()
        else:
            raise ValueError(f"unknown probe {kind!r} (known: {', '.join(PROBE_KINDS)})")


def run_probes(
    kinds: tuple[str, ...], base_url: str, id_prefix: str, history: HistoryWriter, limits: Limits
) -> list[str]:
    """Runs the probes in order against the build at ``base_url``; returns notes for the run."""

    async def bounded() -> None:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await _run(kinds, base_url, id_prefix, history, limits)

    try:
        asyncio.run(bounded())
    except TimeoutError:
        return [f"limit probes {', '.join(kinds)} did not finish within {PROBE_TIMEOUT_S:g} s"]
    return []
