"""The process supervisor: every backend, balancer, proxy and client swarm is a real process.

Each child runs in its own process group (so a balancer build that is a shell wrapper is killed
whole), logs to files in the run directory, and is reaped on every exit path:

- normal teardown (``Supervisor.close``);
- an exception or a failing test (fixtures call ``close`` in their finalizers);
- SIGINT / SIGTERM to pytest or to ``python -m harness`` (``install_signal_handlers`` turns SIGTERM
  into :class:`Interrupted`, a KeyboardInterrupt, so the same finalizers run, and ``atexit`` closes
  whatever is left);
- the parent being SIGKILLed: children started from the main thread carry PR_SET_PDEATHSIG
  (set by util-linux's ``setpriv``, which then execs the command); those started from another
  thread (certify's lanes) are killed by the reaper (:mod:`harness.reaper`).

Every child carries ``WSCHAOS_OWNER`` in its environment, which is how :func:`owned_processes`
(and the orphan tests) find survivors.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from harness.waiting import wait_until

OWNER_ENV = "WSCHAOS_OWNER"
#: One token per Python process that supervises; children inherit it, survivors are found by it.
OWNER_TOKEN = os.environ.get(OWNER_ENV) or uuid.uuid4().hex
REAP_ENV = "WSCHAOS_REAP"
#: This process's own (never inherited): its reaper (harness.reaper) kills exactly its children.
REAP_TOKEN = uuid.uuid4().hex


class ProcessFailed(RuntimeError):
    """A child exited early or never became ready. The message carries its last log lines."""


@dataclass(frozen=True)
class ReadyCheck:
    """A child is ready when this address accepts TCP connections."""

    host: str
    port: int


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def tcp_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def expand_command(template: str | Sequence[str], **values: str) -> list[str]:
    """Turns a command template into argv, filling ``{config}``-style placeholders.

    A template's ``python``/``python3`` program and ``{python}`` mean the interpreter running the
    harness, so ``python -m balancer {config}`` works from a venv that is not activated.
    """
    argv = shlex.split(template) if isinstance(template, str) else list(template)
    if not argv:
        raise ValueError("empty command")
    values = {"python": sys.executable, **values}
    out: list[str] = []
    for token in argv:
        for key, val in values.items():
            token = token.replace("{" + key + "}", val)
        out.append(token)
    if out[0] in ("python", "python3"):
        out[0] = sys.executable
    return out


# util-linux's setpriv sets PR_SET_PDEATHSIG and then execs the real command, so no Python
# runs between fork and exec (preexec_fn is unsafe while other threads run, and the status
# monitor is a thread). Debian ships it in util-linux, which is essential.
SETPRIV = shutil.which("setpriv")


#: Open files per client in the process that needs the most: the embedded Toxiproxy holds both
#: sockets of a client's lb link and of its upstream's backend link.
FILES_PER_CLIENT = 4
#: Files a harness process or the build holds besides its clients' sockets.
FILES_BASE = 200


def raise_open_files_limit() -> int:
    """Raises this process's soft RLIMIT_NOFILE to its hard limit (children inherit it: the
    supervisor's processes and the build); returns the soft limit now in force."""
    import resource  # POSIX only, like the rest of this module's process handling

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_files_needed(clients: int) -> int:
    """About how many files the busiest process of a cluster needs for ``clients`` clients."""
    return FILES_BASE + FILES_PER_CLIENT * clients


def _with_pdeathsig(argv: list[str]) -> list[str]:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits, so only use it from the main
    # thread; other spawns are reaped by close()/atexit, and by the reaper if this process dies.
    if SETPRIV is None or threading.current_thread() is not threading.main_thread():
        ensure_reaper()
        return argv
    return [SETPRIV, "--pdeathsig", "KILL", "--", *argv]


_reaper_lock = threading.Lock()
#: The reaper and the write end of its pipe, held (never closed) for as long as this process lives.
_reaper: tuple[subprocess.Popen[bytes], int] | None = None


def ensure_reaper() -> None:
    """Starts this process's reaper (harness.reaper) unless it runs already."""
    global _reaper
    with _reaper_lock:
        if _reaper is not None:
            if _reaper[0].poll() is None:
                return
            os.close(_reaper[1])  # the old reaper is gone: nothing reads that pipe any more
        read_fd, write_fd = os.pipe()  # not inheritable: no later child holds the write end open
        env = {k: v for k, v in os.environ.items() if k != REAP_ENV}
        env[OWNER_ENV] = OWNER_TOKEN  # found by the same token as the rest of the run
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", "harness.reaper", "--token", REAP_TOKEN, "--fd", str(read_fd)],
                pass_fds=(read_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=str(Path(__file__).resolve().parents[1]),
                start_new_session=True,
            )
        except OSError:
            os.close(write_fd)
            return  # no reaper: close()/atexit still reap on every exit but SIGKILL
        finally:
            os.close(read_fd)
        _reaper = (popen, write_fd)


