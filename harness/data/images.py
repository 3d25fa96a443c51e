"""Decode one image file to RGB and fit it to the test size, the way OpenOOD's test transform does.

Every image, whatever its source (a file, a torchvision set, a generated array), goes through
:func:`fit_array` for the test-size path, so the pixels a network sees do not depend on where a set
is stored. Resizing uses Pillow's bilinear filter (antialiased when shrinking), as OpenOOD's
``Resize`` on PIL images does, so that OpenOOD checkpoints see the inputs they were tested with.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness.io import open_regular

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# What Pillow raises on a corrupt or non-image file. Named, so that nothing else is swallowed.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


class ImageDecodeError(InputError):
    """An image file exists but cannot be decoded; the message names the file and its list line."""


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy of a decoded image whatever its mode, keeping its contrast.

    Pillow's own ``convert("RGB")`` clips high-bit-depth images instead of scaling them: a 16-bit
    PNG (mode ``I;16``) or 32-bit integer image (``I``) comes out black and white, a float image
    (``F``) black. Those are scaled here from their full 16-bit range to 8 bits (rounded; values
    outside 0..65535 in an ``I`` image are refused, as their range is unknown). Float images are
    refused (their range, 0..1 or 0..255, is not recorded in the file). A palette image with
    transparency goes through RGBA (Pillow warns otherwise); alpha is dropped, never composited.
    """
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise InputError(
                f"{mode} image with values {values.min()}..{values.max()}, outside the 16-bit range "
                "0..65535 the harness can scale to 8 bits; save it as an 8- or 16-bit PNG"
            )
        gray = ((values + 128) // 257).astype(np.uint8)  # 0..65535 -> 0..255, 257*k -> k exactly
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        raise InputError(
            "a 32-bit floating-point image, whose value range the file does not record; save it as an "
            "8- or 16-bit PNG"
        )
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


@contextlib.contextmanager
def _open_image(path: str | Path) -> Iterator[Image.Image]:
    """``Image.open`` on a regular file only: a FIFO named ``x.png`` would block the open for ever."""
    with open_regular(path, "an image") as handle, Image.open(handle) as image:
        yield image


def decode_rgb(path: str | Path, origin: str = "") -> Image.Image:
    """Open and fully decode one image as RGB (grayscale replicated, 16-bit scaled, alpha dropped).

    ``origin`` (``"list.txt:12"``) is put in front of any error so users can find the entry.
    """
    prefix = f"{origin}: " if origin else ""
    try:
        with _open_image(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise MissingInputError(f"{prefix}image not found: {path}") from None
    except DECODE_ERRORS as error:
        raise ImageDecodeError(f"{prefix}cannot decode image {path}: {error}") from None


def header_ok(path: str | Path) -> str | None:
    """Cheap validity check (reads the header only): None when fine, else the reason."""
    try:
        with _open_image(path) as image:
            image.size  # noqa: B018 - touching the size forces the header parse
            if image.mode == "F":
                return "a 32-bit floating-point image, whose value range the file does not record"
        return None
    except DECODE_ERRORS as error:
        return str(error) or type(error).__name__


def resized_size(height: int, width: int, resize: int | tuple[int, int]) -> tuple[int, int]:
    """Target (h, w): an int sets the shorter side (aspect kept, long side truncated), a pair is exact."""
    if not isinstance(resize, int):
        return int(resize[0]), int(resize[1])
    if height <= width:
        return resize, int(resize * width / height)
    return int(resize * height / width), resize


def centre_box(height: int, width: int, crop: int) -> tuple[int, int]:
    """Top-left corner of a centred ``crop`` x ``crop`` window (rounded like torchvision's)."""
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


def fit_pil(image: Image.Image, resize: int | tuple[int, int], crop: int) -> np.ndarray:
    """Resize (bilinear) and centre-crop an RGB PIL image; returns uint8 HWC ``(crop, crop, 3)``."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    new_h, new_w = resized_size(height, width, resize)
    if (new_h, new_w) != (height, width):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    top, left = centre_box(new_h, new_w, crop)
    if (top, left, new_h, new_w) != (0, 0, crop, crop):
        image = image.crop((left, top, left + crop, top + crop))
    return np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays


def as_hwc_rgb(array: np.ndarray) -> np.ndarray:
    """A uint8 image array as HWC RGB: grayscale (HW or HW1) is replicated to three channels."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(f"expected an HW, HW1, HW3 or HW4 image, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array, dtype=np.uint8)


def fit_array(array: np.ndarray, resize: int | tuple[int, int], crop: int) -> np.ndarray:
    """:func:`fit_pil` for a uint8 HWC array; returns the input untouched when it already fits."""
    array = as_hwc_rgb(array)
    height, width = array.shape[:2]
    if resized_size(height, width, resize) == (height, width) and height == width == crop:
        return array
    return fit_pil(Image.fromarray(array), resize, crop)


def hwc_to_chw_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 HWC numpy -> uint8 CHW torch tensor (a copy, so workers never share buffers)."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted, so set order is reproducible."""
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                found.append(Path(directory) / name)
    return found
