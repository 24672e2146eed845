"""Root conftest.

The wschaos plugin is loaded through its pytest11 entry point once the project is installed
(``make test`` installs it); this also loads it from a bare checkout. The Hypothesis profiles
(dev, ci, nightly) are registered here: ``ci`` under CI=true, else ``dev``, or HYPOTHESIS_PROFILE.
"""

import importlib.metadata

from harness.hypothesis_profiles import load_default_profile, register_profiles

_installed = any(ep.value == "harness.plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
pytest_plugins = [] if _installed else ["harness.plugin"]

register_profiles()
load_default_profile()