class ManagedProcess:
    """One supervised child. Not thread-safe; the supervisor owns it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        ready: ReadyCheck | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdout_name: str | None = None,
        stderr_name: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready = ready
        self.env = env
        self.cwd = cwd
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / (stdout_name or f"{name}.stdout")
        self.stderr_path = log_dir / (stderr_name or f"{name}.stderr")
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0
        #: Where this start's output begins in ``stdout_path``: the logs are appended to, so what
        #: is before it was written by an earlier start, or an earlier run into the same directory.
        self.stdout_start = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        env = dict(os.environ if self.env is None else self.env)
        env[OWNER_ENV] = OWNER_TOKEN
        env[REAP_ENV] = REAP_TOKEN
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Children talk only to loopback; a proxy variable must never divert them.
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ws_proxy", "wss_proxy"):
            env.pop(var, None)
        program = self.argv[0]
        if shutil.which(program) is None:
            why = "not executable" if os.path.exists(program) else "no such program"
            raise ProcessFailed(f"{self.name}: cannot start {shlex.join(self.argv)}: {program}: {why}")
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.stdout_start = out.seek(0, os.SEEK_END)
            try:
                self.popen = subprocess.Popen(
                    _with_pdeathsig(self.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=env,
                    cwd=self.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcessFailed(
                    f"{self.name}: cannot start {shlex.join(self.argv)}: {exc.strerror or exc}"
                ) from exc
        self.paused = False
        self.starts += 1
        _registry.add(self)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Waits for TCP accept on the ready address; fails fast if the child exits."""
        if self.ready is None:
            return
        ready = self.ready

        def accepting() -> bool:
            code = self.poll()
            if code is not None:
                raise ProcessFailed(self._failure(f"exited with code {code} before it was ready"))
            return tcp_accepts(ready.host, ready.port)

        try:
            wait_until(accepting, timeout=timeout, what=f"{self.name} to accept")
        except TimeoutError:
            raise ProcessFailed(
                self._failure(f"not ready: {ready.host}:{ready.port} did not accept within {timeout:.1f}s")
            ) from None

    def _failure(self, what: str) -> str:
        parts = [f"{self.name} ({shlex.join(self.argv)}) {what}"]
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            text = tail(path)
            if text:
                parts.append(f"--- last lines of {label} ({path}):\n{text}")
        return "\n".join(parts)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def poll(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def _signal_group(self, sig: signal.Signals) -> bool:
        if self.popen is None or self.popen.poll() is not None:
            return False
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            return False
        return True

    # -- faults ----------------------------------------------------------------------------
    def kill(self, timeout: float = 5.0) -> int | None:
        """SIGKILL the whole group and reap it."""
        self._signal_group(signal.SIGKILL)
        return self._reap(timeout)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait for a graceful exit; SIGKILL if it does not come within ``timeout``."""
        if self.paused:
            self.resume()
        if self._signal_group(signal.SIGTERM):
            try:
                assert self.popen is not None
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def hangup(self) -> bool:
        """SIGHUP (a drain, for a build that declares it); whether a running process was signalled."""
        return self._signal_group(signal.SIGHUP)

    def wait_exit(self, timeout: float) -> int | None:
        """Its exit status once it exits within ``timeout``, else None (it is left running)."""
        return self._reap(timeout)

    def pause(self) -> None:
        if self._signal_group(signal.SIGSTOP):
            self.paused = True

    def resume(self) -> None:
        if self._signal_group(signal.SIGCONT):
            self.paused = False

    def restart(self, *, graceful: bool = False, ready_timeout: float = 15.0) -> int | None:
        """Stops (if running) and starts again with the same argv, so on the same port.

        Returns how the old process exited (a negative number is death by that signal)."""
        code = None
        if self.running:
            code = self.terminate() if graceful else self.kill()
        self.start()
        self.wait_ready(ready_timeout)
        return code

    def _reap(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Teardown: resume if paused, SIGTERM, then SIGKILL; also kills stray group members."""
        if self.popen is None:
            return
        if self.running:
            self.resume()
            self.terminate(timeout=5.0)
        # A build that forked helpers into its group must not leave them behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._reap(2.0)
        _registry.discard(self)


class Supervisor:
    """Owns a set of processes and tears them all down."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.procs: dict[str, ManagedProcess] = {}
        self._closed = False

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready: ReadyCheck | None = None,
        ready_timeout: float = 15.0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdout_name: str | None = None,
        stderr_name: str | None = None,
        wait: bool = True,
    ) -> ManagedProcess:
        if name in self.procs and self.procs[name].running:
            raise RuntimeError(f"a process named {name!r} is already running")
        proc = ManagedProcess(
            name,
            argv,
            self.log_dir,
            ready=ready,
            env=env,
            cwd=cwd,
            stdout_name=stdout_name,
            stderr_name=stderr_name,
        )
        self.procs[name] = proc
        proc.start()
        if wait:
            try:
                proc.wait_ready(ready_timeout)
            except BaseException:
                proc.stop()
                raise
        return proc

    def __getitem__(self, name: str) -> ManagedProcess:
        return self.procs[name]

    def close(self) -> None:
        # Resume everything first: a stopped process cannot act on SIGTERM.
        for proc in self.procs.values():
            if proc.paused:
                proc.resume()
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self._closed = True

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Every live child, so that interpreter exit reaps what a crashed caller forgot.
_registry: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


def reap_all() -> None:
    for proc in list(_registry):
        with contextlib.suppress(Exception):
            proc.stop()


atexit.register(reap_all)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, carrying which signal it was."""

    def __init__(self, signum: int) -> None:
        self.signum = signal.Signals(signum)
        super().__init__(f"interrupted by {self.signum.name}")


def interrupt_signal(exc: KeyboardInterrupt) -> signal.Signals:
    """Which signal a KeyboardInterrupt stands for: Python's own Ctrl-C handler raises a plain one."""
    return exc.signum if isinstance(exc, Interrupted) else signal.SIGINT


def owned_processes(token: str) -> list[psutil.Process]:
    """Every live process whose environment carries ``WSCHAOS_OWNER=token``: a run's survivors."""
    return processes_carrying(OWNER_ENV, token)


def processes_carrying(var: str, token: str) -> list[psutil.Process]:
    """Every live process whose environment has ``var=token``."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get(var) == token:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def install_signal_handlers() -> None:
    """Makes SIGTERM behave like Ctrl-C, so finalizers and atexit reap the children."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_sigterm(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, on_sigterm)


#: The signals a harness CLI that runs another (certify) passes on to it.
FORWARDED_SIGNALS = {signal.SIGINT, signal.SIGTERM}
#: An interrupted certify stops its cluster and writes its partial report in seconds (measured
#: 2.6-5.4 s, tests/chaos/test_certify_interrupt.py); past this it is killed.
INTERRUPTED_EXIT_TIMEOUT_S = 60.0


def _unblock_forwarded() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)


