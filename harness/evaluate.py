"""Stage 5-6: fit every requested detector on ID outputs, score every set, compute the metrics.

Pure functions over cached :class:`Outputs`: no network, no files. Which network's outputs a
detector reads follows from its name: plain detectors read the K-class classifier's, ``_dfb`` /
``_dfbz`` variants and ``bg`` read the DFB net's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.harness.detector_spec import CLASSIFIER as CLASSIFIER  # re-exported: callers import it from here
from dfb_ood.harness.detector_spec import DFB, DetectorSpec
from dfb_ood.harness.detector_spec import network_of as network_of  # re-exported, like CLASSIFIER
from dfb_ood.harness.detectors import build_detector
from dfb_ood.harness.metrics import METRIC_NAMES, VARIANT_NAMES, evaluate_ood, id_accuracy, metric_variants
from dfb_ood.harness.result_row import ResultRow
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.base import Outputs, Postprocessor
from dfb_ood.postprocessors.dfb import DFBWrapper

DEFAULT_BENCH_DETECTORS = ("msp", "odin", "energy", "vim")


def expand_detectors(requested: Sequence[str], compare: bool = False) -> list[str]:
    """Resolve ``all``, aliases, comma lists and (with ``compare``) each DFB variant's base, in order."""
    names: list[str] = []
    for item in requested:
        for raw in str(item).split(","):
            raw = raw.strip()
            if not raw:
                continue
            expanded = registry.available() if raw.lower() == "all" else [registry.canonical_name(raw)]
            for name in expanded:
                base, suffix = registry.split_variant(name)
                extra = [base] if compare and suffix is not None else []
                for candidate in [*extra, name]:
                    if candidate not in names:
                        names.append(candidate)
    if not names:
        raise InputError("no detectors requested; pass --post NAME (see `harness list`)")
    return names


def default_detectors() -> list[str]:
    """The leaderboard of ``harness bench`` without --post: four bases, both DFB fusions, and bg."""
    names = list(DEFAULT_BENCH_DETECTORS)
    names += [f"{b}_dfb" for b in DEFAULT_BENCH_DETECTORS] + [f"{b}_dfbz" for b in DEFAULT_BENCH_DETECTORS]
    return [*names, "bg"]


@dataclass
class SetOutputs:
    """The cached outputs of one network: ID train/val/test, OOD-val, and each OOD test set by group."""

    train: Outputs
    test: Outputs
    val: Outputs | None = None
    ood_val: Outputs | None = None
    ood: dict[str, Outputs] = field(default_factory=dict)  # set name -> outputs
    groups: dict[str, str] = field(default_factory=dict)  # set name -> "near" | "far"


@dataclass
class DetectorReport:
    """How a detector was configured and anything worth telling about its fit."""

    name: str
    network: str
    params: dict[str, object]
    notes: list[str] = field(default_factory=list)
    clamped: dict[str, int] = field(default_factory=dict)


def _fit(detector: Postprocessor, outputs: SetOutputs, report: DetectorReport) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector.fit(outputs.train, outputs.val, outputs.ood_val)
    report.notes.extend(str(warning.message) for warning in caught)


def prepare_detector(
    name: str,
    outputs: Mapping[str, SetOutputs],
    *,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    perturbed: Callable[[Postprocessor, str, str], Outputs] | None = None,
) -> tuple[Postprocessor, SetOutputs, str]:
    """A detector built with its settings, the outputs it reads, and which network(s) they come from.

    The one place that decides what a detector sees: the classifier's or the DFB net's outputs,
    its own perturbed pass (ODIN), and the DFB net's background logit attached to the classifier's
    outputs when a DFB variant takes its foreground from the classifier. Not fitted yet.
    """
    detector, sets, spec = _prepare(name, outputs, overrides=overrides, perturbed=perturbed)
    return detector, sets, spec.label


def _prepare(
    name: str,
    outputs: Mapping[str, SetOutputs],
    *,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    perturbed: Callable[[Postprocessor, str, str], Outputs] | None = None,
) -> tuple[Postprocessor, SetOutputs, DetectorSpec]:
    """:func:`prepare_detector`, with the spec of the detector as built (its settings decide the
    foreground's network) in place of its network label."""
    detector = build_detector(name, **dict((overrides or {}).get(name, {})))
    foreground = detector.foreground if isinstance(detector, DFBWrapper) else DFB
    spec = DetectorSpec.of(name, foreground=str(foreground))
    for needed in spec.networks:
        if needed not in outputs:
            raise InputError(f"{name} needs the {needed} network's outputs, which this run did not produce")
    sets = outputs[spec.network]
    if detector.needs_network:
        if perturbed is None:
            raise InputError(f"{name} needs its own network pass (ODIN, RankFeat); none was provided")
        sets = perturbed_sets(detector, spec.network, sets, perturbed)
    if spec.from_classifier:
        sets = with_background(sets, outputs[DFB])
    return detector, sets, spec


