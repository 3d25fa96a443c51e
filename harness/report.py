"""Figures and a markdown report for one finished run directory (issue 7).

``write_report(run_dir)`` re-opens the run read-only (its networks and cached outputs; nothing is
retrained or re-evaluated from scratch) and writes, under ``run_dir/report/``, these figures as PNG
(the default, embedded in report.md), SVG (embedded too) or PDF (linked: markdown cannot embed
it), the format named in report.md:

- ``fg_bg_distributions.<format>``: foreground and background score distributions, ID test vs each OOD
  set, for one DFB variant (the paper's Fig. 4);
- ``roc_<base>.<format>``: ROC curves per OOD set of a base detector and its DFB variants;
- ``masks_id.<format>``: ID training images, their CAMs, pseudo masks and the DFB net's P(background)
  (the paper's App. A.1);
- ``bg_probability_ood.<format>``: the DFB net's per-pixel P(background) on a few ID and OOD test images
  (the idea of the paper's Fig. 1);
- ``temperature_sweep.<format>``: AUROC of each ``_dfb`` variant against the fusion temperature T (Fig. 6);
- ``auroc_bars.<format>``: near/far AUROC of every detector;
- ``tsne.<format>``: a t-SNE of the pooled features of ID test and OOD test images, the K-class
  classifier beside the DFB net (the paper's Fig. 5; :mod:`harness.tsne`, a bounded sample);
- ``report.md``: the results table and every figure with a caption.

Every number a figure shows is recomputed from the cached outputs by the same code the table came
from, and checked against ``results.json`` / ``results.csv``: a figure that disagrees with its own
table raises :class:`ReportConsistencyError` instead of being written.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dfb_ood.harness import plots
from dfb_ood.harness.detectors import build_detector
from dfb_ood.harness.evaluate import CLASSIFIER, DFB, SetOutputs, evaluate_detectors, network_of
from dfb_ood.harness.export_target import check_report_folder, record_report
from dfb_ood.harness.io import (
    READ_FIX,
    READ_WAIT_S,
    own_folder,
    read_json,
    read_lock,
    read_regular_text,
    write_text,
)
from dfb_ood.harness.leaderboard import CONVENTION_TEXT, NETWORK_LABELS, read_csv
from dfb_ood.harness.markdown import markdown_escape, markdown_table
from dfb_ood.harness.metrics import auroc
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.runfolder import check_results_intact
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.base import Outputs, Postprocessor
from dfb_ood.postprocessors.dfb import DFBWrapper

#: Temperatures of the sweep (the paper's Fig. 6 spans about this range); the run's own T is added.
SWEEP_TEMPERATURES: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
#: How far a recomputed AUROC may differ from ``results.json`` (full precision): rounding noise only.
TABLE_TOLERANCE = 1e-9
#: ``results.csv`` prints six decimals, so it can differ by half a unit in the last place.
CSV_TOLERANCE = 5e-7 + 1e-12
#: The line of report.md that records its figures' format (read back when the report is rebuilt).
FIGURE_FORMAT_LINE = re.compile(r"^Figure format: `(\w+)`", re.MULTILINE)
FIGURE_FORMAT_NOTES: dict[str, str] = {
    "png": "embedded below",
    "svg": "vector, embedded below",
    "pdf": "vector, linked below: markdown cannot embed a PDF; "
    "`harness report RUN --figure-format png` gives embeddable figures",
}
ID_IMAGES = 8  # columns of the ID mask grid
OOD_IMAGES = 4  # images per row of the OOD background-probability grid
BG_STAT_IMAGES = 256  # images per set behind the mean P(background) quoted in the grid's row labels

# One colour per role, so that every ROC figure reads the same way: base, Eq. 7, z-score fusion.
ROLE_COLOURS: dict[str | None, str] = {
    None: plots.OKABE_ITO["blue"],
    "_dfb": plots.OKABE_ITO["vermillion"],
    "_dfbz": plots.OKABE_ITO["bluish_green"],
}

PerturbedFn = Callable[[Postprocessor, str, str], Outputs]


class ReportConsistencyError(RuntimeError):
    """A number recomputed for the report disagrees with the run's results table."""


