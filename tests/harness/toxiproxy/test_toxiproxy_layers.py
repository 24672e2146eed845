"""The embedded Toxiproxy's modules form layers: no import cycle, each concept in one module.

The graph is read from the source (every relative import, including those under
``TYPE_CHECKING`` and inside functions), and each module is then imported alone in a fresh
interpreter, with the package's ``__init__`` kept out, to show it needs nothing above it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "harness" / "toxiproxy"

# Lowest layer first; a module may import only modules listed before it.
LAYERS = [
    "gojson",
    "errors",
    "addresses",
    "extensions",
    "wsframes",
    "toxic_spec",
    "toxics",
    "ws_toxics",
    "link",
    "proxy",
    "collection",
    "httpserver",
    "api",
    "server",
]


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found.update(n.split(".")[2] for n in names if n.startswith("harness.toxiproxy."))
    return found


def graph() -> dict[str, set[str]]:
    return {path.stem: _imports(path.stem) for path in PACKAGE.glob("*.py")}


def test_every_module_has_a_layer() -> None:
    assert set(graph()) - {"__init__", "__main__"} == set(LAYERS)


def test_import_graph_is_acyclic_and_layered() -> None:
    edges = graph()
    try:
        list(TopologicalSorter(edges).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {exc.args[1]}")
    for module in LAYERS:
        above = set(LAYERS[LAYERS.index(module) :])
        assert not edges[module] & above, f"{module} imports {sorted(edges[module] & above)} from its layer or above"


def _closure(module: str, edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    return seen


_IMPORT_ALONE = """
import importlib, sys, types
package = types.ModuleType("harness.toxiproxy")
package.__path__ = [sys.argv[2]]
sys.modules["harness.toxiproxy"] = package
importlib.import_module("harness.toxiproxy." + sys.argv[1])
prefix = "harness.toxiproxy."
print(" ".join(sorted(name[len(prefix):] for name in sys.modules if name.startswith(prefix))))
"""


def test_each_module_imports_alone_in_dependency_order() -> None:
    edges = graph()
    root = str(PACKAGE.parents[1])
    # One fresh interpreter per module, all started at once.
    children = {
        module: subprocess.Popen(
            [sys.executable, "-c", _IMPORT_ALONE, module, str(PACKAGE)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
            env={"PYTHONPATH": root},
        )
        for module in LAYERS
    }
    try:
        for module, child in children.items():
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, (module, err)
            assert set(out.split()) == _closure(module, edges), module
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