def evaluate_detectors(
    detectors: Sequence[str],
    outputs: Mapping[str, SetOutputs],
    *,
    fpr_convention: str = "paper",
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    perturbed: Callable[[Postprocessor, str, str], Outputs] | None = None,
) -> tuple[list[ResultRow], list[DetectorReport]]:
    """Metric rows (one per detector x OOD set, plus near/far/all means) and a report per detector.

    Each row holds the metrics of :data:`~harness.metrics.METRIC_NAMES` (``fpr95`` in
    ``fpr_convention``, AUPR as average precision) and, beside them, every other definition
    (:data:`~harness.metrics.VARIANT_NAMES`: trapezoid AUPR, FPR@95 in both conventions).

    ``outputs`` maps ``"classifier"`` / ``"dfb"`` to that network's cached outputs. ``perturbed``
    returns, for a detector that needs its own pass (ODIN with noise), its outputs on
    ``(network, set)`` — set being ``"train"``, ``"val"``, ``"ood_val"``, ``"test"`` or an OOD name.
    """
    rows: list[ResultRow] = []
    reports: list[DetectorReport] = []
    accuracy = {
        net: id_accuracy(o.test.logits[:, : o.test.num_classes], o.test.labels) for net, o in outputs.items()
    }
    for name in detectors:
        detector, sets, spec = _prepare(name, outputs, overrides=overrides, perturbed=perturbed)
        net = spec.network
        report = DetectorReport(name=name, network=spec.label, params=detector.params())
        _fit(detector, sets, report)
        id_scores = detector.score(sets.test)
        _note_clamp(detector, report, "test")
        per_group: dict[str, list[dict[str, float]]] = {}
        for ood_name, ood_outputs in sets.ood.items():
            ood_scores = detector.score(ood_outputs)
            _note_clamp(detector, report, ood_name)
            metrics = {
                **evaluate_ood(id_scores, ood_scores, fpr_convention=fpr_convention).as_dict(),
                **metric_variants(id_scores, ood_scores),  # every definition, for any later table
            }
            group = sets.groups.get(ood_name, "far")
            per_group.setdefault(group, []).append(metrics)
            rows.append(_row(name, report.network, ood_name, group, metrics, fpr_convention, accuracy[net]))
        for group in ("near", "far"):
            if group in per_group:
                rows.append(
                    _mean_row(name, report.network, group, per_group[group], fpr_convention, accuracy[net])
                )
        everything = [m for ms in per_group.values() for m in ms]
        rows.append(_mean_row(name, report.network, "all", everything, fpr_convention, accuracy[net]))
        reports.append(report)
    return rows, reports


def needs_train_pass(detector: Postprocessor, sets: SetOutputs) -> bool:
    """Whether a detector with its own pass reads the training set's perturbed outputs.

    That pass is the largest; it is skipped when nothing reads it: the base learns nothing from
    train (ODIN) and a DFB wrapper takes its statistics from ID-val.
    """
    base = getattr(detector, "base", detector)
    return base.requires_fit or sets.val is None


def needs_ood_val_pass(detector: Postprocessor) -> bool:
    """Whether a detector with its own pass reads the OOD-val set's perturbed outputs.

    Only a base that fits something may (ODIN and RankFeat fit nothing; their hyper-parameter
    search scores OOD-val through its own passes): otherwise the unperturbed outputs stand in, as
    for the training set, and ``fit`` ignores them. That is 1,000 perturbed passes fewer in the
    default bench (both networks' ODIN on fmnist_mini's OOD-val), with the same scores.
    """
    return getattr(detector, "base", detector).requires_fit


def perturbed_sets(
    detector: Postprocessor,
    net: str,
    sets: SetOutputs,
    perturbed: Callable[[Postprocessor, str, str], Outputs],
) -> SetOutputs:
    return SetOutputs(
        train=perturbed(detector, net, "train") if needs_train_pass(detector, sets) else sets.train,
        test=perturbed(detector, net, "test"),
        val=perturbed(detector, net, "val") if sets.val is not None else None,
        ood_val=(
            perturbed(detector, net, "ood_val")
            if sets.ood_val is not None and needs_ood_val_pass(detector)
            else sets.ood_val
        ),
        ood={name: perturbed(detector, net, name) for name in sets.ood},
        groups=sets.groups,
    )


def with_background(foreground: SetOutputs, dfb: SetOutputs) -> SetOutputs:
    """The classifier's outputs with the DFB net's background logit of the same samples attached."""

    def attach(fg: Outputs | None, bg: Outputs | None) -> Outputs | None:
        if fg is None or bg is None:
            return None
        if len(fg) != len(bg):
            raise InputError(f"classifier and DFB outputs differ in length ({len(fg)} vs {len(bg)})")
        return replace(fg, bg_logit=bg.split_background()[1])

    return SetOutputs(
        train=attach(foreground.train, dfb.train),  # type: ignore[arg-type]
        test=attach(foreground.test, dfb.test),  # type: ignore[arg-type]
        val=attach(foreground.val, dfb.val),
        ood_val=attach(foreground.ood_val, dfb.ood_val),
        ood={name: attach(o, dfb.ood[name]) for name, o in foreground.ood.items()},  # type: ignore[misc]
        groups=foreground.groups,
    )


def _note_clamp(detector: Postprocessor, report: DetectorReport, set_name: str) -> None:
    if isinstance(detector, DFBWrapper) and getattr(detector, "last_clamped_", 0):
        report.clamped[set_name] = int(detector.last_clamped_)


def _row(
    detector: str,
    net: str,
    dataset: str,
    group: str,
    metrics: Mapping[str, float],
    convention: str,
    acc: float,
) -> ResultRow:
    row: ResultRow = {
        "detector": detector,
        "detector_network": net,
        "dataset": dataset,
        "group": group,
    }
    row.update({key: float(metrics[key]) for key in METRIC_NAMES})
    row["fpr_convention"] = convention
    row["id_accuracy"] = float(acc)
    row.update({key: float(metrics[key]) for key in VARIANT_NAMES})
    return row


def _mean_row(
    detector: str, net: str, group: str, metrics: list[dict[str, float]], convention: str, acc: float
) -> ResultRow:
    mean = {key: float(np.mean([m[key] for m in metrics])) for key in (*METRIC_NAMES, *VARIANT_NAMES)}
    return _row(detector, net, f"{group}_mean", f"{group}_mean", mean, convention, acc)