@dataclass
class Section:
    """One part of report.md: a heading, its figure(s) with captions, or why it was skipped."""

    heading: str
    figures: list[tuple[Path, str]] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class RunView:
    """What the report needs from a finished run, opened once and shared by every figure."""

    run_dir: Path
    pipeline: Any  # harness.run.Pipeline, imported lazily so that harness.run may import this module
    nets: dict[str, Any]
    outputs: dict[str, SetOutputs]
    record: dict[str, Any]
    rows: list[dict[str, Any]]
    detector_reports: list[dict[str, Any]]
    csv_rows: list[dict[str, Any]]
    fpr_convention: str
    overrides: dict[str, dict[str, object]]
    perturbed: PerturbedFn
    _fitted: dict[str, tuple[Postprocessor, SetOutputs]] = field(default_factory=dict)

    @property
    def detectors(self) -> list[str]:
        """Detectors of the table, in its order."""
        seen: list[str] = []
        for row in self.rows:
            if row["detector"] not in seen:
                seen.append(str(row["detector"]))
        return seen

    @property
    def label(self) -> str:
        """benchmark / network / seed: which run a figure shows."""
        first = self.rows[0] if self.rows else {}
        settings = self.record.get("settings", {})
        benchmark = first.get("benchmark") or self.record.get("benchmark", {}).get("name", "?")
        network = first.get("network") or self.record.get("network", "?")
        return f"{benchmark} / {network} / seed {first.get('seed', settings.get('seed', '?'))}"

    @property
    def footnote(self) -> str:
        """The line under every figure: the run and the FPR convention its table uses."""
        convention = CONVENTION_TEXT.get(self.fpr_convention, self.fpr_convention)
        return f"run {self.label}  ·  FPR convention: {self.fpr_convention} ({convention})"

    def table_value(self, detector: str, dataset: str, metric: str = "auroc") -> float | None:
        """A metric of the results table (``results.json``, full precision), or None when absent."""
        for row in self.rows:
            if row["detector"] == detector and row["dataset"] == dataset:
                return float(row[metric])
        return None

    def fitted(self, name: str) -> tuple[Postprocessor, SetOutputs]:
        """A detector built and fitted exactly as the run's evaluation did, with the outputs it read."""
        if name not in self._fitted:
            self._fitted[name] = fit_detector(
                name, self.outputs, overrides=self.overrides, perturbed=self.perturbed
            )
        return self._fitted[name]


# ------------------------------------------------------------------------------------------ numbers
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
    rows: Sequence[Mapping[str, object]],
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


def _check(value: float, expected: float | None, what: str) -> None:
    if expected is not None and abs(value - expected) > TABLE_TOLERANCE:
        raise ReportConsistencyError(f"{what}: recomputed {value!r}, results.json has {expected!r}")


# ------------------------------------------------------------------------------------------ opening
def run_overrides(pipeline: Any, record: Mapping[str, Any]) -> dict[str, dict[str, object]]:
    """Per-detector settings the run evaluated with: its foreground choice plus any searched values."""
    overrides = {name: dict(values) for name, values in pipeline.detector_overrides().items()}
    for name, info in (record.get("search") or {}).items():
        overrides.setdefault(name, {}).update(dict(info.get("chosen") or {}))
    return overrides


def open_run(run_dir: str | Path, reporter: Reporter | None = None) -> RunView:
    """Re-open a finished run read-only: networks, cached outputs, results and settings."""
    from dfb_ood.harness.run import Pipeline

    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file() and not results_path.is_symlink():
        raise FileNotFoundError(f"{run_dir} has no results.json; run `harness bench --out {run_dir}` first")
    pipeline = Pipeline.from_run_dir(run_dir, reporter)  # refuses links planted in the run folder
    check_results_intact(run_dir)  # a hand-edited results file is not reported as the run's results
    nets, outputs = pipeline.artifacts()
    results = read_json(results_path, follow_symlinks=False)
    record = read_json(run_dir / "run.json", follow_symlinks=False)
    return RunView(
        run_dir=run_dir,
        pipeline=pipeline,
        nets=nets,
        outputs=outputs,
        record=record,
        rows=list(results["rows"]),
        detector_reports=list(results.get("detectors", [])),
        csv_rows=read_csv(run_dir / "results.csv") if (run_dir / "results.csv").is_file() else [],
        fpr_convention=str(results.get("fpr_convention") or pipeline.settings.fpr_convention),
        overrides=run_overrides(pipeline, record),
        perturbed=pipeline.perturbed_outputs(nets),
    )


def _ood_names(view: RunView) -> list[str]:
    """OOD test sets, near before far (each group in benchmark order)."""
    groups = next(iter(view.outputs.values())).groups
    return sorted(groups, key=lambda name: groups[name] != "near")


def _dfb_variants(view: RunView) -> list[str]:
    return [d for d in view.detectors if registry.split_variant(d)[1] is not None]


