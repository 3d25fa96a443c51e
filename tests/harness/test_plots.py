"""Every figure of :mod:`harness.plots`: one legend at most, the figure's, outside every panel; PNG, PDF, SVG.

Each drawing function is rendered from small synthetic inputs (the same shapes a report passes:
several OOD sets, several detectors, long axis labels), its canvas drawn, and the placed artists
measured in display coordinates. A new drawing function must be added to ``DRAW`` below, or
``test_every_drawing_function_is_checked`` fails.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from dfb_ood.harness import plots
from dfb_ood.harness.report import roc_curve

FOOTNOTE = "run tiny_shapes / rv2_tiny / seed 0  ·  FPR convention: paper (OOD accepted at 95% ID TPR)"
SETS = ("near_unseen_shapes", "plain_textures")


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def draw_histograms(path: Path) -> plt.Figure:
    rng = _rng()
    panels = {
        name: {
            "fg": (rng.normal(1, 1, 120), rng.normal(0, 1, 80 + 10 * i)),
            "bg": (rng.normal(2, 1, 120), rng.normal(0, 1, 80 + 10 * i)),
        }
        for i, name in enumerate(SETS)
    }
    rows = {
        "fg": "foreground score S_f = energy on the first K logits (z-scored) (a.u.)",
        "bg": "background logit S_b (a.u.)",
    }
    notes = {
        n: {"fg": "S_f alone AUROC 90.0%", "bg": "S_b alone AUROC 63.1%; energy_dfb 87.0%"} for n in SETS
    }
    return plots.score_histograms(panels, rows, path, title="scores", footnote=FOOTNOTE, notes=notes)


def draw_rocs(path: Path) -> plt.Figure:
    rng = _rng()
    curves: dict[str, list[plots.Curve]] = {}
    for name in SETS:
        for shift, label, dfb in (
            (0.0, "msp (K)", False),
            (0.5, "msp_dfb (K+1)", True),
            (1.0, "msp_dfbz (K+1)", True),
        ):
            fpr, tpr = roc_curve(rng.normal(1, 1, 60), rng.normal(shift - 0.5, 1, 50))
            curves.setdefault(name, []).append(plots.Curve(label, fpr, tpr, 0.75, dfb))
    return plots.roc_panels(curves, path, title="ROC", footnote=FOOTNOTE, fpr_convention="openood")


def draw_sweep(path: Path) -> plt.Figure:
    rng = _rng()
    temperatures = [0.5, 1.0, 2.5, 5.0]
    curves = {
        name: {"near": list(rng.uniform(0.5, 1, 4)), "far": list(rng.uniform(0.5, 1, 4))}
        for name in ("msp_dfb", "energy_dfb", "vim_dfb")
    }
    return plots.temperature_sweep_plot(
        temperatures,
        curves,
        path,
        table_temperatures=dict.fromkeys(curves, 2.5),
        references={"bg alone (the T -> 0 limit)": {"near": 0.63, "far": 0.99}},
        title="sweep",
        footnote=FOOTNOTE,
    )


def draw_bars(path: Path) -> plt.Figure:
    detectors = ["msp", "msp_dfb", "msp_dfbz", "energy", "energy_dfb", "bg"]
    values = {"near": [0.99, 0.77, None, 0.99, 0.87, 0.63], "far": [1.0, 0.997, 0.996, 0.998, 0.999, 0.99]}
    return plots.auroc_bars(
        detectors, values, [False, True, True, False, True, True], path, title="bars", footnote=FOOTNOTE
    )


def draw_classes(path: Path) -> plt.Figure:
    rng = _rng()
    counts = [200, 300, 500, 1000]
    curves: dict[str, dict[str, list[tuple[float, float] | None]]] = {
        name: {
            "near": [(float(v), 0.01) for v in rng.uniform(0.6, 0.9, 4)],
            "far": [None, *[(float(v), 0.0) for v in rng.uniform(0.8, 1.0, 3)]],
        }
        for name in ("msp", "msp_dfb", "msp_dfbz", "energy", "energy_dfb")
    }
    return plots.auroc_vs_classes(counts, curves, path, title="classes", footnote=FOOTNOTE)


def _images(count: int) -> np.ndarray:
    return _rng().integers(0, 255, (count, 16, 16, 3), dtype=np.uint8)


def draw_mask_grid(path: Path) -> plt.Figure:
    rng = _rng()
    return plots.mask_grid(
        _images(3),
        rng.uniform(0, 1, (3, 16, 16)),
        rng.integers(0, 7, (3, 16, 16)).astype(np.uint8),
        rng.uniform(0, 1, (3, 16, 16)),
        [f"class{i} #{i}" for i in range(3)],
        6,
        path,
        title="masks",
        footnote=FOOTNOTE,
    )


def draw_bg_probability(path: Path) -> plt.Figure:
    rng = _rng()
    rows = [
        ("ID test\nmean P(bg) 0.52", _images(3), rng.uniform(0, 1, (3, 16, 16))),
        ("noise (far)\nmean P(bg) 0.10", _images(2), rng.uniform(0, 1, (2, 16, 16))),
    ]
    return plots.background_probability_grid(rows, path, title="P(bg)", footnote=FOOTNOTE)


def draw_mask_preview(path: Path) -> plt.Figure:
    rng = _rng()
    return plots.mask_preview(
        _images(4),
        rng.uniform(0, 1, (4, 16, 16)),
        rng.integers(0, 7, (4, 16, 16)),
        np.array([0, 1, 2, -1]),
        ["a", "b", "c"],
        6,
        path,
        "preview",
    )


def draw_tsne(path: Path) -> plt.Figure:
    rng = _rng()
    kinds = np.array(["id"] * 60 + ["near"] * 20 + ["far"] * 20)
    classes = np.where(kinds == "id", np.arange(100) % 6, -1)
    panels = {
        "K-class classifier (K = 6)\n512-d pooled features": rng.normal(size=(100, 2)),
        "DFB net (K+1 = 7 outputs)\n512-d pooled features": rng.normal(size=(100, 2)),
    }
    labels = {"near": "near-OOD: near_unseen_shapes (n=20)", "far": "far-OOD: plain_textures, noise (n=20)"}
    names = ["circle", "square", "triangle", "plus", "ring", "star"]
    return plots.tsne_panels(panels, classes, kinds, names, labels, path, title="t-SNE", footnote=FOOTNOTE)


#: Every drawing function, and how many legends its figure has (figures of images have none).
DRAW: dict[str, tuple[Callable[[Path], plt.Figure], int]] = {
    "score_histograms": (draw_histograms, 1),
    "roc_panels": (draw_rocs, 1),
    "temperature_sweep_plot": (draw_sweep, 1),
    "auroc_bars": (draw_bars, 1),
    "auroc_vs_classes": (draw_classes, 1),
    "mask_grid": (draw_mask_grid, 0),
    "background_probability_grid": (draw_bg_probability, 0),
    "mask_preview": (draw_mask_preview, 0),
    "tsne_panels": (draw_tsne, 1),
}


def test_every_drawing_function_is_checked() -> None:
    drawing = {
        name
        for name, function in inspect.getmembers(plots, inspect.isfunction)
        if function.__module__ == plots.__name__
        and "path" in inspect.signature(function).parameters
        and not name.startswith("_")  # private helpers of the drawing functions
    }
    assert drawing - {"save_figure", "figure_format_of"} == set(DRAW)


def _box(artist: object, renderer: object) -> Bbox:
    return artist.get_window_extent(renderer)  # type: ignore[attr-defined]


def _texts(fig: plt.Figure) -> list[Text]:
    """The figure's own texts (title, footnote) and every visible panel's titles and axis labels."""
    texts = [t for t in (fig._suptitle, fig._supxlabel) if t is not None]
    for axis in fig.axes:
        if axis.get_visible():
            texts += [axis.title, axis._left_title, axis._right_title, axis.xaxis.label, axis.yaxis.label]
    return [t for t in texts if t.get_visible() and t.get_text()]


@pytest.fixture(scope="module", params=list(DRAW))
def drawn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, plt.Figure, Path]:
    """Each figure drawn once as PDF (the figure returned) and once as SVG, into its own folder."""
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    fig = DRAW[name][0](folder / "figure.pdf")
    DRAW[name][0](folder / "figure.svg")
    return name, fig, folder


def test_one_legend_outside_every_panel(drawn: tuple[str, plt.Figure, Path]) -> None:
    name, fig, _ = drawn
    canvas = FigureCanvasAgg(fig)  # the saved figure is closed: draw it again, laid out the same way
    canvas.draw()
    renderer = canvas.get_renderer()
    assert [axis for axis in fig.axes if axis.get_legend() is not None] == []  # no legend per panel
    assert len(fig.legends) == DRAW[name][1]
    panels = [axis for axis in fig.axes if axis.get_visible()]
    for legend in fig.legends:
        box = _box(legend, renderer)
        assert box.width > 0 and box.height > 0
        for axis in panels:
            assert not box.overlaps(_box(axis, renderer)), f"{name}: the legend covers a panel"
        for text in _texts(fig):
            assert not box.overlaps(_box(text, renderer)), f"{name}: the legend covers {text.get_text()!r}"
    # Titles and axis labels do not run into each other or into a neighbouring panel either.
    texts = _texts(fig)
    for first, second in combinations(texts, 2):
        assert not _box(first, renderer).overlaps(_box(second, renderer)), (
            f"{name}: {first.get_text()!r} overlaps {second.get_text()!r}"
        )
    for text in texts:
        for axis in panels:
            if axis is not text.axes:
                assert not _box(text, renderer).overlaps(_box(axis, renderer)), (
                    f"{name}: {text.get_text()!r} runs into another panel"
                )


def test_every_figure_saves_as_pdf_and_svg(drawn: tuple[str, plt.Figure, Path]) -> None:
    _, _, folder = drawn
    pdf, svg = (folder / "figure.pdf").read_bytes(), (folder / "figure.svg").read_text(encoding="utf-8")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert sorted(p.name for p in folder.iterdir()) == ["figure.pdf", "figure.svg"]  # no temporary left


def test_the_same_figure_gives_the_same_bytes(tmp_path: Path) -> None:
    """No creation date in a PDF, no random element ids in an SVG: a rebuilt report diffs clean."""
    for first, second in (("a.pdf", "b.pdf"), ("a.svg", "b.svg")):
        draw_bars(tmp_path / first)
        draw_bars(tmp_path / second)
        assert (tmp_path / first).read_bytes() == (tmp_path / second).read_bytes(), first


def test_an_unknown_figure_format_names_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'bars\.jpg'.*\.png, \.pdf, \.svg"):
        draw_bars(tmp_path / "bars.jpg")
    assert not list(tmp_path.iterdir())
    assert plots.figure_format_of("x/Bars.PDF") == "pdf"


def test_histogram_set_sizes_go_into_the_legend_when_shared(tmp_path: Path) -> None:
    rng = _rng()
    panels = {name: {"s": (rng.normal(size=50), rng.normal(size=40))} for name in SETS[:2]}
    fig = plots.score_histograms(panels, {"s": "score (a.u.)"}, tmp_path / "h.png", title="t", footnote="f")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["ID test (n=50)", "OOD: the panel's set (n=40)"]
    assert all("n =" not in axis.get_title() for axis in fig.axes)
    fig = draw_histograms(tmp_path / "h.png")  # OOD sets of different sizes: each panel says its own
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ID test", "OOD: the panel's set"]
    assert "(n = 120 ID, 80 OOD)" in fig.axes[0].get_title()
