"""Tests for harness.data.shapes, the procedural offline benchmark.

Beyond shapes and determinism, these check that each OOD group differs from ID *in the way it was
designed to*, with simple statistics that need no trained network:

* far-OOD (``textures``, ``plain_textures``, ``noise``): background high-frequency energy (mean
  absolute Laplacian of the luminance over background pixels) far above ID's;
* near-OOD (``near_unseen_shapes``): background statistics equal to ID's, while the object masks are
  told apart from ID masks by a rotation/scale-invariant shape descriptor and a 1-nearest-neighbour
  check.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

from dfb_ood.harness.data import shapes
from dfb_ood.harness.data.shapes import SHAPES_CLASSES, SHAPES_SETS, generate_set, preview_grid

ID_SETS = ("train", "val", "test")
FAR_SETS = ("textures", "plain_textures", "noise")
OBJECT_SETS = ("train", "val", "test", "ood_val", "near_unseen_shapes", "textures")
DEFAULT_COUNTS = {
    "train": 3000,
    "val": 500,
    "test": 1000,
    "ood_val": 500,
    "near_unseen_shapes": 1000,
    "textures": 1000,
    "plain_textures": 1000,
    "noise": 1000,
}
LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def all_sets():
    """Every set at its default count, with masks, generated once; also records the total time."""
    start = time.perf_counter()
    data = {name: generate_set(name, return_masks=True) for name in SHAPES_SETS}
    return data, time.perf_counter() - start


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def _dilate(masks: np.ndarray, steps: int) -> np.ndarray:
    out = masks.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown[:, :, 1:] |= out[:, :, :-1]
        grown[:, :, :-1] |= out[:, :, 1:]
        out = grown
    return out


def background_laplacian(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: mean |5-point Laplacian| of luminance over pixels at least 2 px away from the object."""
    lum = images.astype(float) @ LUMA
    lap = np.abs(
        4 * lum[:, 1:-1, 1:-1] - lum[:, :-2, 1:-1] - lum[:, 2:, 1:-1] - lum[:, 1:-1, :-2] - lum[:, 1:-1, 2:]
    )
    background = ~_dilate(masks, 2)[:, 1:-1, 1:-1]
    return (lap * background).sum(axis=(1, 2)) / np.maximum(background.sum(axis=(1, 2)), 1)


def shape_descriptors(masks: np.ndarray, bins: int = 10, angles: int = 32) -> np.ndarray:
    """Translation-, rotation- and scale-invariant mask descriptor.

    Concatenates the histogram of pixel distances from the centroid (in units of sqrt(area); sees
    holes and elongation) with the magnitudes of the low Fourier harmonics of the polar signature
    (maximum normalised radius per angular sector; sees 3-, 4-, 5-, 6-fold symmetry).
    """
    _, h, w = masks.shape
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    m = masks.astype(float)
    area = m.sum(axis=(1, 2))
    cy = (m * yy).sum(axis=(1, 2)) / area
    cx = (m * xx).sum(axis=(1, 2)) / area
    dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
    radius = np.hypot(dx, dy) / np.sqrt(area)[:, None, None]
    ring = np.clip(np.digitize(radius, np.linspace(0.0, 1.4, bins + 1)) - 1, 0, bins)
    hist = np.stack([((ring == b) & masks).sum(axis=(1, 2)) for b in range(bins + 1)], axis=1) / area[:, None]
    sector = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * angles).astype(int) % angles
    signature = np.stack(
        [np.where((sector == k) & masks, radius, 0.0).max(axis=(1, 2)) for k in range(angles)], 1
    )
    spectrum = np.abs(np.fft.rfft(signature / signature.mean(axis=1, keepdims=True), axis=1))[:, 1:9] / angles
    return np.concatenate([hist, spectrum], axis=1)


def nearest_neighbour(features: np.ndarray) -> np.ndarray:
    """Index of each row's nearest other row (leave-one-out), squared Euclidean distance."""
    sq = (features**2).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * features @ features.T
    np.fill_diagonal(dist, np.inf)
    return dist.argmin(axis=1)


# --------------------------------------------------------------------------------------------------
# API, shapes, dtypes, labels
# --------------------------------------------------------------------------------------------------