def _title_case(name: str) -> str:
    return name.replace("_", " ")


# ------------------------------------------------------------------------------------------ figures
def figure_fg_bg(view: RunView, out_dir: Path, figure_format: str = "png") -> Section:
    """Foreground term vs background logit, ID test against each OOD set (the paper's Fig. 4)."""
    section = Section("Foreground and background scores (Fig. 4)")
    variants = _dfb_variants(view)
    if not variants:
        section.skipped = (
            "this run has no DFB variant (`_dfb` / `_dfbz`), so there is no background score to show."
        )
        return section
    name = "energy_dfb" if "energy_dfb" in variants else variants[0]
    detector, sets = view.fitted(name)
    assert isinstance(detector, DFBWrapper)
    id_fg, _, _ = detector.fusion_terms(sets.test)
    id_bg = sets.test.split_background()[1]
    base = detector.base.name
    zscored = detector.fusion == "zscore"
    source = "the classifier's K logits" if detector.foreground == "classifier" else "the first K logits"
    rows = {
        "fg": f"foreground score S_f = {base} on {source}{' (z-scored)' if zscored else ''} (a.u.)",
        "bg": "background logit S_b (a.u.)",
    }
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    notes: dict[str, dict[str, str]] = {}
    for ood in _ood_names(view):
        fg, _, _ = detector.fusion_terms(sets.ood[ood])
        bg = sets.ood[ood].split_background()[1]
        panels[ood] = {"fg": (id_fg, fg), "bg": (id_bg, bg)}
        fused = view.table_value(name, ood)
        notes[ood] = {
            "fg": f"S_f alone AUROC {100 * auroc(id_fg, fg):.1f}%",
            "bg": f"S_b alone AUROC {100 * auroc(id_bg, bg):.1f}%"
            + (f"; {name} {100 * fused:.1f}%" if fused is not None else ""),
        }
    path = out_dir / f"fg_bg_distributions.{figure_format}"
    where = (
        "the K-class classifier's logits"
        if detector.foreground == "classifier"
        else "the DFB net's first K logits"
    )
    fusion = (
        f"fused score = z(S_f) + {detector.bg_weight:g} z(S_b)"
        if zscored
        else f"fused score = S_f + {'log(S_b)' if detector.fusion_kind == 'softmax' else 'S_b'} / T, "
        f"T = {detector.fusion_temperature:g}"
    )
    plots.score_histograms(
        panels,
        rows,
        path,
        title=f"{name}: foreground vs background scores, ID test vs each OOD set\n({fusion}; "
        "higher = more in-distribution)",
        footnote=view.footnote,
        notes=notes,
    )
    section.figures.append(
        (
            path,
            f"Distributions of `{name}`'s two terms on ID test (filled) and each OOD set (outline): top, "
            f"the foreground score ({base} on {where}); bottom, the background "
            f"logit S_b. Panel titles give each term's AUROC alone and the fused detector's ({fusion}). "
            "A background term helps only where OOD images have lower S_b than ID images.",
        )
    )
    return section


def figure_rocs(view: RunView, out_dir: Path, figure_format: str = "png") -> Section:
    """ROC curves per OOD set of each base detector next to its DFB variants, AUROC in the legend."""
    section = Section("ROC curves: base detector vs its DFB variants")
    bases: dict[str, list[str]] = {}
    for name in _dfb_variants(view):
        base = registry.split_variant(name)[0]
        bases.setdefault(base, [base] if base in view.detectors else []).append(name)
    if not bases:
        section.skipped = "this run has no DFB variant (`_dfb` / `_dfbz`) to compare with its base detector."
        return section
    for base, names in bases.items():
        curves: dict[str, list[plots.Curve]] = {}
        for name in names:
            suffix = registry.split_variant(name)[1]
            detector, sets = view.fitted(name)
            id_scores = detector.score(sets.test)
            for ood in _ood_names(view):
                ood_scores = detector.score(sets.ood[ood])
                area = auroc(id_scores, ood_scores)
                _check(area, view.table_value(name, ood), f"AUROC of {name} on {ood}")
                fpr, tpr = roc_curve(id_scores, ood_scores)
                net = NETWORK_LABELS.get(_network_label(view, name), "")
                curve = plots.Curve(f"{name} ({net})", fpr, tpr, area, name != base, ROLE_COLOURS[suffix])
                curves.setdefault(ood, []).append(curve)
        path = out_dir / f"roc_{base}.{figure_format}"
        plots.roc_panels(
            curves,
            path,
            title=f"ROC curves of {', '.join(names)} (ID = positive class)",
            footnote=view.footnote,
            fpr_convention=view.fpr_convention,
        )
        missing = "" if base in view.detectors else f" (`{base}` itself is not in this run)"
        section.figures.append(
            (
                path,
                f"ROC curves of {', '.join(f'`{n}`' for n in names)}{missing}, one panel per OOD set; "
                "x: fraction of OOD images accepted as ID, y: fraction of ID images accepted. Dashed: "
                "the K-class classifier; solid: the DFB net. The dash-dotted line marks where the "
                "table's FPR@95 is read.",
            )
        )
    return section


