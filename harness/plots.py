"""Figures written into run directories (matplotlib, Agg backend: no display needed).

Each figure is saved as PNG, PDF or SVG, chosen by the path's ending (:data:`FIGURE_FORMATS`).
Legends never cover data: a figure has at most one legend, the figure's own, placed outside every
panel (:func:`shared_legend`), and panels that share curves share its entries. Every drawing
function returns the saved (and closed) figure, so that tests can measure where things landed.

Saving is :mod:`harness.figure_files`, the shared colours, legend and footnote
:mod:`harness.figure_style`; both are named here too (``plots.FIGURE_FORMATS``, ``plots.OKABE_ITO``),
as this module's callers read them.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dfb_ood.harness.figure_files import FIGURE_FORMATS, figure_format_of, save_figure  # noqa: E402
from dfb_ood.harness.figure_style import (  # noqa: E402
    DFB_HATCH,
    ID_COLOUR,
    LEGEND_WIDTH,
    MARKERS,
    OKABE_ITO,
    OOD_COLOUR,
    OOD_STYLES,
    PALETTE,
    add_footnote,
    auroc_panel,
    class_colours,
    colorbar,
    family_and_style,
    finish_auroc_curves,
    grid_shape,
    image_panel,
    point_legend_handles,
    shared_legend,
)


def mask_preview(
    images: np.ndarray,
    cams: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    background_label: int,
    path: str | Path,
    title: str,
) -> plt.Figure:
    """A grid of ID training images with their CAM heat maps and pseudo masks (the paper's App. A.1).

    ``images`` uint8 (N, H, W, 3); ``cams`` (N, H, W) in [0, 1]; ``masks`` uint8 (N, H, W) whose
    ``background_label`` marks background. Three rows: image, CAM, binary mask (foreground white).
    """
    count = images.shape[0]
    fig, axes = plt.subplots(3, count, figsize=(1.3 * count, 4.4), squeeze=False)
    for i in range(count):
        fg = masks[i] != background_label
        panels = [
            (images[i], None, str(class_names[int(labels[i])]) if labels[i] >= 0 else "OOD"),
            (cams[i], "viridis", f"CAM max {cams[i].max():.2f}"),
            (fg.astype(np.float32), "gray", f"fg {fg.mean():.0%}"),
        ]
        for row, (panel, cmap, text) in enumerate(panels):
            axis = axes[row, i]
            axis.imshow(
                panel, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None, interpolation="nearest"
            )
            axis.set_title(text, fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=8)
    axes[1, 0].set_ylabel("CAM [0,1]", fontsize=8)
    axes[2, 0].set_ylabel("mask (fg white)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def score_histograms(
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    rows: dict[str, str],
    path: str | Path,
    *,
    title: str,
    footnote: str,
    notes: dict[str, dict[str, str]] | None = None,
    bins: int = 40,
) -> plt.Figure:
    """ID-vs-OOD histograms: one column per OOD set, one row per score (the paper's Fig. 4).

    ``panels`` maps an OOD set to ``{row key: (id scores, ood scores)}``; ``rows`` maps each row key
    to its x-axis label (with units). ``notes`` adds a line of text (e.g. that score's AUROC) per
    panel; ``bins`` is the most bins a panel gets. Bins are shared by ID and OOD within a panel so
    their heights compare directly, and heights are percent of each set so sets of different sizes
    compare too. One legend under the panels says which outline is which; set sizes that differ
    between panels go into the panel titles instead.
    """
    from matplotlib.ticker import MaxNLocator

    names = list(panels)
    id_sizes = sorted({np.asarray(panels[n][k][0]).size for n in names for k in rows})
    ood_sizes = sorted({np.asarray(panels[n][k][1]).size for n in names for k in rows})
    sizes_in_titles = len(id_sizes) > 1 or len(ood_sizes) > 1  # else the legend says them once
    id_label = "ID test" + ("" if sizes_in_titles else f" (n={id_sizes[0]})")
    ood_label = "OOD: the panel's set" + ("" if sizes_in_titles else f" (n={ood_sizes[0]})")
    keys = list(rows)
    blocks, cols = grid_shape(len(names), 4)
    fig, axes = plt.subplots(
        blocks * len(keys),
        cols,
        figsize=(3.3 * cols + LEGEND_WIDTH, 2.5 * blocks * len(keys)),
        squeeze=False,
        layout="constrained",
    )
    for index, name in enumerate(names):
        block, col = divmod(index, cols)
        for r, key in enumerate(keys):
            axis = axes[block * len(keys) + r, col]
            id_scores, ood_scores = (np.asarray(a, dtype=np.float64) for a in panels[name][key])
            both = np.concatenate([id_scores, ood_scores])
            count = int(np.clip(1.5 * np.sqrt(both.size), 10, bins))  # small sets: fewer, fuller bins
            edges = np.histogram_bin_edges(both, bins=count)
            for scores, colour, label, fill in (
                (id_scores, ID_COLOUR, id_label, True),
                (ood_scores, OOD_COLOUR, ood_label, False),
            ):
                weights = np.full(scores.size, 100.0 / scores.size)
                axis.hist(
                    scores,
                    bins=edges,
                    weights=weights,
                    color=colour,
                    label=label,
                    histtype="stepfilled" if fill else "step",
                    alpha=0.45 if fill else 1.0,
                    linewidth=1.8,
                )
            axis.set_xlabel(textwrap.fill(rows[key], width=46), fontsize=8)  # long ones: not into the next
            axis.set_ylabel("images (% of set per bin)", fontsize=8)
            # Plain tick values: an offset ("1e-5+1.668e-1", ODIN at T=1000) lands on the axis label.
            axis.ticklabel_format(axis="x", style="plain", useOffset=False)
            axis.xaxis.set_major_locator(MaxNLocator(5))
            axis.tick_params(labelsize=7)
            text = (notes or {}).get(name, {}).get(key)
            heading = textwrap.fill(f"{name}: {text}" if text else name, width=46)
            if sizes_in_titles:
                heading += f"\n(n = {id_scores.size} ID, {ood_scores.size} OOD)"
            axis.set_title(heading, fontsize=8)
    for index in range(len(names), blocks * cols):
        block, col = divmod(index, cols)
        for r in range(len(keys)):
            axes[block * len(keys) + r, col].set_visible(False)
    fig.suptitle(title, fontsize=10)
    shared_legend(fig)
    add_footnote(fig, footnote)
    return save_figure(fig, path)


@dataclass(frozen=True)
class Curve:
    """One detector's ROC curve on one OOD set: ``fpr``/``tpr`` with ID as the positive class."""

    label: str
    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float
    dfb: bool  # drawn solid and thick (DFB net) or dashed (K-class classifier)
    colour: str | None = None  # None: the palette in order


def roc_panels(
    curves: dict[str, list[Curve]],
    path: str | Path,
    *,
    title: str,
    footnote: str,
    fpr_convention: str,
) -> plt.Figure:
    """ROC curves, one panel per OOD set, several detectors per panel (AUROC in the panel title).

    ``curves`` maps an OOD set to one :class:`Curve` per detector, ID being the positive class
    (x: OOD accepted as ID, y: ID accepted). DFB-net detectors are drawn solid and
    thick, the others dashed, so the pairs differ in more than colour. The operating point the
    table's FPR@95 reads is marked for the run's convention. The panels draw the same detectors,
    so one legend under them names each; each panel's AUROCs, which differ per set, are in its title.
    """
    names = list(curves)
    nrows, cols = grid_shape(len(names), 4)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(3.5 * cols + LEGEND_WIDTH, 4.4 * nrows), squeeze=False, layout="constrained"
    )
    if fpr_convention == "openood":
        reference = ("95% OOD TPR (FPR@95, OpenOOD: ID rejected here)", "x")
    else:
        reference = ("95% ID TPR (FPR@95, paper: OOD accepted here)", "y")
    for index, name in enumerate(names):
        axis = axes.flat[index]
        axis.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle=":", label="chance (AUROC 50%)")
        line = axis.axvline if reference[1] == "x" else axis.axhline
        line(
            0.05 if reference[1] == "x" else 0.95,
            color="0.35",
            linewidth=0.8,
            linestyle="-.",
            label=reference[0],
        )
        for i, curve in enumerate(curves[name]):
            axis.step(
                curve.fpr,
                curve.tpr,
                where="post",
                color=curve.colour or PALETTE[i % len(PALETTE)],
                linewidth=2.0 if curve.dfb else 1.5,
                linestyle="-" if curve.dfb else "--",
                label=curve.label,
            )
        axis.set_xlim(-0.01, 1.01)
        axis.set_ylim(-0.01, 1.01)
        axis.set_xlabel("false positive rate (OOD accepted as ID)", fontsize=8)
        axis.set_ylabel("true positive rate (ID accepted)", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.25)
        areas = "".join(f"\n{curve.label}: AUROC {100 * curve.auroc:.1f}%" for curve in curves[name])
        axis.set_title(f"ID test vs {name}{areas}", fontsize=7.5)
    for index in range(len(names), nrows * cols):
        axes.flat[index].set_visible(False)
    fig.suptitle(title, fontsize=10)
    # Beside the panels: a legend inside one would hide the curves of detectors worse than chance.
    shared_legend(fig)
    add_footnote(fig, footnote)
    return save_figure(fig, path)


def mask_grid(
    images: np.ndarray,
    cams: np.ndarray,
    masks: np.ndarray,
    bg_probability: np.ndarray | None,
    captions: list[str],
    background_label: int,
    path: str | Path,
    *,
    title: str,
    footnote: str,
) -> plt.Figure:
    """ID training images, their CAMs, pseudo masks and (optionally) the DFB net's P(background).

    One column per image; rows: image, CAM in [0, 1], the pseudo mask the DFB net was trained on,
    and what the trained net predicts for the same image. Showing target and prediction side by
    side tells whether a weak DFB result comes from the masks or from what the net learned.
    """
    from matplotlib.colors import ListedColormap

    count = images.shape[0]
    rows = 4 if bg_probability is not None else 3
    fig, axes = plt.subplots(
        rows, count, figsize=(1.35 * count + 1.2, 1.45 * rows + 0.6), squeeze=False, layout="constrained"
    )
    mask_colours = ListedColormap([OKABE_ITO["black"], OKABE_ITO["orange"]])
    for i in range(count):
        image_panel(axes[0, i], images[i])
        axes[0, i].set_title(captions[i], fontsize=7)
        cam_image = image_panel(axes[1, i], cams[i], "viridis", vmin=0.0, vmax=1.0)
        foreground = masks[i] != background_label
        mask_image = image_panel(axes[2, i], foreground.astype(np.float32), mask_colours, vmin=0.0, vmax=1.0)
        axes[2, i].set_title(f"fg {foreground.mean():.0%}", fontsize=7)
        if bg_probability is not None:
            prob_image = image_panel(axes[3, i], bg_probability[i], "cividis", vmin=0.0, vmax=1.0)
            axes[3, i].set_title(f"mean {bg_probability[i].mean():.2f}", fontsize=7)
    for row, label in enumerate(["image", "CAM (0-1)", "pseudo mask", "DFB P(bg) (0-1)"][:rows]):
        axes[row, 0].set_ylabel(label, fontsize=8)
    colorbar(fig, cam_image, axes[1, :], "CAM (0-1)")
    if bg_probability is not None:
        colorbar(fig, prob_image, axes[3, :], "P(background) (0-1)")
    # The mask's two labels get a two-step colour bar, aligned with the other rows' scales.
    mask_bar = colorbar(fig, mask_image, axes[2, :], "mask label", ticks=[0.25, 0.75])
    mask_bar.ax.set_yticklabels([f"bg (K={background_label})", "class y"], fontsize=7)
    fig.suptitle(title, fontsize=10)
    add_footnote(fig, footnote)
    return save_figure(fig, path)


def background_probability_grid(
    rows: list[tuple[str, np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    title: str,
    footnote: str,
) -> plt.Figure:
    """Per set (one row each): a few images, each followed by the DFB net's per-pixel P(background).

    ``rows`` holds ``(row label, uint8 images (N, H, W, 3), probabilities (N, h, w))``; the first row
    is normally ID test, as the reference the OOD rows are read against.
    """
    count = max(images.shape[0] for _, images, _ in rows)
    fig, axes = plt.subplots(
        len(rows),
        2 * count,
        figsize=(1.25 * 2 * count + 1.6, 1.5 * len(rows) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    shown = None
    for r, (label, images, probs) in enumerate(rows):
        for i in range(2 * count):
            axes[r, i].set_visible(i < 2 * images.shape[0])
        for i in range(images.shape[0]):
            image_panel(axes[r, 2 * i], images[i])
            shown = image_panel(axes[r, 2 * i + 1], probs[i], "cividis", vmin=0.0, vmax=1.0)
            axes[r, 2 * i + 1].set_title(f"P(bg) {probs[i].mean():.2f}", fontsize=7)
            axes[r, 2 * i].set_title("image", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=7.5)
    if shown is not None:
        colorbar(fig, shown, axes[:, -1], "P(background) per pixel (0-1)")
    fig.suptitle(title, fontsize=10)
    add_footnote(fig, footnote)
    return save_figure(fig, path)


def temperature_sweep_plot(
    temperatures: list[float],
    curves: dict[str, dict[str, list[float]]],
    path: str | Path,
    *,
    table_temperatures: dict[str, float],
    references: dict[str, dict[str, float]] | None = None,
    title: str,
    footnote: str,
) -> plt.Figure:
    """AUROC (%) against the fusion temperature T, one panel per group (near, far): the paper's Fig. 6.

    ``curves`` maps a detector to ``{group: AUROC fractions per temperature}``; ``references`` maps a
    label (e.g. ``bg`` alone) to ``{group: AUROC}`` drawn as horizontal lines. Each detector's point
    at its ``table_temperatures`` entry (the T its table row used; searched runs differ per detector)
    is ringed, and a shared T also gets a vertical line.
    """
    groups = [g for g in ("near", "far") if any(g in c for c in curves.values())]
    fig, axes = plt.subplots(
        1, len(groups), figsize=(4.6 * len(groups) + LEGEND_WIDTH, 3.8), squeeze=False, layout="constrained"
    )
    shared = set(table_temperatures.values())
    for axis, group in zip(axes[0], groups):
        ringed = False
        for i, (name, per_group) in enumerate(curves.items()):
            if group in per_group and table_temperatures.get(name) in temperatures:
                at = temperatures.index(table_temperatures[name])
                axis.plot(
                    [temperatures[at]],
                    [100 * per_group[group][at]],
                    linestyle="none",
                    marker="o",
                    markersize=12,
                    markerfacecolor="none",
                    markeredgecolor="0.1",
                    markeredgewidth=1.2,
                    label=None if ringed else "the table's value (its T)",
                    zorder=3,
                )
                ringed = True
            if group in per_group:
                axis.plot(
                    temperatures,
                    100 * np.asarray(per_group[group]),
                    color=PALETTE[i % len(PALETTE)],
                    marker=MARKERS[i % len(MARKERS)],
                    linewidth=1.6,
                    markersize=5,
                    label=name,
                )
        for j, (label, values) in enumerate((references or {}).items()):
            if group in values:
                axis.axhline(
                    100 * values[group],
                    color="0.45",
                    linestyle=("--", ":", "-.")[j % 3],
                    linewidth=1.0,
                    label=label,
                )
        if len(shared) == 1:
            (value,) = shared
            axis.axvline(
                value, color="0.2", linestyle=":", linewidth=1.0, label=f"T in the table ({value:g})"
            )
        auroc_panel(axis, group, "fusion temperature T (unitless)")
    return finish_auroc_curves(fig, title, footnote, path)


def auroc_bars(
    detectors: list[str],
    values: dict[str, list[float | None]],
    dfb: list[bool],
    path: str | Path,
    *,
    title: str,
    footnote: str,
) -> plt.Figure:
    """Near and far mean AUROC (%) per detector, one panel each; DFB-net detectors hatched and outlined.

    ``values`` maps a group to one AUROC fraction (or None) per detector; ``dfb`` says which detectors
    read the DFB net. Each bar carries its value, so the chart needs no table beside it.
    """
    from matplotlib.patches import Patch

    groups = [g for g in ("near", "far") if g in values]
    x = np.arange(len(detectors))
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(max(6.0, 0.62 * len(detectors) + 1.5) + LEGEND_WIDTH, 2.9 * len(groups)),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for axis, group in zip(axes[:, 0], groups):
        heights = np.array([np.nan if v is None else 100 * v for v in values[group]])
        for i in range(len(detectors)):
            if np.isnan(heights[i]):
                continue
            axis.bar(
                x[i],
                heights[i],
                width=0.72,
                color=OOD_COLOUR if dfb[i] else ID_COLOUR,
                alpha=0.85,
                hatch=DFB_HATCH if dfb[i] else None,
                edgecolor="black" if dfb[i] else "none",
                linewidth=1.2 if dfb[i] else 0.0,
            )
            axis.text(x[i], heights[i] + 1.0, f"{heights[i]:.1f}", ha="center", va="bottom", fontsize=6.5)
        axis.axhline(50, color="0.4", linestyle=":", linewidth=1.0)
        axis.set_ylim(0, 109)
        axis.set_ylabel(f"{group}-OOD mean AUROC (%)", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(axis="y", alpha=0.3)
    shared_legend(
        fig,
        loc="outside right upper",
        handles=[
            Patch(facecolor=ID_COLOUR, alpha=0.85, label="K-class classifier"),
            Patch(
                facecolor=OOD_COLOUR,
                alpha=0.85,
                hatch=DFB_HATCH,
                edgecolor="black",
                label="DFB net (K+1): _dfb, _dfbz, bg",
            ),
            plt.Line2D([], [], color="0.4", linestyle=":", label="chance (50%)"),
        ],
    )
    bottom = axes[-1, 0]
    bottom.set_xticks(x)
    bottom.set_xticklabels(detectors, rotation=40, ha="right", fontsize=8)
    bottom.set_xlabel("detector", fontsize=8)
    fig.suptitle(title, fontsize=10)
    add_footnote(fig, footnote)
    return save_figure(fig, path)


def auroc_vs_classes(
    counts: list[int],
    curves: dict[str, dict[str, list[tuple[float, float] | None]]],
    path: str | Path,
    *,
    title: str,
    footnote: str,
) -> plt.Figure:
    """Near and far mean AUROC (%) against the number of ID classes, one panel each: the paper's Fig. 7.

    ``counts`` are the class counts on the x axis, ascending; ``curves`` maps a detector to
    ``{group: one (mean, std) AUROC fraction per count, or None where no run measured it}``. A base
    detector and its ``_dfb`` / ``_dfbz`` variants share a colour and differ in line style (solid,
    dashed, dotted), so the DFB gain at each class count reads as the gap within one colour; the
    std over runs of one count (seeds or class draws) is an error bar.
    """
    groups = [g for g in ("near", "far") if any(g in c for c in curves.values())]
    fig, axes = plt.subplots(
        1, len(groups), figsize=(4.6 * len(groups) + LEGEND_WIDTH, 3.8), squeeze=False, layout="constrained"
    )
    families: dict[str, int] = {}
    for name in curves:
        families.setdefault(family_and_style(name)[0], len(families))
    for axis, group in zip(axes[0], groups):
        for name, per_group in curves.items():
            points = per_group.get(group) or []
            xs = [c for c, p in zip(counts, points) if p is not None]
            if not xs:
                continue
            means = np.array([100 * p[0] for p in points if p is not None])
            stds = np.array([100 * p[1] for p in points if p is not None])
            family, style = family_and_style(name)
            index = families[family]
            axis.errorbar(
                xs,
                means,
                yerr=stds if stds.any() else None,
                color=PALETTE[index % len(PALETTE)],
                marker=MARKERS[index % len(MARKERS)],
                linestyle=style,
                linewidth=1.6,
                markersize=5,
                capsize=3,
                label=name,
            )
        axis.set_xticks(counts)
        axis.set_xticklabels([str(c) for c in counts], fontsize=7)
        auroc_panel(axis, group, "number of ID classes C")
    return finish_auroc_curves(fig, title, footnote, path)


def tsne_panels(
    embeddings: dict[str, np.ndarray],
    classes: np.ndarray,
    kinds: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    ood_labels: dict[str, str],
    path: str | Path,
    *,
    title: str,
    footnote: str,
) -> plt.Figure:
    """2-D embeddings of the same points side by side, one panel each (the paper's Fig. 5).

    ``embeddings`` maps a panel title to its (n, 2) points; ``classes`` (n,) is each ID point's
    class (-1 for OOD), ``kinds`` (n,) says ``"id"``, ``"near"`` or ``"far"``. ID points are coloured
    by class, OOD points drawn over them in grey and black with one marker per group
    (:data:`OOD_STYLES`), named by ``ood_labels[group]``. t-SNE axes have no units, so no ticks.
    """
    classes = np.asarray(classes)
    kinds = np.asarray(kinds)
    colours = class_colours(len(class_names))
    names = list(embeddings)
    fig, axes = plt.subplots(
        1, len(names), figsize=(4.3 * len(names) + LEGEND_WIDTH, 4.6), squeeze=False, layout="constrained"
    )
    is_id = kinds == "id"
    for axis, name in zip(axes[0], names):
        points = np.asarray(embeddings[name])
        axis.scatter(
            points[is_id, 0],
            points[is_id, 1],
            c=[colours[int(c)] for c in classes[is_id]],
            s=9,
            marker="o",
            alpha=0.8,
            linewidths=0,
        )
        for group, (marker, colour, size) in OOD_STYLES.items():
            chosen = kinds == group
            if chosen.any():
                axis.scatter(
                    points[chosen, 0],
                    points[chosen, 1],
                    c=colour,
                    s=size,
                    marker=marker,
                    linewidths=0.8,
                    zorder=3,
                )
        axis.set_title(name, fontsize=8)
        axis.set_xlabel("t-SNE 1 (no units)", fontsize=8)
        axis.set_ylabel("t-SNE 2 (no units)", fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    present = sorted({int(c) for c in classes[is_id]})
    handles = point_legend_handles(
        class_names, colours, present, [g for g in OOD_STYLES if (kinds == g).any()], ood_labels
    )
    shared_legend(fig, handles=handles)
    fig.suptitle(title, fontsize=10)
    add_footnote(fig, footnote)
    return save_figure(fig, path)


__all__ = [
    "FIGURE_FORMATS",
    "OKABE_ITO",
    "Curve",
    "auroc_bars",
    "auroc_vs_classes",
    "background_probability_grid",
    "class_colours",
    "figure_format_of",
    "mask_grid",
    "mask_preview",
    "roc_panels",
    "score_histograms",
    "temperature_sweep_plot",
    "tsne_panels",
]