def run_forwarding_interrupts(
    argv: Sequence[str], *, timeout_s: float, **popen: Any
) -> subprocess.CompletedProcess[Any]:
    """Runs a harness command (a certify) to its end; an interrupt of this process is passed on.

    The child gets its own process group, so that a Ctrl-C at the terminal reaches it once (from
    here), not twice: a second signal would cut its cleanup short. On SIGINT/SIGTERM here (call
    :func:`install_signal_handlers` first, so SIGTERM raises too), the child gets the same signal
    and up to INTERRUPTED_EXIT_TIMEOUT_S to stop its cluster, then the interrupt goes on up. Past
    ``timeout_s`` it gets SIGTERM, the same grace, and ``subprocess.TimeoutExpired`` is raised.
    Killing the caller must never leave a certify (and its cluster) running.
    """
    # Held back until the child is known, so no interrupt can land between its start and the try.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        # A blocked signal mask would survive exec into the child: preexec_fn lifts it there.
        proc = subprocess.Popen(list(argv), process_group=0, preexec_fn=_unblock_forwarded, **popen)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        raise

    def stop(sig: signal.Signals) -> None:
        proc.send_signal(sig)
        try:
            proc.communicate(timeout=INTERRUPTED_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()

    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        out, err = proc.communicate(timeout=timeout_s)
    except KeyboardInterrupt as exc:
        stop(interrupt_signal(exc))
        raise
    except subprocess.TimeoutExpired:
        stop(signal.SIGTERM)
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
