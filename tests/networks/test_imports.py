"""Imports inside ``networks`` point one way, and every module imports on its own.

The layering (each module imports only modules above it)::

    layers, atomic, pretrained, model
    backbones (layers)        weights (model)
    effnet (model, pretrained, weights)     timm_generic
    registry (backbones, effnet, model, pretrained, timm_generic, weights)
    dfb (model, registry)     cam (layers, model)     checkpoint (atomic, model, registry, weights)
    __init__ (all of them)

The check reads the source with ``ast``, so imports inside functions (the lazy ones that hide a
circle from a plain ``import``) and under ``TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

import pytest

PACKAGE = "dfb_ood.networks"
ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "networks"


def module_name(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


MODULES = {module_name(path): path for path in sorted(FOLDER.glob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every dotted name an import statement in ``path`` may load, relative imports resolved."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = PACKAGE.split(".")  # every module here sits directly in the package
                base_parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # ``from . import cam``
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ``networks`` it imports (explicitly; a package's implicit parent
    import is not an edge, or every submodule would form a circle with ``__init__``)."""
    return {
        name: {other for other in imported_names(path) if other in MODULES and other != name}
        for name, path in MODULES.items()
    }


def path_between(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A shortest import chain ``start -> ... -> goal``, or None."""
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node]):
            if nxt == goal:
                chain = [goal, node]
                while (back := previous[chain[-1]]) is not None:
                    chain.append(back)
                return chain[::-1]
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return None


def test_the_graph_sees_relative_absolute_and_lazy_imports(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        from .model import OODNet
        from . import cam
        import dfb_ood.networks.weights
        def later():
            from dfb_ood.networks.dfb import from_classifier
        """
    )
    path = tmp_path / "example.py"
    path.write_text(source)
    found = {name for name in imported_names(path) if name in MODULES}
    assert found == {PACKAGE, f"{PACKAGE}.model", f"{PACKAGE}.cam", f"{PACKAGE}.weights", f"{PACKAGE}.dfb"}


def test_no_module_of_networks_imports_itself_back() -> None:
    graph = import_graph()
    assert {f"{PACKAGE}.{name}" for name in ("model", "dfb", "registry", "weights")} <= set(graph)
    circles = []
    for name in sorted(graph):
        for first in sorted(graph[name]):
            chain = path_between(graph, first, name)
            if chain is not None:
                circles.append(" -> ".join([name, *chain]))
                break
    assert not circles, "import circles in networks/:\n" + "\n".join(circles)


def test_networks_imports_neither_harness_nor_postprocessors() -> None:
    for name, path in MODULES.items():
        roots = {imported.removeprefix("dfb_ood.").split(".")[0] for imported in imported_names(path)}
        forbidden = roots & {"harness", "postprocessors"}
        assert not forbidden, f"{name} imports {sorted(forbidden)}"


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_every_module_imports_on_its_own_in_a_fresh_interpreter() -> None:
    """One new interpreter loads torch once, then forks a child per module that has no ``networks``
    module loaded yet and imports just that one: what ``python -c 'import dfb_ood.networks.X'`` does, at the
    cost of one torch import instead of one per module."""
    script = textwrap.dedent(
        f"""
        import importlib, os, sys, traceback
        import torch  # shared by all children; nothing of networks is loaded before the fork
        assert not [m for m in sys.modules if m == {PACKAGE!r} or m.startswith({PACKAGE + "."!r})]
        failed = []
        for name in {sorted(MODULES)!r}:
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(name)
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if status != 0:
                failed.append(name)
        print("FAILED", failed)
        sys.exit(1 if failed else 0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
