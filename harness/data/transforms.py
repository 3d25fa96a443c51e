"""Test and training transforms on uint8 CHW tensors (PIL images and HWC arrays are accepted too).

Datasets hand transforms a uint8 tensor, so in-memory sets never round-trip through PIL. uint8
resizes still go through Pillow's bilinear filter, the same code that makes the dataset's own
test-size images, so ``test_transform`` gives identical pixels whichever path an image takes; float
inputs are resized with torch (antialiased). Random choices use torch's global generator, which
``DataLoader`` seeds per worker.

Recipes (``train_transform``):

- ``paper``: the DFB recipe: resize to ``resize`` x ``resize`` (160), random crop ``crop`` (128),
  horizontal flip, normalise.
- ``cifar``: the cheap 32x32 recipe: fit to the test size, zero-pad ``pad`` (4), random crop back,
  horizontal flip, normalise.
- ``test``: the test transform (no augmentation).

The dense stage's joint image+mask augmentation is :class:`DenseTrainTransform`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.data.images import as_hwc_rgb, centre_box, hwc_to_chw_tensor, resized_size

if TYPE_CHECKING:
    from harness.data.benchmark import Benchmark


def to_uint8_chw(image: Any) -> torch.Tensor:
    """A 3-channel CHW tensor from a tensor (CHW or HW), a PIL image or an HWC/HW numpy array.

    Grayscale is replicated to RGB. Float tensors pass through unchanged (apart from channels).
    """
    if isinstance(image, Image.Image):
        return hwc_to_chw_tensor(as_hwc_rgb(np.asarray(image.convert("RGB"))))
    if isinstance(image, np.ndarray):
        return hwc_to_chw_tensor(as_hwc_rgb(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a tensor, PIL image or numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a CHW image with 1 or 3 channels, got shape {tuple(image.shape)}")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a CHW tensor to ``size`` = (h, w); uint8 via Pillow, float via torch."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if image.dtype == torch.uint8:
        array = image.permute(1, 2, 0).contiguous().numpy()
        resized = Image.fromarray(array).resize((size[1], size[0]), Image.BILINEAR)
        return hwc_to_chw_tensor(np.asarray(resized))
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0]


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) image(s), ``(..., 3, H, W)``, to ``(x - mean) / std`` in float32."""
    # One float copy, then two in-place passes: (x / range - mean) / std = x * a - b.
    value_range = 255.0 if image.dtype == torch.uint8 else 1.0
    std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    scale = 1.0 / (std_t * value_range)
    shift = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t
    x = image.to(torch.float32, copy=True)
    return x.mul_(scale).sub_(shift)


class Compose:
    """Apply callables in order (a picklable stand-in for torchvision's Compose)."""

    def __init__(self, steps: Sequence[Callable[[Any], Any]]) -> None:
        self.steps = list(steps)

    def __call__(self, image: Any) -> Any:
        for step in self.steps:
            image = step(image)
        return image

    def __repr__(self) -> str:
        return f"Compose({self.steps})"


class Resize:
    """Resize: an int sets the shorter side (aspect kept), a pair is an exact (h, w)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = size if isinstance(size, int) else (int(size[0]), int(size[1]))

    def __call__(self, image: Any) -> torch.Tensor:
        image = to_uint8_chw(image)
        return resize(image, resized_size(image.shape[-2], image.shape[-1], self.size))

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class CenterCrop:
    """Centre ``size`` x ``size`` crop (the image must be at least that large)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if height < self.size or width < self.size:
            raise ValueError(f"cannot centre-crop {self.size} from a {height}x{width} image")
        top, left = centre_box(height, width, self.size)
        return image[..., top : top + self.size, left : left + self.size]

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class RandomCrop:
    """Zero-pad by ``pad`` on every side, then take a random ``size`` x ``size`` window."""

    def __init__(self, size: int, pad: int = 0) -> None:
        self.size = size
        self.pad = pad

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.pad:
            image = F.pad(image, (self.pad, self.pad, self.pad, self.pad))
        height, width = image.shape[-2:]
        if height < self.size or width < self.size:
            raise ValueError(f"cannot crop {self.size} from a {height}x{width} image")
        top = int(torch.randint(0, height - self.size + 1, ()).item())
        left = int(torch.randint(0, width - self.size + 1, ()).item())
        return image[..., top : top + self.size, left : left + self.size]

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, pad={self.pad})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < self.p:
            return image.flip(-1)
        return image

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip({self.p})"


