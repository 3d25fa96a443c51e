"""The built-in offline benchmark ``shapes``: procedural, deterministic, generated in memory.

Why it exists: ``harness bench`` must run on a fresh machine with nothing downloaded, and it must
exercise the whole pipeline (training, feature extraction, every detector, every metric) within
minutes on a CPU. It is also the smallest possible demonstration of what DFB is about: the ID images
are *objects on a background*, and the OOD groups shift either the foreground (unseen shapes on the
same kind of background) or the background (the same objects, or none, on textures and noise). A
classifier-only detector mostly sees the foreground; a background score catches the background shift.

Design (all images ``size`` x ``size`` RGB, 32 by default):

* **Objects** are drawn from signed-distance functions (SDFs) of rotated, scaled, shifted local
  coordinates, evaluated on a coordinate grid for a whole batch at once (no per-pixel Python loop).
  The SDF in pixel units gives a one-pixel anti-aliased coverage ``alpha``; the ground-truth mask is
  ``alpha >= 0.5``. Every shape is scaled so that its area covers a random 15-35 % of the image
  (less only where a thin shape would otherwise not fit) and positioned so that it lies completely
  inside the frame, which keeps the mask coverage inside the designed range and lets class-activation
  maps localise the object.
* **Object colour** has a random hue but a luminance at least ``_MIN_CONTRAST`` away from the mean
  background under the object, so objects are always clearly visible.
* **ID backgrounds** are smooth random linear or radial two-colour gradients. Every image (ID and OOD
  alike) gets mild Gaussian sensor noise, so noise alone never distinguishes the groups.

Sets (see :data:`SHAPES_SETS`): ``train``/``val``/``test`` (ID, class-balanced),
``near_unseen_shapes`` (foreground shift: hexagon, heart, crescent, arrow on ID backgrounds),
``textures`` (background shift: ID objects on stripes, checkerboards, fractal noise),
``plain_textures`` (the same textures, no object), ``noise`` (pure per-pixel noise) and ``ood_val``
(for hyper-parameter search only). ``ood_val`` is disjoint *in kind* from every test OOD set: it uses
background families no test set uses (polka dots, blurred colour blobs) and unseen shapes no test set
uses (an L shape, a semicircle), so a search tuned on it never sees a test distribution.

Determinism: each set's random generator is derived from ``(seed, set name)`` through
:class:`numpy.random.SeedSequence`, so sets and seeds never share samples and regeneration is
bit-identical. The requested ``count`` is part of the recipe: a different count is a different
sample, not a prefix of a larger one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.harness.data.shape_library import SHAPE_SDFS, shape_geometry

__all__ = ["SHAPES_CLASSES", "SHAPES_SETS", "generate_set", "preview_grid"]

#: The K = 6 in-distribution object classes, in label order.
SHAPES_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "plus", "ring", "star")

#: Every set name, mapped to a one-line description.
SHAPES_SETS: dict[str, str] = {
    "train": "ID: the 6 shape classes on smooth linear/radial gradient backgrounds with mild noise",
    "val": "ID: validation split, same distribution as train",
    "test": "ID: test split, same distribution as train",
    "ood_val": "search-only OOD: ID shapes on polka dots or colour blobs; L and semicircle on ID backgrounds",
    "near_unseen_shapes": "near-OOD: unseen shapes (hexagon, heart, crescent, arrow) on ID backgrounds",
    "textures": "far-OOD: ID shapes on stripes, checkerboards and fractal noise",
    "plain_textures": "far-OOD: stripes, checkerboards and fractal noise without any object",
    "noise": "far-OOD: pure per-pixel noise (uniform colour, Gaussian colour, grey)",
}

_DEFAULT_COUNTS: dict[str, int] = {
    "train": 3000,
    "val": 500,
    "test": 1000,
    "ood_val": 500,
    "near_unseen_shapes": 1000,
    "textures": 1000,
    "plain_textures": 1000,
    "noise": 1000,
}

_ID_SETS: frozenset[str] = frozenset({"train", "val", "test"})

_NEAR_SHAPES: tuple[str, ...] = ("hexagon", "heart", "crescent", "arrow")
_OOD_VAL_SHAPES: tuple[str, ...] = ("ell", "semicircle")
_ID_BACKGROUNDS: tuple[str, ...] = ("linear_gradient", "radial_gradient")
_TEXTURE_BACKGROUNDS: tuple[str, ...] = ("stripes", "checkerboard", "fractal_noise")
_OOD_VAL_BACKGROUNDS: tuple[str, ...] = ("polka_dots", "blobs")

# Object size: fraction of the image area covered by the object, and how far out (in normalised
# coordinates, the frame is [-1, 1]) the object may reach, so that it always lies inside the image.
_COVERAGE_RANGE: tuple[float, float] = (0.15, 0.35)
_FIT_RADIUS = 0.96
# Minimum luminance difference between an object and the mean background under it.
_MIN_CONTRAST = 0.3
# Mild per-pixel Gaussian sensor noise (standard deviation range, on the [0, 1] intensity scale).
_SENSOR_NOISE = (0.005, 0.025)
# Images are rendered in chunks to bound peak memory for large counts or sizes.
_CHUNK_PIXELS = 2**21

_LUMA = np.array([0.299, 0.587, 0.114])

# --------------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------------


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of the last axis: the quantity the contrast guarantee is expressed in."""
    return rgb @ _LUMA