def test_public_constants():
    assert len(SHAPES_CLASSES) == 6 and len(set(SHAPES_CLASSES)) == 6
    assert set(SHAPES_SETS) == set(DEFAULT_COUNTS)
    for description in SHAPES_SETS.values():
        assert isinstance(description, str) and description and "\n" not in description


@pytest.mark.parametrize("name", list(DEFAULT_COUNTS))
def test_default_counts_shapes_dtypes(all_sets, name):
    images, labels, masks = all_sets[0][name]
    n = DEFAULT_COUNTS[name]
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert masks.shape == (n, 32, 32) and masks.dtype == np.bool_


def test_labels_and_class_balance(all_sets):
    data = all_sets[0]
    for name in ID_SETS:
        labels = data[name][1]
        assert labels.min() >= 0 and labels.max() < len(SHAPES_CLASSES)
        counts = np.bincount(labels, minlength=len(SHAPES_CLASSES))
        assert counts.max() - counts.min() <= 1, (name, counts)
    for name in set(SHAPES_SETS) - set(ID_SETS):
        assert np.all(data[name][1] == -1), name


def test_return_masks_flag():
    plain = generate_set("val", count=12, seed=5)
    with_masks = generate_set("val", count=12, seed=5, return_masks=True)
    assert len(plain) == 2 and len(with_masks) == 3
    np.testing.assert_array_equal(plain[0], with_masks[0])
    np.testing.assert_array_equal(plain[1], with_masks[1])


def test_other_sizes():
    images, labels, masks = generate_set("train", count=24, seed=1, size=48, return_masks=True)
    assert images.shape == (24, 48, 48, 3) and masks.shape == (24, 48, 48) and labels.shape == (24,)
    coverage = masks.mean(axis=(1, 2))
    assert coverage.min() > 0.12 and coverage.max() < 0.5


def test_invalid_arguments():
    with pytest.raises(ValueError, match="valid names") as info:
        generate_set("imagenet")
    for name in SHAPES_SETS:
        assert name in str(info.value)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="count"):
            generate_set("train", count=bad)
    with pytest.raises(ValueError, match="seed"):
        generate_set("train", count=4, seed=-1)
    with pytest.raises(ValueError, match="size"):
        generate_set("train", count=4, size=4)
    with pytest.raises(ValueError, match="per_set"):
        preview_grid(per_set=0)


# --------------------------------------------------------------------------------------------------
# Determinism and disjointness
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train", "textures", "noise", "ood_val"])
def test_deterministic_per_seed(name):
    first = generate_set(name, count=40, seed=7, return_masks=True)
    again = generate_set(name, count=40, seed=7, return_masks=True)
    other = generate_set(name, count=40, seed=8)
    for a, b in zip(first, again):
        assert a.tobytes() == b.tobytes()
    assert first[0].tobytes() != other[0].tobytes()


def test_default_set_matches_explicit_seed_zero(all_sets):
    images, labels = generate_set("val", count=500, seed=0)
    assert images.tobytes() == all_sets[0]["val"][0].tobytes()
    np.testing.assert_array_equal(labels, all_sets[0]["val"][1])


def test_no_image_shared_within_or_across_sets(all_sets):
    seen: dict[bytes, str] = {}
    for name, (images, _, _) in all_sets[0].items():
        for image in images:
            digest = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
            assert digest not in seen, f"an image of {name} repeats one of {seen.get(digest)}"
            seen[digest] = name


def test_different_seed_shares_no_image():
    a = {img.tobytes() for img in generate_set("test", count=200, seed=0)[0]}
    b = {img.tobytes() for img in generate_set("test", count=200, seed=1)[0]}
    assert not a & b


# --------------------------------------------------------------------------------------------------
# Objects: coverage, visibility, shape
# --------------------------------------------------------------------------------------------------


def test_mask_coverage_in_designed_range(all_sets):
    data = all_sets[0]
    for name in OBJECT_SETS:
        coverage = data[name][2].mean(axis=(1, 2))
        assert coverage.min() >= 0.12 and coverage.max() <= 0.5, (name, coverage.min(), coverage.max())
        assert 0.18 <= coverage.mean() <= 0.35, (name, coverage.mean())
    for name in ("plain_textures", "noise"):
        assert not data[name][2].any(), name


