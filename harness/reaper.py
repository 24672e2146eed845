"""The reaper: kills what a harness process started, once that process is gone however it went.

PR_SET_PDEATHSIG (harness.procs) covers only the children the main thread starts, because it
fires when the forking *thread* exits; certify's lanes start their clusters from threads of their
own. So a process that starts children from another thread first starts this reaper (once): a
process in a session of its own that blocks on a pipe whose only write end that process holds.
The pipe reaches end-of-file when the process exits, by SIGKILL as much as by a clean exit. The
reaper then kills every process that carries the process's reap token (each with its process
group, where it leads one: a shell-wrapped build goes whole), and exits. After a clean exit, the
supervisor has closed everything already and there is nothing left to kill.

Survivors are found by the token the process gave its children (``WSCHAOS_REAP``), never by name:
other runs may share the machine. The token is the process's own, not inherited, so a nested
harness process (a certify under ``make flake-check``) tags its children with its own, and a
reaper kills its process's children only.

Usage (started by :func:`harness.procs.ensure_reaper`, not by hand)::

    python -m harness.reaper --token TOKEN --fd N
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

import psutil

from harness.procs import REAP_ENV, processes_carrying

#: How long the reaper waits for what it killed to be gone before it exits anyway.
GONE_WITHIN_S = 5.0


def reap(token: str) -> list[int]:
    """Kills every process carrying ``token`` (and the group each leads); returns their pids."""
    me = os.getpid()
    victims = [p for p in processes_carrying(REAP_ENV, token) if p.pid != me]
    for proc in victims:
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
    psutil.wait_procs(victims, timeout=GONE_WITHIN_S)
    return [p.pid for p in victims]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.reaper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--token", required=True, help="the reap token of the process to clean up after")
    parser.add_argument("--fd", type=int, required=True, help="the read end of the pipe that process holds open")
    args = parser.parse_args(argv)
    # Nobody's Ctrl-C is meant for the reaper (it is in a session of its own, but be sure).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while os.read(args.fd, 4096):
            pass
    except OSError:
        pass  # a broken pipe is an ended one: reap
    reap(args.token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