def _network_label(view: RunView, name: str) -> str:
    for row in view.rows:
        if row["detector"] == name:
            return str(row.get("detector_network", ""))
    return network_of(name)


@torch.no_grad()
def background_probability(view: RunView, images: torch.Tensor) -> np.ndarray:
    """The DFB net's per-pixel P(background) (softmax over the K+1 dense logits, channel K), (N, H, W)."""
    from dfb_ood.harness.augment import evaluation_batches

    net = view.nets[DFB]
    device = next(net.parameters()).device
    pipeline = view.pipeline  # its normalisation: a pretrained network's own, else the benchmark's
    probs = []
    batches = evaluation_batches(
        images, mean=pipeline.mean, std=pipeline.std, size=pipeline.eval_size, device=device, batch_size=128
    )
    for _, batch in batches:
        logits = net.dense(batch).float()
        probs.append(torch.softmax(logits, dim=1)[:, net.num_classes].cpu().numpy())
    return np.concatenate(probs)


def _spread(count: int, total: int) -> np.ndarray:
    return np.unique(np.linspace(0, total - 1, num=min(count, total)).astype(int))


def figure_masks(view: RunView, out_dir: Path, figure_format: str = "png") -> Section:
    """ID training images with CAMs, pseudo masks and the trained DFB net's P(background) (App. A.1)."""
    from dfb_ood.harness.masks import compute_cams

    section = Section("Pseudo masks of ID training images (App. A.1)")
    masks_path = view.run_dir / "masks.npy"
    if not masks_path.is_file() or DFB not in view.nets:
        section.skipped = (
            "this run has no pseudo masks (`masks.npy`): no detector needed the DFB net, "
            "so stages 2-3 did not run."
        )
        return section
    pipeline = view.pipeline
    images, labels = pipeline.train_images()  # a streamed set decodes only the rows shown
    masks = np.load(masks_path, mmap_mode="r")
    # Round-robin over classes, so every class appears before any repeats.
    by_class = [np.flatnonzero(labels == c) for c in range(pipeline.benchmark.num_classes)]
    order = [
        int(ids[i]) for i in range(max(len(ids) for ids in by_class)) for ids in by_class if i < len(ids)
    ]
    index = np.array(order[:ID_IMAGES])
    chosen = images[index]
    cams = compute_cams(
        view.nets[CLASSIFIER],
        chosen,
        torch.from_numpy(labels[index]),
        pipeline.recipe.cam,
        mean=pipeline.mean,
        std=pipeline.std,
        size=pipeline.eval_size,
        device=next(view.nets[CLASSIFIER].parameters()).device,
    ).numpy()
    probs = background_probability(view, chosen)
    names = pipeline.benchmark.class_names
    cam = pipeline.recipe.cam
    path = out_dir / f"masks_id.{figure_format}"
    height, width = chosen.shape[-2:]
    plots.mask_grid(
        chosen.permute(0, 2, 3, 1).numpy(),
        cams,
        np.asarray(masks[index]),
        probs,
        [f"{names[int(labels[i])]} #{int(i)}" for i in index],
        pipeline.benchmark.num_classes,
        path,
        title=f"ID training images ({height}x{width} px): CAM, pseudo mask (theta {cam.theta}) "
        "and the trained DFB net's P(background)",
        footnote=view.footnote,
    )
    masks_json = view.run_dir / "masks.json"
    info = read_json(masks_json, follow_symlinks=False) if masks_json.is_file() else {}
    stats = []
    if "mean_foreground" in info:
        stats.append(
            f"Over all {info.get('count', '?')} masks, "
            f"{100 * info['mean_foreground']:.1f}% of pixels are foreground"
        )
    truth = info.get("vs_true_objects")
    if truth:
        stats.append("against the true objects: " + ", ".join(f"{k} {v:.2f}" for k, v in truth.items()))
    section.figures.append(
        (
            path,
            "Rows: ID training image; its CAM for the true class (recomputed with the run's CAM settings, "
            f"scales {list(cam.scales)}, flip {cam.flip}, sigma {cam.sigma}); the pseudo mask stored in "
            "`masks.npy` that the DFB net was trained on (foreground where CAM > theta); the trained DFB "
            "net's per-pixel P(background) on the same image." + (f" {'; '.join(stats)}." if stats else ""),
        )
    )
    return section