class Normalize:
    """Scale to [0, 1] (uint8 input) and standardise per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(x) for x in mean)
        self.std = tuple(float(x) for x in std)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return normalize(image, self.mean, self.std)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def fit_transform(benchmark: Benchmark) -> Compose:
    """Resize + centre crop to the benchmark's test size, uint8 kept (no normalisation)."""
    return Compose([Resize(benchmark.test_resize), CenterCrop(benchmark.test_crop)])


def test_transform(benchmark: Benchmark) -> Compose:
    """The benchmark's test transform: resize, centre crop, normalise (uint8 CHW -> float CHW)."""
    return Compose([*fit_transform(benchmark).steps, Normalize(benchmark.mean, benchmark.std)])


test_transform.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name


def train_transform(benchmark: Benchmark, recipe: str = "default") -> Compose:
    """The training augmentation of a recipe (``paper``, ``cifar``, ``test`` or ``default``).

    ``default`` takes the benchmark's ``transforms.train.recipe``; sizes come from that section
    (defaults: paper 160 -> 128 for a 128 benchmark, cifar pad 4).
    """
    settings = benchmark.transforms["train"]
    name = settings["recipe"] if recipe == "default" else recipe
    flip = [RandomHorizontalFlip()] if settings["flip"] else []
    normalise = Normalize(benchmark.mean, benchmark.std)
    if name == "paper":
        side = settings["resize"]
        return Compose([Resize((side, side)), RandomCrop(settings["crop"]), *flip, normalise])
    if name == "cifar":
        return Compose(
            [*fit_transform(benchmark).steps, RandomCrop(settings["crop"], settings["pad"]), *flip, normalise]
        )
    if name == "test":
        return test_transform(benchmark)
    raise ValueError(f"unknown training recipe {recipe!r}; known: paper, cifar, test, default")


class DenseTrainTransform:
    """Joint image + mask augmentation of the dense stage: random scale, flip, pad, random crop.

    The image is first brought to the mask's size (masks are made at the network input size),
    then both are scaled by one factor drawn from ``scale`` (image bilinear, mask nearest, so no
    label is invented), flipped together, normalised, padded (image with 0 = the mean after
    normalisation, mask with ``ignore_index``) to at least ``crop`` and cropped at one random
    position. Returns ``(float image (3, crop, crop), int64 mask (crop, crop))``.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop: int,
        scale: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        ignore_index: int = 255,
    ) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop = crop
        self.scale = scale
        self.flip = flip
        self.ignore_index = ignore_index

    def __call__(self, image: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
        image = to_uint8_chw(image)
        mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if mask.ndim != 2:
            raise ValueError(f"expected an HW mask, got shape {tuple(mask.shape)}")
        height, width = mask.shape
        image = resize(image, (height, width))
        factor = self.scale[0] + (self.scale[1] - self.scale[0]) * float(torch.rand(()))
        new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
        x = normalize(image, self.mean, self.std)
        x = F.interpolate(x[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)[
            0
        ]
        m = F.interpolate(mask[None, None].float(), size=(new_h, new_w), mode="nearest-exact")[0, 0].long()
        if self.flip and torch.rand(()) < 0.5:
            x, m = x.flip(-1), m.flip(-1)
        pad_h, pad_w = max(0, self.crop - new_h), max(0, self.crop - new_w)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
            m = F.pad(m, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = int(torch.randint(0, x.shape[-2] - self.crop + 1, ()).item())
        left = int(torch.randint(0, x.shape[-1] - self.crop + 1, ()).item())
        box = (slice(top, top + self.crop), slice(left, left + self.crop))
        return x[(slice(None), *box)].contiguous(), m[box].contiguous()

    def __repr__(self) -> str:
        return f"DenseTrainTransform(crop={self.crop}, scale={self.scale}, ignore_index={self.ignore_index})"


def dense_transform(benchmark: Benchmark) -> DenseTrainTransform:
    """The dense stage's joint transform with the benchmark's ``transforms.dense`` settings."""
    settings = benchmark.transforms["dense"]
    return DenseTrainTransform(
        benchmark.mean,
        benchmark.std,
        crop=settings["crop"],
        scale=settings["scale"],
        flip=settings["flip"],
        ignore_index=settings["ignore_index"],
    )
