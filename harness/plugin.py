"""The wschaos pytest plugin (registered through the ``pytest11`` entry point).

Fixtures: ``toxiproxy``, ``backends``, ``balancer``, ``cluster``, ``clients``, ``nemesis`` and
``chaos_run``. Options: ``--balancer-cmd``, ``--toxiproxy-url``, ``--chaos-runs-dir``,
``--chaos-replay``. Marker: ``chaos``.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import Cluster, ClusterSpec, ToxiproxyHandle, default_balancer_cmd, default_toxiproxy_url
from harness.faults import Fault
from harness.history import HISTORY_DIR, HistoryWriter
from harness.nemesis import Nemesis
from harness.procs import ManagedProcess, install_signal_handlers, tail
from harness.runner import JudgedRun, ScenarioRunner
from harness.scenario import Scenario, ScenarioError, Step
from harness.swarm import EXIT_HISTORY_LOST, history_lost_reason, swarm_argv
from harness.waiting import wait_until

FAULT_SPACING_S = 2.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wschaos", "wschaos chaos harness")
    group.addoption(
        "--balancer-cmd",
        default=None,
        help="balancer build to test, a command with {config} (default: $WSCHAOS_BALANCER_CMD "
        "or the reference 'python -m balancer {config}')",
    )
    group.addoption(
        "--toxiproxy-url",
        default=None,
        help="use this Toxiproxy server instead of the embedded one (default: $TOXIPROXY_URL)",
    )
    group.addoption("--chaos-runs-dir", default=None, help="keep run directories here (default: pytest's tmp)")
    group.addoption(
        "--chaos-replay", default=None, metavar="FILE", help="replay a saved scenario JSON file as the only test"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: a chaos test that runs real processes under faults")
    install_signal_handlers()


def _spec(config: pytest.Config) -> ClusterSpec:
    return ClusterSpec(
        balancer_cmd=config.getoption("--balancer-cmd") or default_balancer_cmd(),
        toxiproxy_url=config.getoption("--toxiproxy-url") or default_toxiproxy_url(),
    )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-80:]


_run_counter = itertools.count(1)
# Run directories outlive the session with --chaos-runs-dir: name them per session too.
_SESSION = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _runs_dir(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = config.getoption("--chaos-runs-dir")
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.getbasetemp() / "chaos-runs"


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A fresh cluster (embedded Toxiproxy, two game backends, the balancer build) for one test."""
    c = Cluster(tmp_path / "cluster", _spec(request.config))
    c.start()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def toxiproxy(cluster: Cluster) -> ToxiproxyHandle:
    assert cluster.toxiproxy is not None
    return cluster.toxiproxy


@pytest.fixture
def backends(cluster: Cluster) -> dict[str, ManagedProcess]:
    return {name: cluster.process(name) for name in ("primary", "secondary")}


@pytest.fixture
def balancer(cluster: Cluster) -> ManagedProcess:
    return cluster.balancer


class HistoryLost(AssertionError):
    """A client swarm's history lost records (a full disk): no chaos test may pass on it."""


class Swarm:
    """A running client swarm process; its history lands in ``history_dir``."""

    def __init__(self, proc: ManagedProcess, history_dir: Path) -> None:
        self.proc = proc
        self.history_dir = history_dir
        self._checked = False

    def stop(self) -> int | None:
        """Stops the swarm and returns its exit code; raises HistoryLost if its history has holes."""
        code = self.proc.terminate(timeout=20.0)
        self.check_history()
        return code

    def check_history(self) -> None:
        """Raises HistoryLost (once) if the swarm exited EXIT_HISTORY_LOST."""
        if self._checked or self.proc.poll() != EXIT_HISTORY_LOST:
            return
        self._checked = True
        why = history_lost_reason(tail(self.proc.stderr_path, 20))
        raise HistoryLost(
            f"HISTORY LOST: client swarm {self.proc.name} could not record its whole history, so the "
            f"test cannot be judged from it: {why}"
        )


