"""The report's figures, one function per section: the numbers gathered, checked, then drawn.

Why apart from report.md (:mod:`harness.report_markdown`) and the drawing (:mod:`harness.plots`):
each ``figure_*`` function knows which of a run's detectors and outputs its figure needs, skips
with a reason when the run lacks them, recomputes what it shows from the cached outputs and checks
it against the results table (:mod:`harness.report_numbers`), and leaves the pixels to plots.
:data:`FIGURES` is the report's sections in order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dfb_ood.harness import plots
from dfb_ood.harness.evaluate import CLASSIFIER, DFB
from dfb_ood.harness.io import read_json
from dfb_ood.harness.leaderboard import NETWORK_LABELS
from dfb_ood.harness.markdown import markdown_escape
from dfb_ood.harness.metrics import auroc
from dfb_ood.harness.report_numbers import (
    CSV_TOLERANCE,
    SWEEP_TEMPERATURES,
    TABLE_TOLERANCE,
    ReportConsistencyError,
    check_sweep,
    roc_curve,
    table_temperature,
    temperature_sweep,
)
from dfb_ood.harness.report_view import RunView, Section, dfb_variants, network_label, ood_names
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.dfb import DFBWrapper

ID_IMAGES = 8  # columns of the ID mask grid
OOD_IMAGES = 4  # images per row of the OOD background-probability grid
BG_STAT_IMAGES = 256  # images per set behind the mean P(background) quoted in the grid's row labels

# One colour per role, so that every ROC figure reads the same way: base, Eq. 7, z-score fusion.
ROLE_COLOURS: dict[str | None, str] = {
    None: plots.OKABE_ITO["blue"],
    "_dfb": plots.OKABE_ITO["vermillion"],
    "_dfbz": plots.OKABE_ITO["bluish_green"],
}


def _check(value: float, expected: float | None, what: str) -> None:
    if expected is not None and abs(value - expected) > TABLE_TOLERANCE:
        raise ReportConsistencyError(f"{what}: recomputed {value!r}, results.json has {expected!r}")


def _title_case(name: str) -> str:
    return name.replace("_", " ")


def figure_fg_bg(view: RunView, out_dir: Path, figure_format: str = "png") -> Section:
    """Foreground term vs background logit, ID test against each OOD set (the paper's Fig. 4)."""
    section = Section("Foreground and background scores (Fig. 4)")
    variants = dfb_variants(view)
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
    for ood in ood_names(view):
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
    for name in dfb_variants(view):
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
            for ood in ood_names(view):
                ood_scores = detector.score(sets.ood[ood])
                area = auroc(id_scores, ood_scores)
                _check(area, view.table_value(name, ood), f"AUROC of {name} on {ood}")
                fpr, tpr = roc_curve(id_scores, ood_scores)
                net = NETWORK_LABELS.get(network_label(view, name), "")
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
    for set_name in ["test", *ood_names(view)]:
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
    dfb = [network_label(view, name) != CLASSIFIER for name in order]
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
    ood = ood_names(view)
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


__all__ = [
    "FIGURES",
    "background_probability",
    "figure_auroc_bars",
    "figure_bg_probability",
    "figure_fg_bg",
    "figure_masks",
    "figure_rocs",
    "figure_temperature_sweep",
    "figure_tsne",
]