def figure_bg_probability(view: RunView, out_dir: Path, figure_format: str = "png") -> Section:
    """The DFB net's per-pixel P(background) on a few ID-test and OOD images, one row per set (Fig. 1)."""
    section = Section("Background probability on OOD images (Fig. 1's idea)")
    if DFB not in view.nets:
        section.skipped = (
            "this run has no DFB net (no detector needed it), so there is no background probability."
        )
        return section
    pipeline = view.pipeline
    rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    stats: list[str] = []
    groups = view.outputs[DFB].groups
    for set_name in ["test", *_ood_names(view)]:
        images, _ = pipeline.eval_images(set_name)  # a streamed set decodes only the rows sampled
        sample = images[_spread(BG_STAT_IMAGES, images.shape[0])]
        probs = background_probability(view, sample)
        shown = _spread(OOD_IMAGES, sample.shape[0])
        mean = float(probs.mean())
        label = "ID test" if set_name == "test" else f"{set_name} ({groups.get(set_name, 'far')})"
        stats.append(f"{markdown_escape(label)} {mean:.2f}")
        rows.append(
            (f"{label}\nmean P(bg) {mean:.2f}", sample[shown].permute(0, 2, 3, 1).numpy(), probs[shown])
        )
    path = out_dir / f"bg_probability_ood.{figure_format}"
    plots.background_probability_grid(
        rows,
        path,
        title="DFB net: per-pixel P(background) (softmax over K+1 dense logits, channel K), "
        "ID test vs each OOD set",
        footnote=view.footnote,
    )
    section.figures.append(
        (
            path,
            "Each row: a few images of one set, each followed by the DFB net's per-pixel probability of "
            f"the background class. Mean P(bg) over up to {BG_STAT_IMAGES} images per set: "
            + ", ".join(stats)
            + ". A background score detects OOD images whose pixels look less like ID background, "
            "i.e. lower P(bg) than ID test.",
        )
    )
    return section


def figure_temperature_sweep(view: RunView, out_dir: Path, figure_format: str = "png") -> Section:
    """Near/far AUROC of each ``_dfb`` variant against T, checked against the table at the run's T."""
    section = Section("Fusion temperature sweep (Fig. 6)")
    names = [d for d in view.detectors if registry.split_variant(d)[1] == "_dfb"]
    if not names:
        section.skipped = "this run has no Eq. 7 variant (`_dfb`); only those have a fusion temperature T."
        return section
    used = {name: table_temperature(name, view.overrides) for name in names}
    temperatures = sorted(set(SWEEP_TEMPERATURES) | set(used.values()))
    sweep = temperature_sweep(
        names,
        view.outputs,
        temperatures=temperatures,
        fpr_convention=view.fpr_convention,
        overrides=view.overrides,
        perturbed=view.perturbed,
    )
    check_sweep(sweep, view.rows, used)
    if view.csv_rows:
        check_sweep(sweep, view.csv_rows, used, tolerance=CSV_TOLERANCE, source="results.csv")
    curves = {
        name: {group: [per_t[t][group] for t in temperatures] for group in per_t[temperatures[0]]}
        for name, per_t in sweep.items()
    }
    references = {}
    if "bg" in view.detectors:
        references["bg alone (the T -> 0 limit)"] = {
            group: value
            for group in ("near", "far")
            if (value := view.table_value("bg", f"{group}_mean")) is not None
        }
    distinct = sorted(set(used.values()))
    path = out_dir / f"temperature_sweep.{figure_format}"
    plots.temperature_sweep_plot(
        temperatures,
        curves,
        path,
        table_temperatures=used,
        references=references,
        title="Eq. 7 fusion S_f + S_b / T (log S_b for softmax-type bases): mean AUROC vs temperature T",
        footnote=view.footnote,
    )
    at = ", ".join(f"`{n}` T={t:g}" for n, t in used.items()) if len(distinct) > 1 else f"T = {distinct[0]:g}"
    section.figures.append(
        (
            path,
            "Near- and far-OOD mean AUROC of every `_dfb` detector for T in "
            f"{', '.join(f'{t:g}' for t in temperatures)}, "
            "recomputed from the cached outputs. Small T lets the background logit dominate (dashed: `bg` "
            "alone), large T the foreground score; a curve lying on the `bg` line at every T is dominated "
            "by the background term. The values at the table's temperature "
            f"({at}) are checked to equal `results.json` (within {TABLE_TOLERANCE:g}) and `results.csv`.",
        )
    )
    return section


