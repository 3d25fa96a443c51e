"""Stage 2: pseudo foreground/background masks for every ID training image, from the classifier's CAMs.

Masks are stored once as one uint8 array (N, H, W) at the training images' stored resolution
(``.npy``, memory-mappable), not one file per image. Their quality decides what DFB can learn, so
the stage also reports coverage statistics and warns when the masks are degenerate (almost all
background or almost all foreground), instead of silently training a useless dense net.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dfb_ood.errors import InputError
from dfb_ood.harness.augment import evaluation_batches
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.recipes import CamSettings
from dfb_ood.networks import OODNet, class_activation_maps

# A mask set is degenerate when its mean foreground fraction leaves this band, or when more than
# DEGENERATE_IMAGE_SHARE of the images are entirely one label.
FOREGROUND_BAND = (0.02, 0.90)
DEGENERATE_IMAGE_SHARE = 0.5


class DegenerateMasksWarning(UserWarning):
    """The pseudo masks are nearly all background or all foreground: DFB will learn little."""


@dataclass(frozen=True)
class MaskStats:
    """Coverage of a mask set: what fraction of pixels are foreground, and how many images are flat."""

    mean_foreground: float
    median_foreground: float
    all_background: int
    all_foreground: int
    count: int

    @property
    def degenerate(self) -> bool:
        low, high = FOREGROUND_BAND
        flat = (self.all_background + self.all_foreground) / max(self.count, 1)
        return not low <= self.mean_foreground <= high or flat > DEGENERATE_IMAGE_SHARE

    def describe(self) -> str:
        return (
            f"foreground {self.mean_foreground:.1%} of pixels on average "
            f"(median {self.median_foreground:.1%}); {self.all_background} all-background and "
            f"{self.all_foreground} all-foreground masks of {self.count}"
        )


def compute_cams(
    net: OODNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    cam: CamSettings,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: int,
    device: torch.device,
    batch_size: int = 256,
    reporter: Reporter | None = None,
) -> torch.Tensor:
    """CAMs in [0, 1], (N, H, W) at the stored resolution of ``images`` (uint8, N x 3 x H x W).

    Each batch is normalised and resized to the evaluation ``size`` (where the classifier works
    best), its multi-scale CAMs computed there, then resized back to the stored grid so that masks
    and images share one geometry for the dense stage's joint augmentation.
    """
    reporter = reporter or Reporter(quiet=True)
    net.to(device).eval()
    height, width = images.shape[-2:]
    out = torch.empty(images.shape[0], height, width, dtype=torch.float32)
    batches = evaluation_batches(images, mean=mean, std=std, size=size, device=device, batch_size=batch_size)
    with reporter.task("CAM masks", total=images.shape[0]) as bar:
        for start, batch in batches:
            maps = class_activation_maps(
                net,
                batch,
                labels[start : start + batch.shape[0]].to(device),
                target=cam.target,  # type: ignore[arg-type]
                scales=cam.scales,
                flip=cam.flip,
                sigma=cam.sigma or None,
                normalise=cam.normalise,  # type: ignore[arg-type]
            )
            if maps.shape[-2:] != (height, width):
                maps = F.interpolate(
                    maps[:, None], size=(height, width), mode="bilinear", align_corners=False
                )[:, 0]
            out[start : start + batch.shape[0]] = maps.float().cpu()
            bar.advance(batch.shape[0])
    return out


def masks_from_cams(cams: torch.Tensor, targets: torch.Tensor, theta: float, num_classes: int) -> np.ndarray:
    """uint8 label maps: the target class where the CAM exceeds ``theta``, else K (background)."""
    if num_classes >= 255:
        raise InputError(f"uint8 masks hold at most 254 classes plus background; got K={num_classes}")
    foreground = cams > theta
    labels = targets.to(torch.uint8)[:, None, None].expand_as(foreground)
    masks = torch.where(foreground, labels, torch.full_like(labels, num_classes))
    return masks.numpy()


def mask_stats(masks: np.ndarray, num_classes: int, rows: int = 4096) -> MaskStats:
    """Coverage statistics of uint8 masks whose background label is ``num_classes``.

    Read ``rows`` masks at a time, so memory-mapped masks of a large set are never loaded whole.
    """
    fraction = np.concatenate(
        [
            (masks[start : start + rows] != num_classes).reshape(-1, masks[0].size).mean(axis=1)
            for start in range(0, masks.shape[0], rows)
        ]
        or [np.zeros(0)]
    )
    return MaskStats(
        mean_foreground=float(fraction.mean()),
        median_foreground=float(np.median(fraction)),
        all_background=int((fraction == 0).sum()),
        all_foreground=int((fraction == 1).sum()),
        count=int(masks.shape[0]),
    )


def mask_agreement(masks: np.ndarray, truth: np.ndarray, num_classes: int) -> dict[str, float]:
    """Foreground IoU, precision and recall of pseudo masks against true object masks (per image, mean).

    Only benchmarks that know where their objects are (the generated ``shapes``) can report it;
    it tells whether a weak DFB result comes from the masks or from what the dense net learns.
    """
    predicted = masks != num_classes
    truth = truth.astype(bool)
    inter = (predicted & truth).sum(axis=(1, 2))
    union = (predicted | truth).sum(axis=(1, 2))
    return {
        "iou": float(np.mean(inter / np.maximum(union, 1))),
        "precision": float(np.mean(inter / np.maximum(predicted.sum(axis=(1, 2)), 1))),
        "recall": float(np.mean(inter / np.maximum(truth.sum(axis=(1, 2)), 1))),
    }


def warn_if_degenerate(stats: MaskStats, theta: float) -> None:
    """Warn (never silently continue) when the masks cannot teach the background class much."""
    if stats.degenerate:
        warnings.warn(
            f"pseudo masks look degenerate: {stats.describe()}. Check the CAM grid in masks_preview.png; "
            f"try another cam.theta (now {theta}), cam.sigma, or a longer classifier schedule.",
            DegenerateMasksWarning,
            stacklevel=2,
        )
