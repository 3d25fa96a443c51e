"""The shapes of the ``shapes`` benchmark: signed-distance functions and their measured geometry.

Why a module of its own: the shape library (what an object looks like, at unit scale, in local
coordinates) is a job apart from rendering a set (placing, colouring and texturing objects in
:mod:`harness.data.shapes`); a new shape is one entry here. Each function returns a signed
distance, negative inside; :func:`shape_geometry` measures a shape's area and bounding radius once
on a fine grid, so that object sizes never depend on hand-computed constants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

Sdf = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------------
# Shape library: signed distance functions in local coordinates (negative inside)
# --------------------------------------------------------------------------------------------------


def _circle(x: np.ndarray, y: np.ndarray, cx: float = 0.0, cy: float = 0.0, r: float = 1.0) -> np.ndarray:
    """Exact SDF of a disc: the basic building block of circle, ring, crescent, heart."""
    return np.hypot(x - cx, y - cy) - r


def _polygon(x: np.ndarray, y: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    """SDF of a convex polygon as the maximum over its edges' half-plane distances.

    Exact inside and along the edges, slightly underestimated outside near corners, which is all the
    one-pixel anti-aliasing needs; non-convex shapes are unions (``np.minimum``) of convex pieces.
    """
    v = np.asarray(vertices, dtype=float)
    area2 = np.sum(v[:, 0] * np.roll(v[:, 1], -1) - np.roll(v[:, 0], -1) * v[:, 1])
    if area2 < 0:  # make the order counter-clockwise so that (ey, -ex) is the outward normal
        v = v[::-1]
    out: np.ndarray | None = None
    for (ax, ay), (bx, by) in zip(v, np.roll(v, -1, axis=0)):
        ex, ey = bx - ax, by - ay
        length = np.hypot(ex, ey)
        dist = (x - ax) * (ey / length) - (y - ay) * (ex / length)
        out = dist if out is None else np.maximum(out, dist)
    assert out is not None
    return out


def _regular(n: int, radius: float = 1.0, phase: float = np.pi / 2) -> list[tuple[float, float]]:
    """Vertices of a regular n-gon, one vertex pointing up by default."""
    angles = phase + 2 * np.pi * np.arange(n) / n
    return [(radius * np.cos(a), radius * np.sin(a)) for a in angles]


def _box(x0: float, x1: float, y0: float, y1: float) -> list[tuple[float, float]]:
    """Vertices of an axis-aligned rectangle."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _star(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Five-pointed star: the inner pentagon united with five convex kites (centre, inner, tip, inner).

    The pentagon overlaps the seams where neighbouring kites only touch; without it the union's SDF
    would be zero along those seams and anti-aliasing would draw faint lines inside the star.
    """
    inner = 0.5
    out: np.ndarray = _polygon(x, y, _regular(5, radius=inner, phase=np.pi / 2 + np.pi / 5))
    for k in range(5):
        tip = np.pi / 2 + 2 * np.pi * k / 5
        kite = [
            (0.0, 0.0),
            (inner * np.cos(tip - np.pi / 5), inner * np.sin(tip - np.pi / 5)),
            (np.cos(tip), np.sin(tip)),
            (inner * np.cos(tip + np.pi / 5), inner * np.sin(tip + np.pi / 5)),
        ]
        out = np.minimum(out, _polygon(x, y, kite))
    return out


def _heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two discs (the lobes) joined to a downward-pointing triangle."""
    lobes = np.minimum(_circle(x, y, -0.4, 0.3, 0.48), _circle(x, y, 0.4, 0.3, 0.48))
    tip = _polygon(x, y, [(-0.85, 0.15), (0.85, 0.15), (0.0, -0.9)])
    return np.minimum(lobes, tip)


SHAPE_SDFS: dict[str, Sdf] = {
    # ID classes: chosen so that a small CNN separates them easily (a hole, corners, arms, spikes).
    "circle": lambda x, y: _circle(x, y),
    "square": lambda x, y: _polygon(x, y, _regular(4, phase=np.pi / 4)),
    "triangle": lambda x, y: _polygon(x, y, _regular(3)),
    "plus": lambda x, y: np.minimum(
        _polygon(x, y, _box(-1, 1, -0.34, 0.34)), _polygon(x, y, _box(-0.34, 0.34, -1, 1))
    ),
    "ring": lambda x, y: np.abs(np.hypot(x, y) - 0.72) - 0.28,
    "star": _star,
    # near-OOD (test): unseen shapes.
    "hexagon": lambda x, y: _polygon(x, y, _regular(6)),
    "heart": _heart,
    "crescent": lambda x, y: np.maximum(_circle(x, y), -_circle(x, y, 0.45, 0.0, 0.8)),
    "arrow": lambda x, y: np.minimum(
        _polygon(x, y, _box(-0.95, 0.15, -0.2, 0.2)), _polygon(x, y, [(0.05, 0.6), (0.95, 0.0), (0.05, -0.6)])
    ),
    # OOD-val only: unseen shapes that no test set uses.
    "ell": lambda x, y: np.minimum(
        _polygon(x, y, _box(-0.7, -0.2, -0.9, 0.9)), _polygon(x, y, _box(-0.7, 0.7, -0.9, -0.4))
    ),
    "semicircle": lambda x, y: np.maximum(_circle(x, y, 0.0, -0.4), -(y + 0.4)),
}


@dataclass(frozen=True)
class ShapeGeometry:
    """Area and bounding radius of a shape at unit scale, used to size it to a target coverage."""

    area: float
    radius: float


@cache
def shape_geometry(name: str) -> ShapeGeometry:
    """Measure a shape once on a fine grid, so that sizes never depend on hand-computed constants."""
    grid = np.linspace(-1.6, 1.6, 641)
    x, y = np.meshgrid(grid, grid)
    inside = SHAPE_SDFS[name](x, y) <= 0
    cell = (grid[1] - grid[0]) ** 2
    return ShapeGeometry(area=float(inside.sum() * cell), radius=float(np.hypot(x, y)[inside].max()))
