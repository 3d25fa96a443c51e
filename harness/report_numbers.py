"""The numbers behind the report's figures that the results table does not keep, checked against it.

Why apart: a figure needs per-sample scores (ROC curves), or the table's detectors re-evaluated at
other settings (the fusion-temperature sweep). These functions compute them through the same code
the table came from (:func:`harness.evaluate.evaluate_detectors`), and :func:`check_sweep` raises
:class:`ReportConsistencyError` when a recomputed number differs from the table's, so no figure is
drawn from numbers that disagree with the run's own results. They read arrays only, no run folder.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dfb_ood.errors import StateError
from dfb_ood.harness.detectors import build_detector
from dfb_ood.harness.evaluate import SetOutputs, evaluate_detectors
from dfb_ood.harness.result_row import ResultRow
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.base import Outputs, Postprocessor

#: Temperatures of the sweep (the paper's Fig. 6 spans about this range); the run's own T is added.
SWEEP_TEMPERATURES: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
#: How far a recomputed AUROC may differ from ``results.json`` (full precision): rounding noise only.
TABLE_TOLERANCE = 1e-9
#: ``results.csv`` prints six decimals, so it can differ by half a unit in the last place.
CSV_TOLERANCE = 5e-7 + 1e-12

#: Outputs of a detector's input-perturbed pass (ODIN-style), as the run computes them.
PerturbedFn = Callable[[Postprocessor, str, str], Outputs]


class ReportConsistencyError(StateError):
    """A number recomputed for the report disagrees with the run's results table."""


def fit_detector(
    name: str,
    outputs: Mapping[str, SetOutputs],
    *,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    perturbed: PerturbedFn | None = None,
) -> tuple[Postprocessor, SetOutputs]:
    """Build and fit a detector on the outputs it reads, the way ``evaluate_detectors`` does.

    Figures need per-sample scores (ROC curves, fusion terms), which the results table does not
    keep; fitting through the same path keeps them equal to what the table summarises.
    """
    from dfb_ood.harness.evaluate import prepare_detector

    detector, sets, _ = prepare_detector(name, outputs, overrides=overrides, perturbed=perturbed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the run already reported its fit notes (results.json)
        detector.fit(sets.train, sets.val, sets.ood_val)
    return detector, sets


def roc_curve(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) with ID as the positive class: OOD and ID fractions accepted at each threshold.

    One point per distinct score, thresholds descending, starting at (0, 0); its trapezoid area is
    exactly :func:`harness.metrics.auroc` (ties count one half), so the legend's AUROC and the
    curve drawn are the same number.
    """
    id_sorted = np.sort(np.asarray(id_scores, dtype=np.float64))
    ood_sorted = np.sort(np.asarray(ood_scores, dtype=np.float64))
    thresholds = np.unique(np.concatenate([id_sorted, ood_sorted]))[::-1]
    tpr = (id_sorted.size - np.searchsorted(id_sorted, thresholds, side="left")) / id_sorted.size
    fpr = (ood_sorted.size - np.searchsorted(ood_sorted, thresholds, side="left")) / ood_sorted.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def temperature_sweep(
    detectors: Sequence[str],
    outputs: Mapping[str, SetOutputs],
    *,
    temperatures: Sequence[float] = SWEEP_TEMPERATURES,
    fpr_convention: str = "paper",
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    perturbed: PerturbedFn | None = None,
) -> dict[str, dict[float, dict[str, float]]]:
    """Near/far mean AUROC (fractions) of every ``_dfb`` detector at each fusion temperature T.

    Only Eq. 7 (``_dfb``) has a T; ``_dfbz`` and plain detectors are ignored. Each point goes through
    ``evaluate_detectors`` with the run's own overrides plus T, so the point at the run's T is the
    table's number by construction, which :func:`check_sweep` verifies.
    """
    sweep: dict[str, dict[float, dict[str, float]]] = {}
    for name in detectors:
        if registry.split_variant(name)[1] != "_dfb":
            continue
        sweep[name] = {}
        for temperature in temperatures:
            settings = {**dict((overrides or {}).get(name, {})), "fusion_temperature": float(temperature)}
            rows, _ = evaluate_detectors(
                [name],
                outputs,
                fpr_convention=fpr_convention,
                overrides={name: settings},
                perturbed=perturbed,
            )
            sweep[name][float(temperature)] = {
                str(row["group"]).removesuffix("_mean"): float(row["auroc"])  # type: ignore[arg-type]
                for row in rows
                if row["dataset"] in ("near_mean", "far_mean")
            }
    return sweep


def table_temperature(name: str, overrides: Mapping[str, Mapping[str, object]] | None = None) -> float:
    """The fusion temperature a ``_dfb`` detector used in the run (configured default or searched)."""
    detector = build_detector(name, **dict((overrides or {}).get(name, {})))
    return float(detector.fusion_temperature)  # type: ignore[attr-defined]


def check_sweep(
    sweep: Mapping[str, Mapping[float, Mapping[str, float]]],
    rows: Sequence[ResultRow],
    temperatures: Mapping[str, float],
    *,
    tolerance: float = TABLE_TOLERANCE,
    source: str = "results.json",
) -> None:
    """Raise unless the sweep at each detector's table temperature equals the table's near/far AUROC.

    A disagreement means the sweep does not evaluate what the table did (another T, foreground or
    hyper-parameter), and a figure built on it would mislead.
    """
    table = {(str(r["detector"]), str(r["dataset"])): float(r["auroc"]) for r in rows}  # type: ignore[arg-type]
    for name, per_t in sweep.items():
        temperature = float(temperatures[name])
        if temperature not in per_t:
            raise ReportConsistencyError(
                f"the sweep of {name} lacks the table's temperature T={temperature:g}"
            )
        for group, value in per_t[temperature].items():
            expected = table.get((name, f"{group}_mean"))
            if expected is None:
                raise ReportConsistencyError(f"{source} has no {group}_mean row for {name}")
            if abs(value - expected) > tolerance:
                raise ReportConsistencyError(
                    f"temperature sweep of {name} at T={temperature:g}: {group}-OOD AUROC {value!r} differs "
                    f"from {source}'s {expected!r} by {abs(value - expected):.3g} (tolerance {tolerance:g})"
                )


__all__ = [
    "CSV_TOLERANCE",
    "PerturbedFn",
    "ReportConsistencyError",
    "SWEEP_TEMPERATURES",
    "TABLE_TOLERANCE",
    "check_sweep",
    "fit_detector",
    "roc_curve",
    "table_temperature",
    "temperature_sweep",
]