def figure_auroc_bars(view: RunView, out_dir: Path, figure_format: str = "png") -> Section:
    """Near/far mean AUROC of every detector in the table, DFB-net detectors hatched."""
    section = Section("Near/far AUROC of every detector")
    order: list[str] = []
    for name in view.detectors:  # each base next to its variants, in the table's order of bases
        base = registry.split_variant(name)[0] if name in registry.available() else name
        for candidate in [base, f"{base}_dfb", f"{base}_dfbz", name]:
            if candidate in view.detectors and candidate not in order:
                order.append(candidate)
    values = {
        group: [view.table_value(name, f"{group}_mean") for name in order]
        for group in ("near", "far")
        if any(view.table_value(name, f"{group}_mean") is not None for name in order)
    }
    dfb = [_network_label(view, name) != CLASSIFIER for name in order]
    path = out_dir / f"auroc_bars.{figure_format}"
    plots.auroc_bars(
        order,
        values,
        dfb,
        path,
        title="Near- and far-OOD mean AUROC per detector (higher = better)",
        footnote=view.footnote,
    )
    section.figures.append(
        (
            path,
            "Mean AUROC over the near- and far-OOD sets, from `results.json`. Hatched, outlined bars read "
            "the DFB net (`_dfb`, `_dfbz`, `bg`); plain bars the K-class classifier. "
            "The dotted line is chance.",
        )
    )
    return section


def figure_tsne(view: RunView, out_dir: Path, figure_format: str = "png") -> Section:
    """A t-SNE of both networks' cached pooled features, ID test and OOD test (Fig. 5), bounded sample."""
    from dfb_ood.harness import tsne

    section = Section("t-SNE of pooled features or logits (Fig. 5)")
    if DFB not in view.outputs or CLASSIFIER not in view.outputs:
        section.skipped = "this run has no DFB net (no detector needed it), so there is nothing to compare."
        return section
    ood = _ood_names(view)
    groups = view.outputs[CLASSIFIER].groups
    features = tsne.FeatureSets(
        class_names=tuple(view.pipeline.benchmark.class_names),
        labels=np.asarray(view.outputs[CLASSIFIER].test.labels),
        test={kind: view.outputs[kind].test.features for kind in (CLASSIFIER, DFB)},
        ood={
            kind: {name: view.outputs[kind].ood[name].features for name in ood} for kind in (CLASSIFIER, DFB)
        },
        groups={name: groups[name] for name in ood},
        label=view.label,
        test_logits={kind: view.outputs[kind].test.logits for kind in (CLASSIFIER, DFB)},
        ood_logits={
            kind: {name: view.outputs[kind].ood[name].logits for name in ood} for kind in (CLASSIFIER, DFB)
        },
    )
    path = out_dir / f"tsne.{figure_format}"
    space = features.space("auto")
    drawn = tsne.draw_tsne(features, path, sample=tsne.DEFAULT_SAMPLE, seed=0, space=space)
    why = (
        " The two networks share one frozen backbone, so their pooled features are identical; the "
        "figure embeds their logits instead, where the DFB net's background logit is the difference."
        if space == "logits"
        else ""
    )
    shown = ", ".join(f"{count} {markdown_escape(name)}" for name, count in drawn.counts.items())
    section.figures.append(
        (
            path,
            f"t-SNE (scikit-learn, init pca, perplexity {drawn.perplexity:.3g}, seed 0) of the "
            f"{tsne.PREPROCESSING[space]} of the same images in both panels, read from the cached outputs: "
            f"{shown} images, drawn evenly over the classes and OOD sets. Left the K-class classifier, "
            "right the DFB net; ID test images coloured by class, OOD images grey/black (x near, "
            "triangle far). Distances between clusters in a t-SNE are not to scale; "
            f"harness figure tsne {markdown_escape(view.run_dir)} --sample N --seed S redraws it with "
            "another sample." + why,
        )
    )
    return section


#: Each draws one section's figures into a folder, in a format of :data:`harness.plots.FIGURE_FORMATS`.
FIGURES: tuple[Callable[[RunView, Path, str], Section], ...] = (
    figure_auroc_bars,
    figure_fg_bg,
    figure_rocs,
    figure_temperature_sweep,
    figure_masks,
    figure_bg_probability,
    figure_tsne,
)


