"""Hyper-parameter search on cached outputs: choose on ID-val vs OOD-val, never on test.

OpenOOD's automatic parameter search re-runs inference for every grid point. Here a grid point
that does not change the forward pass (ViM's dimension, KNN's k, ReAct's percentile, GEN's gamma,
DFB's T, ...) only re-fits and re-scores cached arrays; only ODIN's temperature and noise need
new (cached) perturbed passes, and only on the training and validation sets. The test sets are
not even handed to the search: it receives a view of the outputs without them.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dfb_ood.errors import InputError
from dfb_ood.harness.detectors import build_detector, search_grid
from dfb_ood.harness.evaluate import SetOutputs, needs_train_pass, with_background
from dfb_ood.harness.metrics import auroc
from dfb_ood.postprocessors.base import Outputs, Postprocessor

PerturbedFn = Callable[[Postprocessor, str, str], Outputs]


@dataclass
class SearchResult:
    """The chosen values of one detector and the validation AUROC of every grid point tried."""

    detector: str
    chosen: dict[str, Any]
    best_auroc: float
    tried: list[dict[str, Any]] = field(default_factory=list)


def validation_view(sets: SetOutputs) -> SetOutputs:
    """The outputs a search may read: ID train, ID val and OOD val. No test set is carried."""
    if sets.val is None or sets.ood_val is None:
        raise InputError("hyper-parameter search needs ID-val and OOD-val sets; the benchmark has none")
    return SetOutputs(train=sets.train, test=sets.val, val=sets.val, ood_val=sets.ood_val, ood={}, groups={})


def _grid_points(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def search_detector(
    name: str,
    sets: SetOutputs,
    *,
    network: str,
    perturbed: PerturbedFn | None = None,
    fixed: Mapping[str, Any] | None = None,
    background: SetOutputs | None = None,
) -> SearchResult:
    """Try every point of the detector's configured grid; keep the best ID-val vs OOD-val AUROC.

    ``sets`` may be the full outputs: only their validation view is used. ``fixed`` holds settings
    that are not searched (e.g. ``foreground``); ``background`` the DFB net's outputs when the DFB
    variant takes its foreground from the classifier. Grid points a detector rejects (a ViM
    dimension above the feature size) are recorded as invalid, not silently dropped.
    """
    view = validation_view(sets)
    bg_view = validation_view(background) if background is not None else None
    points = _grid_points(search_grid(name)) or [{}]
    tried: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any]] | None = None
    for point in points:
        try:
            detector = build_detector(name, **{**dict(fixed or {}), **point})
        except ValueError as error:
            tried.append({**point, "auroc": None, "invalid": str(error)})
            continue
        current = view
        if detector.needs_network:
            if perturbed is None:
                raise InputError(f"{name} needs its own network pass for the search; none was provided")
            current = _perturbed_view(detector, network, view, perturbed)
        if bg_view is not None:
            current = with_background(current, bg_view)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # dominance notes belong to the final fit, not each trial
                detector.fit(current.train, current.val, current.ood_val)
                value = auroc(detector.score(current.val), detector.score(current.ood_val))
        except ValueError as error:
            tried.append({**point, "auroc": None, "invalid": str(error)})
            continue
        tried.append({**point, "auroc": value})
        if best is None or value > best[0]:
            best = (value, point)
    if best is None:
        raise InputError(f"no grid point of {name} could be evaluated: {tried}")
    return SearchResult(detector=name, chosen=best[1], best_auroc=best[0], tried=tried)


def _perturbed_view(
    detector: Postprocessor, network: str, view: SetOutputs, perturbed: PerturbedFn
) -> SetOutputs:
    """The validation view through the detector's own pass; asks for the train/val/ood_val sets only."""
    train = perturbed(detector, network, "train") if needs_train_pass(detector, view) else view.train
    val = perturbed(detector, network, "val")
    return SetOutputs(train=train, test=val, val=val, ood_val=perturbed(detector, network, "ood_val"))


def is_searchable(name: str) -> bool:
    """Whether a detector has a configured grid."""
    return bool(search_grid(name))