@pytest.fixture
def clients(cluster: Cluster, tmp_path: Path) -> Iterator[Callable[..., Swarm]]:
    """Starts game clients through the cluster: ``clients(4, rate_hz=10)``; waits for READY.

    A swarm whose history lost records fails the test (``Swarm.stop``) or, if the test never
    stopped it, errors it at teardown: a test must never pass on a history with holes in it."""
    counter = itertools.count()
    started: list[Swarm] = []

    def start(n: int, *, rate_hz: float = 10.0, prefix: str = "c", ready_timeout: float = 15.0) -> Swarm:
        hist = tmp_path / HISTORY_DIR
        name = f"swarm-{prefix}-{next(counter)}"
        argv = swarm_argv(
            f"{cluster.lb_url}/play",
            n,
            history_dir=hist,
            prefix=prefix,
            rate_hz=rate_hz,
            id_offset=cluster.client_id_offset(n),
            ready_timeout_s=ready_timeout,
        )
        proc = cluster.supervisor.spawn(name, argv, wait=False)
        started.append(Swarm(proc, hist))

        def ready() -> bool:
            out = proc.stdout_path.read_text(errors="replace") if proc.stdout_path.exists() else ""
            if "NOT READY" in out or not proc.running:
                raise AssertionError(f"client swarm did not get ready: {out[-300:]}")
            return "READY" in out

        wait_until(ready, timeout=ready_timeout + 5, what="client swarm READY")
        return started[-1]

    yield start
    for swarm in started:
        # Stopped here, before the cluster's teardown kills it, so that its exit code is its own.
        swarm.proc.terminate(timeout=20.0)
    for swarm in started:
        swarm.check_history()


@pytest.fixture
def nemesis(cluster: Cluster, tmp_path: Path) -> Iterator[Nemesis]:
    writer = HistoryWriter(tmp_path / HISTORY_DIR / "nemesis.jsonl", "nemesis")
    n = Nemesis(cluster, writer)
    try:
        yield n
    finally:
        n.heal_all()
        writer.close()


def scenario_from(
    faults: Scenario | Sequence[Fault | Step] | None = None, *, name: str = "adhoc", **overrides: Any
) -> Scenario:
    """A scenario from a list of faults (applied FAULT_SPACING_S apart, healed at the heal phase)."""
    if isinstance(faults, Scenario):
        return faults.with_(**overrides) if overrides else faults
    steps: list[Step] = []
    for i, item in enumerate(faults or ()):
        steps.append(item if isinstance(item, Step) else Step(at_s=i * FAULT_SPACING_S, fault=item))
    return Scenario(name=name, steps=tuple(steps), **overrides)


@pytest.fixture
def chaos_run(
    cluster: Cluster, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., JudgedRun]:
    """Runs faults (or a whole Scenario) against the cluster and returns the judged run."""
    runner = ScenarioRunner(cluster)
    root = _runs_dir(request.config, tmp_path_factory)

    def run(faults: Scenario | Sequence[Fault | Step] | None = None, **overrides: Any) -> JudgedRun:
        overrides.setdefault("name", _safe(request.node.name))
        scenario = scenario_from(faults, **overrides)
        run_dir = root / f"{_SESSION}-{next(_run_counter)}-{_safe(request.node.name)}"
        judged = runner.run(scenario, run_dir)
        request.node.stash.setdefault(_RUNS_KEY, []).append(judged)
        return judged

    return run


_RUNS_KEY = pytest.StashKey[list[JudgedRun]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    runs = item.stash.get(_RUNS_KEY, [])
    if report.when == "call" and report.failed and runs:
        report.sections.append(("wschaos runs", "\n\n".join(r.summary() for r in runs)))
    return report


# -- --chaos-replay ---------------------------------------------------------------------------
class ReplayItem(pytest.Item):
    def __init__(self, *, scenario_path: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario_path = scenario_path

    def runtest(self) -> None:
        scenario = Scenario.load(self.scenario_path)
        config = self.config
        root = Path(config.getoption("--chaos-runs-dir") or "runs")
        base = root / f"replay-{_safe(scenario.name)}-{_SESSION}"
        cluster = Cluster(base / "cluster", _spec(config))
        with cluster:
            judged = ScenarioRunner(cluster).run(scenario, base / "run")
        print(judged.summary())
        judged.assert_ok()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, AssertionError | ScenarioError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.scenario_path, 0, f"chaos replay of {self.scenario_path}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    replay = config.getoption("--chaos-replay")
    if not replay:
        return
    path = Path(replay)
    if not path.is_file():
        raise pytest.UsageError(f"--chaos-replay: no such file: {path}")
    try:
        Scenario.load(path)
    except ScenarioError as exc:
        raise pytest.UsageError(f"--chaos-replay: {exc}") from None
    config.hook.pytest_deselected(items=list(items))
    items[:] = [ReplayItem.from_parent(session, name=f"replay[{path.name}]", scenario_path=path)]
