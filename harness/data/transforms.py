"""The per-item test transform, for users of ``build_dataset`` who want normalised float images.

The pipeline itself does not use it: it keeps sets as uint8 arrays and normalises and resizes
whole batches on the device (``harness.augment.evaluation_batches``); its training augmentation
is ``harness.augment.BatchAugmenter``. A dataset item without a transform is already fitted to the
test size; this adds the benchmark's normalisation, fitting first with the dataset's own code
(Pillow bilinear resize, centre crop), so both paths give the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from dfb_ood.errors import InputError
from dfb_ood.harness.data.images import fit_array, hwc_to_chw_tensor

if TYPE_CHECKING:
    from dfb_ood.harness.data.specs import Benchmark


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) image(s), ``(..., 3, H, W)``, to ``(x - mean) / std`` in float32."""
    # One float copy, then two in-place passes: (x / range - mean) / std = x * a - b.
    value_range = 255.0 if image.dtype == torch.uint8 else 1.0
    std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    scale = 1.0 / (std_t * value_range)
    shift = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t
    x = image.to(torch.float32, copy=True)
    return x.mul_(scale).sub_(shift)


def _hwc_array(image: Any) -> np.ndarray:
    """A uint8 HWC (or HW) array from a CHW/HW uint8 tensor, a PIL image or a numpy array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        return image
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8:
        kind = f"a {image.dtype} tensor" if isinstance(image, torch.Tensor) else type(image).__name__
        raise TypeError(f"expected a uint8 tensor, PIL image or numpy array, got {kind}")
    if image.ndim == 2:
        return image.numpy()
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise InputError(f"expected a CHW image with 1 or 3 channels, got shape {tuple(image.shape)}")
    return image.permute(1, 2, 0).numpy()


class TestTransform:
    """Fit to the test size (bilinear resize, centre crop), then normalise: float32 ``(3, crop, crop)``.

    Grayscale is replicated to RGB. A class rather than a closure so DataLoader workers can pickle it.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self, resize: int | Sequence[int], crop: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.resize = resize if isinstance(resize, int) else (int(resize[0]), int(resize[1]))
        self.crop = int(crop)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(self, image: Any) -> torch.Tensor:
        fitted = hwc_to_chw_tensor(fit_array(_hwc_array(image), self.resize, self.crop))
        return normalize(fitted, self.mean, self.std)

    def __repr__(self) -> str:
        return f"TestTransform(resize={self.resize}, crop={self.crop}, mean={self.mean}, std={self.std})"


def test_transform(benchmark: Benchmark) -> TestTransform:
    """The benchmark's test transform: its test resize and crop, then its normalisation."""
    return TestTransform(benchmark.test_resize, benchmark.test_crop, benchmark.mean, benchmark.std)


test_transform.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name
