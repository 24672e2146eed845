"""Root conftest.

The wschaos plugin is loaded through its pytest11 entry point once the project is installed
(``make test`` installs it); this also loads it from a bare checkout. The Hypothesis profiles
(dev, ci, nightly) are registered here: ``ci`` under CI=true, else ``dev``, or HYPOTHESIS_PROFILE.
"""

import importlib.metadata

import pytest

from harness.hypothesis_profiles import load_default_profile, register_profiles

_installed = any(ep.value == "harness.plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
pytest_plugins = [] if _installed else ["harness.plugin"]

register_profiles()
load_default_profile()


#: Collected first, in this order: the suites whose tests run real clusters for 10-90 s each.
_LONG_FIRST = ("tests/selftest/", "tests/chaos/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long real-process tests first, so that the short unit tests fill the end of the run.

    ``pytest -n 2`` hands tests out in collection order. Collected last, the self-test's
    certifications (30-90 s each) kept one worker busy at the end while the other had nothing
    left; collected first, the thousand millisecond-scale unit tests even the workers out.
    The sort is stable and depends only on paths, so every xdist worker collects the same order.
    """

    def rank(item: pytest.Item) -> int:
        path = item.nodeid
        return next((i for i, prefix in enumerate(_LONG_FIRST) if path.startswith(prefix)), len(_LONG_FIRST))

    items.sort(key=rank)
