"""Hypothesis settings profiles for the chaos suite: ``dev``, ``ci`` and ``nightly``.

A generated chaos example runs in real time against live processes: warm-up (1 s), the fault phase
(up to the 6 s horizon), the liveness deadline (up to 10 s, usually ~1 s), quiesce (up to 5 s) and
a checked reset, so about 10-20 s each. The budgets follow from that:

* ``dev`` (3 examples, roughly 1 minute): a quick look on a laptop while working on the harness
  or a build. The default outside CI.
* ``ci`` (6 examples, roughly 2 minutes plus shrinking): fits beside the named scenarios in the
  10-minute ``certify --profile ci`` budget. The default when ``CI=true``.
* ``nightly`` (200 examples, roughly 1 hour plus shrinking): the long swarm run, where most of the
  finding happens; shrinking a failure there may take a further while.

Every profile:

* ``deadline=None``: examples are real-time runs of seconds; Hypothesis's per-example deadline is
  meant for fast pure functions and would only report noise;
* the example database on, in ``.hypothesis/examples`` under the current directory (or ``root``),
  so a failing plan is replayed first on the next run, before any new example is generated;
* ``too_slow`` and ``function_scoped_fixture`` health checks suppressed: generation is cheap but the
  test body is slow by nature, and the chaos test's per-example fixtures are reset explicitly
  (the runner's checked reset), not recreated by pytest;
* all phases (explicit, reuse, generate, target, shrink, explain), as Hypothesis does by default:
  shrinking is what turns a failing swarm run into a plan a person can read;
* ``print_blob=True``: a failure prints the ``@reproduce_failure`` blob as well as the scenario.

``HYPOTHESIS_PROFILE`` picks any registered profile by name; :func:`load_default_profile` honours it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

__all__ = ["PROFILES", "default_profile_name", "example_database_path", "load_default_profile",
           "register_profiles"]  # fmt: skip

#: Profile name -> max_examples; the budgets are explained in the module docstring.
PROFILES: dict[str, int] = {"dev": 3, "ci": 6, "nightly": 200}

_TRUE = {"1", "true", "yes", "on"}


def example_database_path(root: str | Path | None = None) -> Path:
    """Where the example database lives: ``ROOT/.hypothesis/examples`` (ROOT defaults to the cwd)."""
    return Path(root if root is not None else Path.cwd()) / ".hypothesis" / "examples"


def register_profiles(root: str | Path | None = None) -> None:
    """Registers ``dev``, ``ci`` and ``nightly``; idempotent (registering again replaces them)."""
    database = DirectoryBasedExampleDatabase(example_database_path(root))
    for name, max_examples in PROFILES.items():
        settings.register_profile(
            name,
            max_examples=max_examples,
            deadline=None,
            database=database,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            phases=tuple(Phase),
            print_blob=True,
        )


def default_profile_name(environ: Mapping[str, str] | None = None) -> str:
    """``HYPOTHESIS_PROFILE`` if set, else ``ci`` when ``CI`` is true, else ``dev``."""
    env = os.environ if environ is None else environ
    chosen = env.get("HYPOTHESIS_PROFILE", "").strip()
    if chosen:
        return chosen
    return "ci" if env.get("CI", "").strip().lower() in _TRUE else "dev"


def load_default_profile(environ: Mapping[str, str] | None = None, root: str | Path | None = None) -> str:
    """Registers the profiles, loads the default one (see :func:`default_profile_name`) and names it.

    An unknown ``HYPOTHESIS_PROFILE`` raises Hypothesis's InvalidArgument, which names it: running
    a chaos suite under a profile other than the one asked for would mislead about its budget.
    """
    register_profiles(root)
    name = default_profile_name(environ)
    settings.load_profile(name)
    return name