# ------------------------------------------------------------------------------------------ markdown
def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def results_table(view: RunView) -> str:
    """The markdown results table: near/far AUROC and FPR@95 per detector, in percent."""
    searched = any(row.get("hyperparameters") for row in view.rows)
    header = ["detector", "net", "near AUROC", "near FPR95", "far AUROC", "far FPR95", "ID acc"]
    header += ["searched hyper-parameters"] if searched else []
    aligns = ["---"] + ["---:"] * 6 + (["---"] if searched else [])
    rows = []
    for name in view.detectors:
        by_set = {str(r["dataset"]): r for r in view.rows if r["detector"] == name}
        any_row = next(iter(by_set.values()))
        label = (
            f"**{markdown_escape(name)}**"
            if _network_label(view, name) != CLASSIFIER
            else markdown_escape(name)
        )
        cells = [
            label,
            NETWORK_LABELS.get(str(any_row.get("detector_network", "")), ""),
            _percent(view.table_value(name, "near_mean")),
            _percent(view.table_value(name, "near_mean", "fpr95")),
            _percent(view.table_value(name, "far_mean")),
            _percent(view.table_value(name, "far_mean", "fpr95")),
            _percent(float(any_row["id_accuracy"])),
        ]
        cells += [markdown_escape(any_row.get("hyperparameters") or "")] if searched else []
        rows.append(cells)
    return markdown_table(header, aligns, rows)


def per_set_table(view: RunView) -> str:
    """AUROC per OOD set (percent), one row per detector."""
    sets = _ood_names(view)
    header = ["detector", *(markdown_escape(name) for name in sets)]
    rows = [
        [markdown_escape(name), *(_percent(view.table_value(name, s)) for s in sets)]
        for name in view.detectors
    ]
    return markdown_table(header, ["---"] + ["---:"] * len(sets), rows)


def _settings_line(view: RunView) -> str:
    """The run's settings in one sentence; every value read from a file is Markdown-escaped."""
    record = view.record
    settings = record.get("settings", {})
    md = markdown_escape
    parts = [
        f"benchmark {md(record.get('benchmark', {}).get('name', settings.get('benchmark')))}",
        f"network {md(record.get('network'))}",
        f"recipe {md(settings.get('recipe'))} "
        f"({md(record.get('recipe', {}).get('steps', '?'))} steps per stage)",
        f"seed {md(settings.get('seed'))}",
        f"eval size {md(record.get('eval_size'))} px",
        f"device {md(record.get('device'))}",
        f"DFB foreground from the {md(settings.get('foreground', 'dfb'))} net",
        f"hyper-parameter search {'on' if settings.get('search') else 'off'}",
        f"FPR convention {md(view.fpr_convention)}",
    ]
    total = (record.get("timings_s") or {}).get("total")
    if total is not None:
        parts.append(f"last bench call {total:.0f} s")
    commit = record.get("git_commit")
    if commit:
        parts.append(f"commit {md(str(commit)[:10])}")
    return "Settings: " + ", ".join(parts) + "."


def _notes(view: RunView) -> list[str]:
    notes = []
    for report in view.detector_reports:
        for note in report.get("notes", []):
            notes.append(note if str(note).startswith(report["name"]) else f"{report['name']}: {note}")
        if report.get("clamped"):
            counts = ", ".join(f"{count} {name}" for name, count in report["clamped"].items())
            notes.append(f"{report['name']}: background logit clamped before the log on {counts}")
    return [markdown_escape(note) for note in notes]


