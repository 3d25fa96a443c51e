"""Build detectors by name with their defaults from ``configs/postprocessors/``.

The postprocessors package knows nothing of files; this is where the YAML defaults (which document
OpenOOD's and the paper's choices) meet the constructors.
"""

from __future__ import annotations

from typing import Any

from harness.config import load_config
from postprocessors import registry
from postprocessors.base import Postprocessor


def detector_defaults(name: str) -> dict[str, Any]:
    """The configured keyword arguments of a detector (base defaults, plus the DFB wrapper's)."""
    base, suffix = registry.split_variant(name)
    kwargs = dict(load_config("postprocessors", base).get("defaults") or {})
    if suffix is not None:
        kwargs.update(load_config("postprocessors", "dfb").get("defaults") or {})
    return kwargs


def search_grid(name: str) -> dict[str, list[Any]]:
    """The configured hyper-parameter grid of a detector (base grid, plus the wrapper's for DFB)."""
    base, suffix = registry.split_variant(name)
    grid = dict(load_config("postprocessors", base).get("search") or {})
    if suffix is not None:
        wrapper_grid = load_config("postprocessors", "dfb").get("search") or {}
        keys = ["fusion_temperature"] if suffix == "_dfb" else ["bg_weight"]
        grid.update({k: wrapper_grid[k] for k in keys if k in wrapper_grid})
    return grid


def build_detector(name: str, **overrides: Any) -> Postprocessor:
    """A detector with its configured defaults, any of which ``overrides`` replaces."""
    kwargs = detector_defaults(name)
    kwargs.update(overrides)
    return registry.create(name, **kwargs)
