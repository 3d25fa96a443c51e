"""Benchmark definitions: one YAML file names an ID data set and its near/far OOD sets.

A benchmark is data, not code. Adding one (OpenOOD's most asked-for missing piece) means writing a
YAML file in the schema documented in ``docs/benchmarks.md`` and passing its path; the shipped
ones under ``configs/benchmarks/`` use the same schema. This module finds the file
(a shipped name or a path) and hands it to the schema parser (:mod:`harness.data.schema`); the
model it builds (:mod:`harness.data.specs`) is re-exported here, the public face of benchmarks.
"""

from __future__ import annotations

import os
from pathlib import Path

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness.config import config_names, configs_root
from dfb_ood.harness.data.schema import BenchmarkParser
from dfb_ood.harness.data.specs import (
    MAX_CLASSES,
    MAX_IMAGE_SIDE,
    MAX_SEED,
    MAX_SHAPES_PIXELS,
    RECIPES,
    RESERVED_SET_NAMES,
    ROLES,
    SET_TYPES,
    Benchmark,
    ClassSubset,
    SetSpec,
    check_seed,
    draw_classes,
)
from dfb_ood.suggest import suggestion

__all__ = [
    "MAX_CLASSES",
    "MAX_IMAGE_SIDE",
    "MAX_SEED",
    "MAX_SHAPES_PIXELS",
    "RECIPES",
    "RESERVED_SET_NAMES",
    "ROLES",
    "SET_TYPES",
    "Benchmark",
    "ClassSubset",
    "SetSpec",
    "available_benchmarks",
    "check_seed",
    "default_data_root",
    "draw_classes",
    "load_benchmark",
]


def default_data_root() -> Path:
    """``$HARNESS_DATA`` when set, else ``./data``: where OpenOOD-layout data is expected."""
    return Path(os.path.abspath(os.environ.get("HARNESS_DATA") or "data"))


def available_benchmarks() -> list[str]:
    """Names of the shipped benchmarks (``configs/benchmarks/*.yaml``)."""
    return config_names("benchmarks")


def load_benchmark(
    name_or_path: str | Path,
    data_root: Path | None = None,
    *,
    classes: int | None = None,
    class_seed: int | None = None,
) -> Benchmark:
    """A shipped benchmark by name, or a user's benchmark YAML by path.

    ``data_root`` replaces ``{data_root}`` in the file's ``root:`` key (default
    :func:`default_data_root`). The data root need not exist here: loading only parses, so every
    config can be checked offline; building a dataset reports a missing root.

    ``classes`` / ``class_seed`` replace the count and seed of the file's ``id_classes`` section
    (``--classes`` / ``--class-seed``); a file without that section refuses them rather than
    silently running on all its classes.
    """
    path = _find_yaml(name_or_path)
    data_root = Path(os.path.abspath(data_root)) if data_root is not None else default_data_root()
    shipped = path.parent.resolve() == (configs_root() / "benchmarks").resolve()
    return BenchmarkParser(path, data_root, shipped, classes=classes, class_seed=class_seed).parse()


def _find_yaml(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    looks_like_path = isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or os.sep in text
    if candidate.is_file() or (candidate.exists() and not candidate.is_dir()):
        return Path(os.path.abspath(candidate))  # a FIFO or device: refused, with its kind, when read
    if looks_like_path:
        raise MissingInputError(f"benchmark file not found: {candidate}")
    shipped = configs_root() / "benchmarks" / f"{text}.yaml"
    if shipped.is_file():
        return shipped
    raise InputError(
        f"unknown benchmark {text!r}: not a YAML file, and not a shipped name; "
        f"{suggestion(text, available_benchmarks(), 'harness list benchmarks')}"
    )