def _contrasting(rng: np.random.Generator, ref_lum: np.ndarray, min_delta: float) -> np.ndarray:
    """Random-hue colours whose luminance is at least ``min_delta`` away from ``ref_lum``.

    The side (brighter or darker) is chosen at random in proportion to the room left on each side;
    the random base colour is then lightened towards white or darkened towards black, which keeps its
    hue while hitting the target luminance exactly.
    """
    n = ref_lum.shape[0]
    base = rng.uniform(0.0, 1.0, (n, 3))
    pick = rng.uniform(0.0, 1.0, n)
    where = rng.uniform(0.0, 1.0, n)
    up_lo = np.minimum(ref_lum + min_delta, 1.0)
    down_hi = np.maximum(ref_lum - min_delta, 0.0)
    up_room, down_room = 1.0 - up_lo, down_hi
    go_up = pick * (up_room + down_room + 1e-12) < up_room
    target = np.where(go_up, up_lo + where * up_room, where * down_hi)
    lum = _luminance(base)
    lighten = np.clip((target - lum) / np.maximum(1.0 - lum, 1e-6), 0.0, 1.0)
    darken = np.clip(target / np.maximum(lum, 1e-6), 0.0, 1.0)
    return np.where((target >= lum)[:, None], base + lighten[:, None] * (1.0 - base), base * darken[:, None])


def _two_colours(rng: np.random.Generator, n: int, min_delta: float) -> tuple[np.ndarray, np.ndarray]:
    """A random colour and a second one at least ``min_delta`` apart in luminance (for textures)."""
    first = rng.uniform(0.0, 1.0, (n, 3))
    return first, _contrasting(rng, _luminance(first), min_delta)


