"""dfb-ood: the one import root of the project (``dfb_ood.harness``, ``dfb_ood.networks``,
``dfb_ood.postprocessors``, ``dfb_ood.configs``).

Why one root: the four folders were once installed as top-level packages, and a user's own
``configs/`` or ``networks/`` package (common in research repositories) then shadowed them. The
repository keeps the four folders at its top; ``pyproject.toml`` maps them under this package in
the wheel. In a source checkout (``PYTHONPATH=.``, an editable install, a git worktree) the folders
sit beside this one, so the package's search path also covers its parent folder, and
``dfb_ood.harness`` is the checkout's ``harness/``. An installed wheel holds the folders inside
this package and never looks outside it.
"""

from __future__ import annotations

from pathlib import Path

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
