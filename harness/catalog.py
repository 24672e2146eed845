"""Finds scenarios: the built-in ones in ``scenarios/``, a user's modules, and saved JSON files."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path

from harness.scenario import Scenario, ScenarioError


def _from_module(module: object, where: str) -> Scenario:
    scenario = getattr(module, "SCENARIO", None)
    if not isinstance(scenario, Scenario):
        raise ScenarioError(f"{where}: defines no SCENARIO = Scenario(...)")
    # Round-trip through JSON so a module can never hold a scenario that cannot be saved/replayed.
    return Scenario.from_dict(scenario.to_dict())


def named_scenarios() -> dict[str, Scenario]:
    """Every scenario module in the ``scenarios`` package, built-ins first in ``ORDER``."""
    import scenarios

    order: tuple[str, ...] = getattr(scenarios, "ORDER", ())
    names = sorted(m.name for m in pkgutil.iter_modules(scenarios.__path__) if not m.name.startswith("_"))
    ranked = [n for n in order if n in names] + [n for n in names if n not in order]
    out: dict[str, Scenario] = {}
    for name in ranked:
        module = importlib.import_module(f"scenarios.{name}")
        scenario = _from_module(module, f"scenarios/{name}.py")
        if scenario.name in out:
            raise ScenarioError(f"scenarios/{name}.py: scenario name {scenario.name!r} is used twice")
        out[scenario.name] = scenario
    return out


def load_scenario_file(path: str | Path) -> Scenario:
    """A scenario from a ``.json`` file or a ``.py`` module file of the user's own."""
    p = Path(path)
    if p.suffix == ".py":
        if not p.is_file():
            raise ScenarioError(f"{p}: no such file")
        spec = importlib.util.spec_from_file_location(f"wschaos_user_{p.stem}", p)
        if spec is None or spec.loader is None:
            raise ScenarioError(f"{p}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ScenarioError(f"{p}: importing it failed: {type(exc).__name__}: {exc}") from None
        return _from_module(module, str(p))
    return Scenario.load(p)
