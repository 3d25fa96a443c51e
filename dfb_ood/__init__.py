"""dfb-ood: the one import root of the project (``dfb_ood.harness``, ``dfb_ood.networks``,
``dfb_ood.postprocessors``, ``dfb_ood.configs``).

Why one root: the four folders were once installed as top-level packages, and a user's own
``configs/`` or ``networks/`` package (common in research repositories) then shadowed them. The
repository keeps the four folders at its top; ``pyproject.toml`` maps them under this package in
the wheel. In a source checkout (``PYTHONPATH=.``, an editable install, a git worktree) the folders
sit beside this one, so the package's search path also covers its parent folder, and
``dfb_ood.harness`` is the checkout's ``harness/``. An installed wheel holds the folders inside
this package and never looks outside it.

The Python API's names are on this root (``from dfb_ood import Evaluator, collect_outputs,
create``) but are imported only when first used, so ``import dfb_ood`` stays light (no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SUBPACKAGES = ("harness", "networks", "postprocessors", "configs")


def _checkout_root() -> Path | None:
    """The repository root when this package runs from a source checkout, else None."""
    here = Path(__file__).resolve().parent
    if (here / "harness").is_dir():
        return None  # an installed wheel: the subpackages live inside this folder
    parent = here.parent
    if all((parent / name / "__init__.py").is_file() for name in SUBPACKAGES) and (
        parent / "pyproject.toml"
    ).is_file():
        return parent
    return None


_ROOT = _checkout_root()
if _ROOT is not None:
    __path__.append(str(_ROOT))  # noqa: F821 - a package's __path__ is defined by the import system

#: The Python API's names on this root, and the module each one lives in (imported on first use).
API_NAMES: dict[str, str] = {
    "Evaluator": "dfb_ood.api",
    "run_dfb": "dfb_ood.api",
    "save_classifier": "dfb_ood.api",
    "evaluate_model": "dfb_ood.api_benchmark",
    "benchmark_outputs": "dfb_ood.api_benchmark",
    "collect_outputs": "dfb_ood.api_outputs",
    "find_head": "dfb_ood.api_outputs",
    "evaluate_outputs": "dfb_ood.api_table",
    "results_table": "dfb_ood.api_table",
    "detector_names": "dfb_ood.api_table",
    "create": "dfb_ood.postprocessors.registry",
    "available": "dfb_ood.postprocessors.registry",
    "Outputs": "dfb_ood.postprocessors.base",
    "evaluate_ood": "dfb_ood.harness.metrics",
}
__all__ = sorted(API_NAMES)


def __getattr__(name: str) -> Any:
    """The API's names, imported from their module when first asked for (PEP 562)."""
    module = API_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'dfb_ood' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's own names and the API's lazy ones, for ``dir(dfb_ood)`` and completion."""
    return sorted(set(globals()) | set(API_NAMES))