def _mix(first: np.ndarray, second: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend per-image colours (n, 3) with a per-pixel weight field (n, h, w) into (n, h, w, 3)."""
    return first[:, None, None, :] * (1.0 - t[..., None]) + second[:, None, None, :] * t[..., None]


# --------------------------------------------------------------------------------------------------
# Background families: each maps (rng, coordinate grid, n) to float images (n, size, size, 3) in [0, 1]
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Pixel-centre coordinates normalised to [-1, 1] (x to the right, y down), plus the image size."""

    x: np.ndarray
    y: np.ndarray
    size: int

    @staticmethod
    def of(size: int) -> _Grid:
        """Build the grid for ``size`` x ``size`` images."""
        axis = (2.0 * np.arange(size) + 1.0) / size - 1.0
        y, x = np.meshgrid(axis, axis, indexing="ij")
        return _Grid(x=x, y=y, size=size)


def _rotated(grid: _Grid, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates rotated by a per-image angle, shape (n, size, size) each."""
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    return c * grid.x + s * grid.y, -s * grid.x + c * grid.y


def _bg_linear_gradient(rng: np.random.Generator, grid: _Grid, n: int) -> np.ndarray:
    """ID: two nearby colours blended along a random direction (smooth, no texture)."""
    c0 = rng.uniform(0.05, 0.95, (n, 3))
    c1 = np.clip(c0 + rng.uniform(-0.35, 0.35, (n, 3)), 0.0, 1.0)
    u, _ = _rotated(grid, rng.uniform(0.0, 2 * np.pi, n))
    return _mix(c0, c1, 0.5 + u / (2 * np.sqrt(2)))


def _bg_radial_gradient(rng: np.random.Generator, grid: _Grid, n: int) -> np.ndarray:
    """ID: two nearby colours blended with the distance from a random centre (smooth, no texture)."""
    c0 = rng.uniform(0.05, 0.95, (n, 3))
    c1 = np.clip(c0 + rng.uniform(-0.35, 0.35, (n, 3)), 0.0, 1.0)
    cx, cy = rng.uniform(-1.0, 1.0, (2, n))[:, :, None, None]
    reach = rng.uniform(1.2, 2.8, n)[:, None, None]
    return _mix(c0, c1, np.clip(np.hypot(grid.x - cx, grid.y - cy) / reach, 0.0, 1.0))


def _soft_square_wave(wave: np.ndarray, sharpness: np.ndarray) -> np.ndarray:
    """Map a wave in [-1, 1] to [0, 1], from sinusoidal (low sharpness) to nearly square (high)."""
    k = sharpness[:, None, None]
    return 0.5 + 0.5 * np.tanh(k * wave) / np.tanh(k)


def _bg_stripes(rng: np.random.Generator, grid: _Grid, n: int) -> np.ndarray:
    """Far-OOD texture: stripes at a random angle, period of 3.5-9 pixels (at 32 px), random phase."""
    c0, c1 = _two_colours(rng, n, 0.3)
    u, _ = _rotated(grid, rng.uniform(0.0, np.pi, n))
    period = rng.uniform(0.22, 0.56, n)[:, None, None]  # in normalised units: 2 / size per pixel
    phase = rng.uniform(0.0, 2 * np.pi, n)[:, None, None]
    return _mix(c0, c1, _soft_square_wave(np.sin(2 * np.pi * u / period + phase), rng.uniform(1.0, 5.0, n)))


def _bg_checkerboard(rng: np.random.Generator, grid: _Grid, n: int) -> np.ndarray:
    """Far-OOD texture: a rotated checkerboard with cells of 2.5-6 pixels (at 32 px)."""
    c0, c1 = _two_colours(rng, n, 0.3)
    u, v = _rotated(grid, rng.uniform(0.0, np.pi / 2, n))
    cell = rng.uniform(0.16, 0.38, n)[:, None, None]
    off_u, off_v = rng.uniform(0.0, 2.0, (2, n))[:, :, None, None]
    wave = np.sin(np.pi * (u / cell + off_u)) * np.sin(np.pi * (v / cell + off_v))
    return _mix(c0, c1, _soft_square_wave(wave, rng.uniform(3.0, 8.0, n)))


def _bg_fractal_noise(rng: np.random.Generator, grid: _Grid, n: int) -> np.ndarray:
    """Far-OOD texture: 1/f^beta ("pink" to slightly red) noise, made by shaping white noise's spectrum."""
    size = grid.size
    c0, c1 = _two_colours(rng, n, 0.35)
    beta = rng.uniform(0.5, 1.1, n)[:, None, None]
    white = rng.standard_normal((n, size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    freq = np.hypot(fy, fx)
    freq[0, 0] = np.inf  # drop the mean
    field = np.fft.irfft2(np.fft.rfft2(white) * freq[None] ** -beta, s=(size, size))
    field = (field - field.mean(axis=(1, 2), keepdims=True)) / field.std(axis=(1, 2), keepdims=True)
    return _mix(c0, c1, np.clip(0.5 + 0.25 * field, 0.0, 1.0))


def _bg_polka_dots(rng: np.random.Generator, grid: _Grid, n: int) -> np.ndarray:
    """OOD-val only: anti-aliased dots on a rotated square lattice (period 3-5.5 pixels at 32 px)."""
    c0, c1 = _two_colours(rng, n, 0.3)
    u, v = _rotated(grid, rng.uniform(0.0, np.pi / 2, n))
    period = rng.uniform(0.36, 0.62, n)[:, None, None]
    radius = rng.uniform(0.22, 0.36, n)[:, None, None] * period
    off_u, off_v = rng.uniform(0.0, 1.0, (2, n))[:, :, None, None]
    fu = u / period + off_u
    fv = v / period + off_v
    dist = np.hypot(fu - np.round(fu), fv - np.round(fv)) * period
    pixel = 2.0 / grid.size
    return _mix(c0, c1, np.clip(0.5 + (radius - dist) / pixel, 0.0, 1.0))


def _bg_blobs(rng: np.random.Generator, grid: _Grid, n: int) -> np.ndarray:
    """OOD-val only: a few blurred blobs of unrelated colours (smooth, but multi-coloured)."""
    blobs = 4
    base = rng.uniform(0.0, 1.0, (n, 3))
    colours = rng.uniform(0.0, 1.0, (n, blobs, 3))
    cx, cy = rng.uniform(-1.2, 1.2, (2, n, blobs))[:, :, :, None, None]
    sigma = rng.uniform(0.25, 0.6, (n, blobs))[:, :, None, None]
    weight = np.exp(-((grid.x - cx) ** 2 + (grid.y - cy) ** 2) / (2 * sigma**2))  # (n, blobs, h, w)
    total = 0.15 + weight.sum(axis=1)
    mixed = 0.15 * base[:, None, None, :] + np.einsum("nbhw,nbc->nhwc", weight, colours)
    return mixed / total[..., None]


def _bg_pixel_noise(rng: np.random.Generator, grid: _Grid, n: int) -> np.ndarray:
    """Far-OOD: pure i.i.d. per-pixel noise, one of uniform colour, Gaussian colour or grey noise."""
    size = grid.size
    kind = rng.integers(0, 3, n)[:, None, None, None]
    uniform = rng.uniform(0.0, 1.0, (n, size, size, 3))
    mean = rng.uniform(0.25, 0.75, (n, 1, 1, 3))
    sigma = rng.uniform(0.1, 0.3, (n, 1, 1, 1))
    gaussian = mean + sigma * rng.standard_normal((n, size, size, 3))
    grey = np.repeat(rng.uniform(0.0, 1.0, (n, size, size, 1)), 3, axis=3)
    return np.clip(np.where(kind == 0, uniform, np.where(kind == 1, gaussian, grey)), 0.0, 1.0)


_BACKGROUNDS: dict[str, Callable[[np.random.Generator, _Grid, int], np.ndarray]] = {
    "linear_gradient": _bg_linear_gradient,
    "radial_gradient": _bg_radial_gradient,
    "stripes": _bg_stripes,
    "checkerboard": _bg_checkerboard,
    "fractal_noise": _bg_fractal_noise,
    "polka_dots": _bg_polka_dots,
    "blobs": _bg_blobs,
    "pixel_noise": _bg_pixel_noise,
}

_SHAPE_NAMES: tuple[str, ...] = tuple(SHAPE_SDFS)
_BACKGROUND_NAMES: tuple[str, ...] = tuple(_BACKGROUNDS)


# --------------------------------------------------------------------------------------------------
# Set recipes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Component:
    """One part of a set: objects drawn from ``shapes`` (none if empty) on ``backgrounds``."""

    shapes: tuple[str, ...]
    backgrounds: tuple[str, ...]


_RECIPES: dict[str, tuple[_Component, ...]] = {
    "train": (_Component(SHAPES_CLASSES, _ID_BACKGROUNDS),),
    "val": (_Component(SHAPES_CLASSES, _ID_BACKGROUNDS),),
    "test": (_Component(SHAPES_CLASSES, _ID_BACKGROUNDS),),
    "ood_val": (
        _Component(SHAPES_CLASSES, ("polka_dots",)),
        _Component(SHAPES_CLASSES, ("blobs",)),
        _Component(_OOD_VAL_SHAPES, _ID_BACKGROUNDS),
    ),
    "near_unseen_shapes": (_Component(_NEAR_SHAPES, _ID_BACKGROUNDS),),
    "textures": (_Component(SHAPES_CLASSES, _TEXTURE_BACKGROUNDS),),
    "plain_textures": (_Component((), _TEXTURE_BACKGROUNDS),),
    "noise": (_Component((), ("pixel_noise",)),),
}
assert set(_RECIPES) == set(SHAPES_SETS) == set(_DEFAULT_COUNTS)


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``n`` indices into ``k`` options, as equal in number as possible (differ by at most one), shuffled."""
    return rng.permutation(np.arange(n) % k)


def _set_rng(name: str, seed: int) -> np.random.Generator:
    """The set's own generator: a stable hash of the name plus the seed, through SeedSequence."""
    name_key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(np.random.SeedSequence([seed, name_key]))


def _plan(rng: np.random.Generator, name: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image shape index into ``_SHAPE_NAMES`` (-1: no object) and background index, balanced."""
    components = _RECIPES[name]
    which = _balanced(rng, count, len(components))
    shape_idx = np.full(count, -1, dtype=np.int64)
    bg_idx = np.zeros(count, dtype=np.int64)
    for c, comp in enumerate(components):
        members = np.flatnonzero(which == c)
        if comp.shapes:
            picks = _balanced(rng, members.size, len(comp.shapes))
            shape_idx[members] = np.array([_SHAPE_NAMES.index(s) for s in comp.shapes])[picks]
        picks = _balanced(rng, members.size, len(comp.backgrounds))
        bg_idx[members] = np.array([_BACKGROUND_NAMES.index(b) for b in comp.backgrounds])[picks]
    return shape_idx, bg_idx


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _object_alpha(rng: np.random.Generator, grid: _Grid, shape_idx: np.ndarray) -> np.ndarray:
    """Anti-aliased object coverage (n, size, size) in [0, 1]; zero for images without an object.

    Per-image parameters are drawn for every image (also those without an object) so that the
    stream of random numbers does not depend on which shapes happen to be in the chunk.
    """
    n = shape_idx.size
    angle = rng.uniform(0.0, 2 * np.pi, n)
    u_cov = rng.uniform(0.0, 1.0, n)
    u_pos = rng.uniform(-1.0, 1.0, (n, 2))
    alpha = np.zeros((n, grid.size, grid.size))
    lo, hi = _COVERAGE_RANGE
    for s in np.unique(shape_idx[shape_idx >= 0]):
        members = np.flatnonzero(shape_idx == s)
        name = _SHAPE_NAMES[s]
        geo = shape_geometry(name)
        # Coverage f of the frame's area 4 needs scale sqrt(4 f / area); cap it so the shape fits.
        cov_max = min(hi, geo.area * (_FIT_RADIUS / geo.radius) ** 2 / 4.0)
        coverage = lo + u_cov[members] * (cov_max - lo)
        scale = np.sqrt(4.0 * coverage / geo.area)
        slack = np.maximum(_FIT_RADIUS - scale * geo.radius, 0.0)
        cx = (u_pos[members, 0] * slack)[:, None, None]
        cy = (u_pos[members, 1] * slack)[:, None, None]
        c = np.cos(angle[members])[:, None, None]
        si = np.sin(angle[members])[:, None, None]
        dx, dy = grid.x - cx, grid.y - cy
        sc = scale[:, None, None]
        local_x = (c * dx + si * dy) / sc
        local_y = (-si * dx + c * dy) / sc
        sdf_pixels = SHAPE_SDFS[name](local_x, local_y) * sc * (grid.size / 2.0)
        alpha[members] = np.clip(0.5 - sdf_pixels, 0.0, 1.0)
    return alpha


def _render(
    rng: np.random.Generator, grid: _Grid, shape_idx: np.ndarray, bg_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Render one chunk: backgrounds, then objects in contrasting colours, then sensor noise."""
    n = shape_idx.size
    background = np.zeros((n, grid.size, grid.size, 3))
    for b in np.unique(bg_idx):
        members = np.flatnonzero(bg_idx == b)
        background[members] = _BACKGROUNDS[_BACKGROUND_NAMES[b]](rng, grid, members.size)
    alpha = _object_alpha(rng, grid, shape_idx)
    weight = alpha.sum(axis=(1, 2))
    under = np.einsum("nhw,nhwc->nc", alpha, background) / np.maximum(weight, 1e-9)[:, None]
    under[weight <= 0] = 0.5
    colour = _contrasting(rng, _luminance(under), _MIN_CONTRAST)
    image = background * (1.0 - alpha[..., None]) + colour[:, None, None, :] * alpha[..., None]
    sigma = rng.uniform(*_SENSOR_NOISE, n)[:, None, None, None]
    image = image + sigma * rng.standard_normal(image.shape)
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return pixels, alpha >= 0.5


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


@overload
def generate_set(
    name: str,
    count: int | None = ...,
    seed: int = ...,
    size: int = ...,
    *,
    return_masks: Literal[False] = ...,
) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def generate_set(
    name: str, count: int | None = ..., seed: int = ..., size: int = ..., *, return_masks: Literal[True]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@overload
def generate_set(
    name: str, count: int | None = ..., seed: int = ..., size: int = ..., *, return_masks: bool
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def generate_set(
    name: str, count: int | None = None, seed: int = 0, size: int = 32, *, return_masks: bool = False
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one set of the ``shapes`` benchmark, deterministically from ``(seed, name)``.

    Args:
        name: one of :data:`SHAPES_SETS`.
        count: number of images; ``None`` uses the set's default (train 3000, val 500, test 1000,
            ood_val 500, every test OOD set 1000). Part of the recipe: another count is another sample.
        seed: non-negative base seed; each set derives its own stream from it, so sets never overlap.
        size: image side in pixels (at least 16; everything scales with it).
        return_masks: also return the ground-truth object masks, e.g. to score CAM pseudo-masks.

    Returns:
        ``(images, labels)`` or ``(images, labels, masks)``: images uint8 (N, size, size, 3), labels
        int64 (N,) with the class index into :data:`SHAPES_CLASSES` for ID sets and -1 for OOD sets,
        masks bool (N, size, size), all False for images without an object.
    """
    if name not in _RECIPES:
        raise InputError(f"unknown shapes set {name!r}; valid names: {', '.join(SHAPES_SETS)}")
    n = _DEFAULT_COUNTS[name] if count is None else int(count)
    if n < 1:
        raise InputError(f"count must be at least 1, got {count!r}")
    if int(seed) < 0:
        raise InputError(f"seed must be non-negative, got {seed!r}")
    if int(size) < 16:
        raise InputError(f"size must be at least 16 pixels, got {size!r}")
    size = int(size)
    rng = _set_rng(name, int(seed))
    shape_idx, bg_idx = _plan(rng, name, n)
    grid = _Grid.of(size)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        images[start:stop], masks[start:stop] = _render(rng, grid, shape_idx[start:stop], bg_idx[start:stop])
    if name in _ID_SETS:
        class_of = np.array([SHAPES_CLASSES.index(s) if s in SHAPES_CLASSES else -1 for s in _SHAPE_NAMES])
        labels = class_of[shape_idx].astype(np.int64)
    else:
        labels = np.full(n, -1, dtype=np.int64)
    if return_masks:
        return images, labels, masks
    return images, labels


def preview_grid(seed: int = 0, per_set: int = 8) -> np.ndarray:
    """A uint8 RGB contact sheet: one row of ``per_set`` images per set, in :data:`SHAPES_SETS` order.

    For the README and for eyeballing changes to the generator: rows are separated by a 2-pixel white
    gutter, so the result is ``(8 * 34 + 2, per_set * 34 + 2, 3)`` for 32-pixel images.
    """
    if per_set < 1:
        raise InputError(f"per_set must be at least 1, got {per_set!r}")
    size, gap = 32, 2
    rows, cols = len(SHAPES_SETS), per_set
    sheet = np.full((rows * (size + gap) + gap, cols * (size + gap) + gap, 3), 255, dtype=np.uint8)
    for r, name in enumerate(SHAPES_SETS):
        images, _ = generate_set(name, count=per_set, seed=seed, size=size)
        for c in range(cols):
            top, left = gap + r * (size + gap), gap + c * (size + gap)
            sheet[top : top + size, left : left + size] = images[c]
    return sheet