def test_objects_contrast_with_background(all_sets):
    """On ID backgrounds the object's mean luminance is clearly apart from the ring around it."""
    images, _, masks = all_sets[0]["test"]
    lum = images.astype(float) @ LUMA
    inner = masks & ~_dilate(~masks, 1)  # object pixels away from the anti-aliased edge
    ring = _dilate(masks, 3) & ~_dilate(masks, 1)
    inside = (lum * inner).sum(axis=(1, 2)) / inner.sum(axis=(1, 2))
    around = (lum * ring).sum(axis=(1, 2)) / ring.sum(axis=(1, 2))
    assert np.min(np.abs(inside - around)) > 0.15 * 255


def test_id_shapes_are_discriminative(all_sets):
    """A 1-nearest-neighbour on mask descriptors alone classifies the ID shapes almost perfectly."""
    _, labels, masks = all_sets[0]["test"]
    neighbour = nearest_neighbour(shape_descriptors(masks))
    assert np.mean(labels[neighbour] == labels) > 0.95


# --------------------------------------------------------------------------------------------------
# OOD groups differ from ID as designed
# --------------------------------------------------------------------------------------------------


def test_far_ood_has_much_more_background_high_frequency(all_sets):
    data = all_sets[0]
    id_energy = background_laplacian(data["test"][0], data["test"][2])
    id_p99 = np.percentile(id_energy, 99)
    for name in FAR_SETS:
        energy = background_laplacian(data[name][0], data[name][2])
        assert energy.mean() > 4 * id_energy.mean(), (name, energy.mean(), id_energy.mean())
        assert np.mean(energy > id_p99) > 0.95, name


def test_near_ood_background_matches_id(all_sets):
    data = all_sets[0]
    id_images, _, id_masks = data["test"]
    near_images, _, near_masks = data["near_unseen_shapes"]
    id_energy = background_laplacian(id_images, id_masks).mean()
    near_energy = background_laplacian(near_images, near_masks).mean()
    assert 0.85 < near_energy / id_energy < 1.15
    id_bg, near_bg = id_images[~id_masks].astype(float), near_images[~near_masks].astype(float)
    assert abs(id_bg.mean() - near_bg.mean()) < 8
    assert abs(id_bg.std() - near_bg.std()) < 8


def test_near_ood_object_shapes_differ_from_id(all_sets):
    """Leave-one-out 1-NN on shape descriptors tells near-OOD masks from ID masks."""
    data = all_sets[0]
    id_features = shape_descriptors(data["test"][2])
    near_features = shape_descriptors(data["near_unseen_shapes"][2])
    features = np.concatenate([id_features, near_features])
    is_near = np.r_[np.zeros(len(id_features), bool), np.ones(len(near_features), bool)]
    neighbour = nearest_neighbour(features)
    assert np.mean(is_near[neighbour][is_near]) > 0.9
    assert np.mean(~is_near[neighbour][~is_near]) > 0.9


def test_ood_val_is_disjoint_in_kind_from_test_ood_sets():
    """Hyper-parameter search on ood_val must never see a test OOD distribution's backgrounds or shapes."""
    recipes = shapes._RECIPES

    def kinds(name: str) -> tuple[set[str], set[str]]:
        backgrounds = {b for c in recipes[name] for b in c.backgrounds}
        objects = {s for c in recipes[name] for s in c.shapes}
        return backgrounds, objects

    id_backgrounds, id_shapes = kinds("train")
    val_backgrounds, val_shapes = kinds("ood_val")
    for name in ("near_unseen_shapes", *FAR_SETS):
        test_backgrounds, test_shapes = kinds(name)
        assert not (val_backgrounds - id_backgrounds) & test_backgrounds, name
        assert not (val_shapes - id_shapes) & test_shapes, name
    # and it is OOD at all: every component shifts either the background or the shapes
    for component in recipes["ood_val"]:
        assert not set(component.backgrounds) <= id_backgrounds or not set(component.shapes) <= id_shapes


# --------------------------------------------------------------------------------------------------
# Preview and time
# --------------------------------------------------------------------------------------------------


def test_preview_grid_shape():
    sheet = preview_grid(seed=0, per_set=5)
    assert sheet.dtype == np.uint8
    assert sheet.shape == (len(SHAPES_SETS) * 34 + 2, 5 * 34 + 2, 3)


def test_generation_time_is_loose_guard(all_sets):
    assert all_sets[1] < 30.0
