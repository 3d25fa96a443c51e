"""The shape of the code: small modules, no giant class, no import circle, imports one way.

Read with ``ast`` from the source, so imports inside functions (the lazy ones that hide a circle
from a plain ``import``) and under ``TYPE_CHECKING`` count like the ones at the top. The limits are
the ones docs/architecture.md states; a module that outgrows them is split along its jobs.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = "dfb_ood"
FOLDERS = {top: REPO / top for top in ("harness", "networks", "postprocessors")}
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400


def module_files() -> dict[str, Path]:
    """Dotted name (``dfb_ood.harness.data.cache``) -> source file, for every module of the project."""
    found: dict[str, Path] = {}
    for top, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [ROOT, top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    for path in sorted((REPO / ROOT).glob("*.py")):
        found[ROOT if path.stem == "__init__" else f"{ROOT}.{path.stem}"] = path
    return found


MODULES = module_files()


def imported_modules(name: str, path: Path) -> set[str]:
    """The project modules an import statement in ``path`` may load (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {other for other in names if other in MODULES and other != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports. A package's implicit import of its parent
    ``__init__`` is not an edge (or every submodule would form a circle with it)."""
    return {name: imported_modules(name, path) for name, path in MODULES.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def test_the_circle_finder_finds_a_circle_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_over_the_line_limit():
    long = {
        name: count
        for name, path in MODULES.items()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them along their jobs): {long}"


def test_no_class_is_over_the_line_limit():
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert not long, f"classes over {MAX_CLASS_LINES} lines: {long}"


def test_the_project_has_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(group) for group in found)


def test_networks_and_postprocessors_never_import_harness():
    graph = import_graph()
    layers = {"networks": {"harness", "postprocessors"}, "postprocessors": {"harness"}}
    wrong = []
    for name, imported in graph.items():
        top = name.split(".")[1] if "." in name else ""
        for other in imported:
            if "." in other and other.split(".")[1] in layers.get(top, set()):
                wrong.append(f"{name} imports {other}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_architecture_map_names_every_module():
    """docs/architecture.md is the map of the code: a module it does not name is a room nobody
    can find, and a name it keeps after the module is gone sends a reader nowhere."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set()
    for top, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            named.add(f"{top}/{path.relative_to(folder).as_posix()}")
    named |= {f"{ROOT}/{path.name}" for path in (REPO / ROOT).glob("*.py")}
    missing = sorted(name for name in named if f"`{name}`" not in text)
    assert not missing, f"docs/architecture.md does not name: {missing}"
    mentioned = set(re.findall(r"`((?:harness|networks|postprocessors|dfb_ood)/[\w/]+\.py)`", text))
    gone = sorted(mentioned - named)
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_the_architecture_index_follows_the_code():
    path = REPO / "docs" / "architecture_index.py"
    spec = importlib.util.spec_from_file_location("architecture_index", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = module.MAP.read_text(encoding="utf-8")
    assert module.rendered(current) == current, "run: python docs/architecture_index.py"
