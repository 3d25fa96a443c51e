"""The look every figure shares: Okabe & Ito's colours, one legend outside the panels, the footnote.

Why one place: a reader compares figures side by side (ID blue, OOD vermillion, DFB hatched in all
of them), and every figure states the run it shows under it, since a PNG travels without its
report. The drawing functions (:mod:`harness.plots`) take their colours, legend and panel helpers
from here.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from dfb_ood.harness.figure_files import save_figure  # noqa: E402

# Okabe & Ito's colour-blind-safe palette, defined once so that every figure agrees. Yellow is last:
# on white it is hard to see for anyone, so it is only used when seven colours are not enough.
OKABE_ITO: dict[str, str] = {
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "bluish_green": "#009E73",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
    "yellow": "#F0E442",
}
PALETTE: tuple[str, ...] = tuple(OKABE_ITO.values())
ID_COLOUR = OKABE_ITO["blue"]
OOD_COLOUR = OKABE_ITO["vermillion"]
# DFB-net detectors are marked by hatch and outline as well as colour (readable in greyscale too).
DFB_HATCH = "///"
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Class colours of a t-SNE with few classes: Okabe & Ito's without black, which marks OOD points.
CLASS_COLOURS: tuple[str, ...] = tuple(c for name, c in OKABE_ITO.items() if name != "black")
#: Most classes named one by one in a t-SNE legend; more share one entry (colour = class index).
LEGEND_CLASSES = 20
#: How a t-SNE draws each OOD group: marker, colour, marker size (points squared).
OOD_STYLES: dict[str, tuple[str, str, float]] = {"near": ("x", "0.05", 16.0), "far": ("^", "0.55", 14.0)}
#: Width (inches) added to a figure for the legend right of its panels, so that the panels keep theirs.
LEGEND_WIDTH = 2.4


def class_colours(count: int) -> list:
    """One colour per ID class: the palette for up to seven, else evenly spaced on ``turbo`` (no greys)."""
    if count <= len(CLASS_COLOURS):
        return list(CLASS_COLOURS[:count])
    return [tuple(c) for c in matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, count))]


def shared_legend(
    fig: plt.Figure,
    *,
    loc: str = "outside right upper",
    ncols: int = 1,
    handles: list | None = None,
    fontsize: float = 7,
) -> Legend | None:
    """One legend for the whole figure, outside every panel, with each label once.

    Without ``handles``, the entries are the labelled artists of all axes in drawing order, a label
    seen in several panels listed once (panels of one figure draw the same things in the same
    style). ``loc`` is one of matplotlib's ``"outside ..."`` places, which constrained layout
    makes room for: the legend can then never hide a curve or a bar, whatever the data. Right of
    the panels by default: above or below them it would land on the title or the footnote, which
    constrained layout does not stack with an outside legend. Returns None when there is nothing
    to label.
    """
    if handles is None:
        handles = []
        seen: set[str] = set()
        for axis in fig.axes:
            for handle, label in zip(*axis.get_legend_handles_labels()):
                if label not in seen:
                    seen.add(label)
                    handles.append(handle)
    if not handles:
        return None
    return fig.legend(handles=handles, loc=loc, ncols=ncols, fontsize=fontsize, frameon=False)


def add_footnote(fig: plt.Figure, text: str) -> None:
    """Which run and which FPR convention a figure shows, under it: a PNG travels without its report.

    Drawn as the figure's ``supxlabel`` so that constrained layout reserves room for it (free text
    would overlap the axes' labels and legends).
    """
    fig.supxlabel(text, fontsize=7, color="0.25")


def grid_shape(count: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(count, max_cols))
    return -(-count // cols), cols


def image_panel(axis: plt.Axes, panel: np.ndarray, cmap: str | None = None, **kwargs: object) -> object:
    shown = axis.imshow(panel, cmap=cmap, interpolation="nearest", **kwargs)
    axis.set_xticks([])
    axis.set_yticks([])
    return shown


def colorbar(fig: plt.Figure, image: object, axes: object, label: str, **kwargs: object) -> object:
    """A colour bar in the figure's small type (the default label size dwarfs the panel titles)."""
    bar = fig.colorbar(image, ax=axes, shrink=0.9, **kwargs)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar


def auroc_panel(axis: plt.Axes, group: str, xlabel: str) -> None:
    """The axes of one near- or far-OOD panel of mean AUROC curves."""
    axis.set_xlabel(xlabel, fontsize=8)
    axis.set_ylabel(f"{group}-OOD mean AUROC (%)", fontsize=8)
    axis.set_title(f"{group}-OOD", fontsize=9)
    axis.tick_params(labelsize=7)
    axis.grid(alpha=0.3)


def finish_auroc_curves(fig: plt.Figure, title: str, footnote: str, path: str | Path) -> plt.Figure:
    """One legend right of the panels (AUROC curves may cross anywhere, so no corner inside a panel
    is free), the title and footnote, then the file."""
    shared_legend(fig, loc="outside right center")
    fig.suptitle(title, fontsize=10)
    add_footnote(fig, footnote)
    return save_figure(fig, path)


#: Line style of a detector by its DFB variant (the suffix of its name): the base detector solid.
_VARIANT_STYLES: tuple[tuple[str, str], ...] = (("_dfbz", ":"), ("_dfb", "--"))


def family_and_style(detector: str) -> tuple[str, str]:
    """``energy_dfbz`` -> (``energy``, ``:``): variants of one base share a colour, differ in line."""
    for suffix, style in _VARIANT_STYLES:
        if detector.endswith(suffix):
            return detector[: -len(suffix)], style
    return detector, "-"


def point_legend_handles(
    class_names: Sequence[str],
    colours: Sequence[object],
    present: Sequence[int],
    groups: Sequence[str],
    ood_labels: Mapping[str, str],
) -> list[Line2D]:
    """A t-SNE's legend entries: each ID class ``present`` (or one entry for many), then each OOD group.

    Up to :data:`LEGEND_CLASSES` classes are named one by one; more share one entry (colour = class).
    An OOD group (of ``groups``, those drawn) is listed with its :data:`OOD_STYLES` marker, named by
    ``ood_labels[group]`` when given.
    """

    def dot(colour: object, label: str) -> Line2D:
        style = {"linestyle": "none", "marker": "o", "markersize": 4.5, "markeredgewidth": 0}
        return Line2D([], [], color=colour, label=label, **style)

    if len(class_names) <= LEGEND_CLASSES:
        handles = [dot(colours[c], f"ID: {class_names[c]}") for c in present]
    else:
        label = f"ID test: colour = class\n({len(present)} of {len(class_names)} classes)"
        handles = [dot(colours[len(colours) // 2], label)]
    for group, (marker, colour, _) in OOD_STYLES.items():
        if group in ood_labels and group in groups:
            label = textwrap.fill(ood_labels[group], width=34)
            handles.append(
                Line2D([], [], linestyle="none", marker=marker, markersize=5, color=colour, label=label)
            )
    return handles


__all__ = [
    "auroc_panel",
    "family_and_style",
    "finish_auroc_curves",
    "CLASS_COLOURS",
    "DFB_HATCH",
    "ID_COLOUR",
    "LEGEND_CLASSES",
    "LEGEND_WIDTH",
    "MARKERS",
    "OKABE_ITO",
    "OOD_COLOUR",
    "OOD_STYLES",
    "PALETTE",
    "add_footnote",
    "class_colours",
    "colorbar",
    "grid_shape",
    "image_panel",
    "point_legend_handles",
    "shared_legend",
]
