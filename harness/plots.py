"""Figures written into run directories (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.io import atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> None:
    """Save a figure atomically as PNG and release it."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)


def mask_preview(
    images: np.ndarray,
    cams: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    background_label: int,
    path: str | Path,
    title: str,
) -> None:
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
    save_figure(fig, path)
