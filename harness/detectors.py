"""Build detectors by name: defaults from the constructors, search grids from ``configs/postprocessors/``.

A detector's default hyper-parameters live once, in its constructor's signature
(:func:`dfb_ood.postprocessors.registry.default_hyperparameters`); the YAML next to it holds what no
class holds, the grid ``--search`` tries, with comments on where each value comes from. The
postprocessors package knows nothing of files; this is where the two meet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfb_ood.harness.config import load_config
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.base import Postprocessor


def detector_defaults(name: str) -> dict[str, Any]:
    """The keyword arguments a detector is built with (base defaults, plus the DFB wrapper's)."""
    return dict(registry.default_hyperparameters(name))


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


#: What a detector can read, in the order `harness list` and the README name them.
READS = ("logits", "features", "head", "network pass")


@dataclass(frozen=True)
class DetectorInfo:
    """One base detector as `harness list` shows it: what it reads and what `--search` tries."""

    name: str
    fusion: str
    reads: tuple[str, ...]  # a subsequence of READS
    fits: bool
    grid: tuple[str, ...]  # the parameters its configs/postprocessors grid searches, in its order

    @property
    def reads_text(self) -> str:
        return " + ".join(self.reads)


def detector_info(name: str) -> DetectorInfo:
    """What a base detector (with its configured defaults) declares it reads, and its search grid.

    ``network pass`` is the ODIN kind: the logits of an input perturbed through the network (at the
    configured, non-zero noise), which cached outputs cannot give.
    """
    detector = build_detector(name)
    declared = {
        "logits": detector.requires_logits,
        "features": detector.requires_features,
        "head": detector.requires_head,
        "network pass": detector.needs_network,
    }
    return DetectorInfo(
        name=name,
        fusion=str(detector.fusion_kind),
        reads=tuple(what for what in READS if declared[what]),
        fits=bool(detector.requires_fit),
        grid=tuple(search_grid(name)),
    )


def detector_catalog() -> dict[str, list[DetectorInfo]]:
    """The base detectors grouped by what they read (``"logits + features"`` -> its detectors).

    Groups come plain logits first, then by how much more they read, the own network pass last;
    detectors within a group keep the registry's order. ``bg`` and the DFB variants are not bases.
    """
    infos = [detector_info(name) for name in registry.BASES]

    def order(info: DetectorInfo) -> tuple[bool, bool, bool, bool]:
        has = set(info.reads)
        return ("network pass" in has, "logits" not in has, "features" in has, "head" in has)

    groups: dict[str, list[DetectorInfo]] = {}
    for info in sorted(infos, key=order):  # sorted() is stable: registry order within a group
        groups.setdefault(info.reads_text, []).append(info)
    return groups
