"""The per-item test transform: the dataset's own fit, then the benchmark's normalisation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfb_ood.harness.data import load_benchmark, test_transform
from dfb_ood.harness.data.images import fit_pil
from dfb_ood.harness.data.transforms import normalize


@pytest.fixture
def dfb():
    return load_benchmark("cifar10_dfb", data_root=Path("/unused"))


@pytest.fixture
def c10():
    return load_benchmark("cifar10", data_root=Path("/unused"))


def random_image(h=32, w=32, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def test_test_transform_normalises_and_fits(dfb, c10):
    image = random_image()
    out = test_transform(c10)(image)
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    mean = torch.tensor(c10.mean).view(3, 1, 1)
    std = torch.tensor(c10.std).view(3, 1, 1)
    assert torch.allclose(out, (image.float() / 255 - mean) / std, atol=1e-6)
    big = test_transform(dfb)(image)
    assert big.shape == (3, 128, 128) and big.min() >= -1 and big.max() <= 1


def test_resize_matches_the_pil_path_exactly(dfb):
    # The dataset's own test-size images come from Pillow; the transform must give the same pixels.
    image = random_image(20, 30)
    through_transform = test_transform(dfb)(image)
    through_pil = fit_pil(Image.fromarray(image.permute(1, 2, 0).numpy()), (128, 128), 128)
    expected = normalize(torch.from_numpy(through_pil).permute(2, 0, 1), dfb.mean, dfb.std)
    assert torch.equal(through_transform, expected)


def test_inputs_other_than_uint8_chw(c10):
    transform = test_transform(c10)
    assert transform(np.zeros((32, 32, 3), dtype=np.uint8)).shape == (3, 32, 32)
    assert transform(Image.new("L", (32, 32))).shape == (3, 32, 32)  # grayscale replicated
    assert transform(torch.zeros(1, 32, 32, dtype=torch.uint8)).shape == (3, 32, 32)
    assert transform(torch.zeros(32, 32, dtype=torch.uint8)).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        transform(torch.zeros(2, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        transform(torch.full((3, 40, 40), 0.5))


def test_transform_pickles_for_dataloader_workers(c10):
    transform = test_transform(c10)
    again = pickle.loads(pickle.dumps(transform))
    image = random_image()
    assert torch.equal(again(image), transform(image)) and repr(again) == repr(transform)


def test_normalize_batches_and_float_inputs():
    batch = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(batch, (0.5,) * 3, (0.25,) * 3), torch.full((2, 3, 4, 4), 2.0))
    floats = torch.full((3, 4, 4), 0.5)
    assert torch.allclose(normalize(floats, (0.5,) * 3, (0.25,) * 3), torch.zeros(3, 4, 4))
    assert floats.eq(0.5).all()  # the input is not changed in place
