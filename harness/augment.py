"""Batched augmentation on the training device, for images (and masks) held as uint8 tensors.

Small-image benchmarks keep their decoded training set in memory as uint8; augmenting whole
batches with one ``grid_sample`` on the training device keeps the GPU fed without worker
processes. Every random draw comes from a caller-supplied CPU generator seeded per step, so a
resumed run replays exactly the augmentations an uninterrupted run would have drawn.

One random affine map covers both stages:
- classifier: zoom ``resize / crop`` (the paper's resize-160-crop-128 is a 1.25x zoom of the full
  image) or a shift of up to ``pad`` pixels (CIFAR's pad-and-crop), plus a horizontal flip;
- dense stage: a random scale in ``dense_scale`` (0.5-2.0: zoom in or shrink and pad), plus a
  flip, applied jointly to the image (bilinear) and its mask (nearest), the mask padded with
  ``IGNORE_INDEX`` wherever the output falls outside the source image.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float (B, 3, H, W) -> float normalised by per-channel mean and std."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    return (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a float batch to ``size`` x ``size`` (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrinking = images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


class BatchSource(Protocol):
    """Images read in order in batches rather than held (:class:`harness.data.streaming.StreamedImages`)."""

    @property
    def shape(self) -> tuple[int, int, int, int]: ...

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]: ...


def uint8_batches(images: torch.Tensor | BatchSource, batch_size: int) -> Iterator[torch.Tensor]:
    """The uint8 ``(B, 3, H, W)`` batches of an in-memory tensor or a streamed set, in order."""
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
    else:
        yield from images.batches(batch_size)


def evaluation_batches(
    images: torch.Tensor | BatchSource,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: int,
    device: torch.device,
    batch_size: int,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, batch)`` pairs of uint8 images moved to ``device``, normalised and resized to ``size``.

    The one evaluation-time transform shared by every pass over stored images (outputs, ODIN's
    perturbed pass, CAM masks), so they all see exactly the same pixels, whether the images are
    held in memory or streamed from their files.
    """
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    start = 0
    for chunk in uint8_batches(images, batch_size):
        batch = chunk.to(device, non_blocking=chunk.is_pinned())
        yield start, resize_batch(normalise(batch, mean_t, std_t), size)
        start += chunk.shape[0]


def random_affine_params(
    batch: int,
    generator: torch.Generator,
    scale: tuple[float, float],
    max_shift: float,
    flip: bool,
) -> torch.Tensor:
    """(B, 2, 3) affine matrices mapping output to input coordinates (``affine_grid`` convention).

    ``scale`` > 1 zooms in. The translation keeps the output inside the source when zooming in
    and the source inside the output when shrinking; ``max_shift`` adds a shift in normalised
    coordinates (2 * pixels / size) on top, as pad-and-crop does.
    """
    low, high = scale
    s = (
        low + (high - low) * torch.rand(batch, generator=generator)
        if high > low
        else torch.full((batch,), low)
    )
    slack = (1.0 - 1.0 / s).abs() + max_shift
    tx = (2 * torch.rand(batch, generator=generator) - 1) * slack
    ty = (2 * torch.rand(batch, generator=generator) - 1) * slack
    sign = torch.ones(batch)
    if flip:
        sign = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = sign / s
    theta[:, 1, 1] = 1.0 / s
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    return theta


def apply_affine(
    images: torch.Tensor, theta: torch.Tensor, size: int, masks: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Warp float images (bilinear, zero padding) and optional uint8 masks (nearest, ignore padding)."""
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if masks is None:
        return warped, None
    # Shift labels by one so that zero padding is distinguishable from label 0, then undo.
    shifted = masks.to(images.device).float().unsqueeze(1) + 1.0
    sampled = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    labels = sampled.squeeze(1).long() - 1
    labels[labels < 0] = IGNORE_INDEX
    return warped, labels


class BatchAugmenter:
    """Turns uint8 training batches into normalised, augmented float batches on ``device``.

    ``resize``/``crop``/``pad``/``flip`` follow the recipe's train transform; the output side is
    ``crop`` (or the input size). Images are normalised *before* warping so zero padding means
    "the mean colour", not black.
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        *,
        input_size: int,
        resize: int | None = None,
        crop: int | None = None,
        pad: int = 0,
        flip: bool = True,
        dense_scale: tuple[float, float] = (0.5, 2.0),
        dense_flip: bool = True,
    ) -> None:
        self.device = device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(std, dtype=torch.float32, device=device)
        self.size = int(crop or resize or input_size)
        self.zoom = (resize / self.size) if resize else 1.0
        self.shift = 2.0 * pad / self.size
        self.flip = flip
        self.dense_scale = dense_scale
        self.dense_flip = dense_flip

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return normalise(images.to(self.device, non_blocking=True), self.mean, self.std)

    def classifier(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented, normalised (B, 3, size, size) batch for the classifier stage."""
        theta = random_affine_params(
            images.shape[0], generator, (self.zoom, self.zoom), self.shift, self.flip
        )
        return apply_affine(self._prepare(images), theta, self.size)[0]

    def dense(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Jointly augmented (images, long masks) for the dense stage; padding is ``IGNORE_INDEX``."""
        low, high = self.dense_scale
        theta = random_affine_params(
            images.shape[0], generator, (low * self.zoom, high * self.zoom), self.shift, self.dense_flip
        )
        warped, labels = apply_affine(self._prepare(images), theta, self.size, masks)
        assert labels is not None
        return warped, labels

    def evaluation(self, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Normalised batch at the evaluation size (plain resize, no randomness)."""
        return resize_batch(self._prepare(images), size or self.size)