def render_markdown(
    view: RunView, sections: Sequence[Section], out_dir: Path, figure_format: str = "png"
) -> str:
    """report.md's text; figure links are relative to ``out_dir`` and only to files that exist.

    PNG and SVG figures are embedded (``![...](...)``); a PDF is a plain link with its caption, since
    markdown viewers do not show one inline. The format is stated once, on the line
    :data:`FIGURE_FORMAT_LINE` reads back.
    """
    convention = CONVENTION_TEXT.get(view.fpr_convention, view.fpr_convention)
    lines = [
        f"# DFB report: {markdown_escape(view.label)}",
        "",
        f"Run directory: {markdown_escape(view.run_dir)}.",
        "",
        _settings_line(view),
        "",
        "## Results",
        "",
        results_table(view),
        "",
        f"Percent. {convention}. Higher AUROC, lower FPR95 = better. net: K = the K-class classifier, "
        'K+1 = the DFB net, "K, bg" = classifier foreground + DFB background. **Bold**: detectors that '
        "read the DFB net. near/far = mean over that group's OOD sets.",
        "",
        "AUROC per OOD set (%):",
        "",
        per_set_table(view),
        "",
    ]
    notes = _notes(view)
    if notes:
        lines += ["Notes from the evaluation:", ""] + [f"- {note}" for note in notes] + [""]
    lines += [
        "## Figures",
        "",
        f"Figure format: `{figure_format}` ({FIGURE_FORMAT_NOTES.get(figure_format, 'linked below')}).",
        "",
    ]
    for section in sections:
        lines += [f"### {section.heading}", ""]
        written = [(path, caption) for path, caption in section.figures if path.is_file()]
        if section.skipped or not written:
            lines += [f"*Skipped: {section.skipped or 'no figure was written.'}*", ""]
            continue
        for path, caption in written:
            link = urllib.parse.quote(Path(os.path.relpath(path, out_dir)).as_posix())
            stem = path.stem  # our own figure names (detectors from the registry): no markup in them
            if path.suffix.lower() == ".pdf":
                lines += [f"[{stem} (PDF)]({link})", "", f"*{caption}*", ""]
            else:
                lines += [f"![{stem}]({link})", "", f"*{caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def recorded_figure_format(out_dir: str | Path) -> str | None:
    """The figure format of the report.md already in ``out_dir``, or None when there is none."""
    path = Path(out_dir) / "report.md"
    if path.is_symlink() or not path.is_file():
        return None  # a link is not read through (and is replaced when report.md is written)
    match = FIGURE_FORMAT_LINE.search(read_regular_text(path))
    return match.group(1) if match and match.group(1) in plots.FIGURE_FORMATS else None


def write_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    reporter: Reporter | None = None,
    figure_format: str | None = None,
) -> Path:
    """Write every figure and ``report.md`` for a finished run; returns the path of ``report.md``.

    ``out_dir`` defaults to ``run_dir/report``. Figures that need something the run lacks (a DFB
    variant, the DFB net, pseudo masks) are skipped, and report.md says why instead of linking a
    missing file. The run directory itself is only read. ``figure_format`` is one of
    :data:`harness.plots.FIGURE_FORMATS`; None keeps the format of the report already in
    ``out_dir`` (a rebuild after new results looks like the report it replaces), else PNG.
    Figures of another format left from an earlier report are not deleted, but report.md links
    only the new ones.
    """
    run_dir = Path(run_dir)
    if out_dir is None:  # the run's own report/: a plain folder, never a link planted in the run
        own_folder(run_dir, "report", create=False, hint=", or pass --out to write the report elsewhere")
    if figure_format is None:
        figure_format = (
            recorded_figure_format(Path(out_dir) if out_dir is not None else run_dir / "report") or "png"
        )
    if figure_format not in plots.FIGURE_FORMATS:
        raise ValueError(
            f"figure format {figure_format!r} is not one of {', '.join(plots.FIGURE_FORMATS)}; "
            "e.g. --figure-format png"
        )
    reporter = reporter or Reporter(quiet=True)
    # The whole report under the run's shared lock: a bench that starts meanwhile (--overwrite,
    # more steps) waits for it, instead of the report of the old networks landing in the new run.
    with read_lock(run_dir, wait_s=READ_WAIT_S, fix=READ_FIX):
        view = open_run(run_dir, reporter)
        if out_dir is None:
            out = own_folder(run_dir, "report", hint=", or pass --out to write the report elsewhere")
            assert out is not None
        else:
            out = Path(out_dir)
        check_report_folder(out, run_dir)  # a report.md or figure of the user's is never replaced
        out.mkdir(parents=True, exist_ok=True)
        sections = []
        for make in FIGURES:
            section = make(view, out, figure_format)
            for path, _ in section.figures:
                reporter.message(f"report: wrote {path}")
            if section.skipped:
                reporter.message(f"report: skipped {section.heading.lower()}: {section.skipped}")
            sections.append(section)
        path = out / "report.md"
        write_text(path, render_markdown(view, sections, out, figure_format))
        record_report(out, run_dir)
    reporter.message(f"report: {path}")
    return path


__all__ = [
    "ReportConsistencyError",
    "RunView",
    "Section",
    "check_sweep",
    "fit_detector",
    "open_run",
    "recorded_figure_format",
    "roc_curve",
    "table_temperature",
    "temperature_sweep",
    "write_report",
]
