"""Transforms: test, the paper's and the CIFAR training recipes, and the dense joint transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import dense_transform, load_benchmark, test_transform, train_transform
from harness.data.images import fit_pil
from harness.data.transforms import DenseTrainTransform, Resize, to_uint8_chw


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


def test_uint8_resize_matches_the_pil_path_exactly(dfb):
    # The dataset's own test-size images come from Pillow; the transform must give the same pixels.
    image = random_image(20, 30)
    through_transform = Resize((128, 128))(image)
    through_pil = fit_pil(Image.fromarray(image.permute(1, 2, 0).numpy()), (128, 128), 128)
    assert torch.equal(through_transform, torch.from_numpy(through_pil).permute(2, 0, 1))
    shorter = Resize(16)(image)
    assert shorter.shape == (3, 16, 24)  # shorter side 16, aspect kept


def test_inputs_other_than_uint8_chw(c10):
    transform = test_transform(c10)
    hwc = np.zeros((32, 32, 3), dtype=np.uint8)
    assert transform(hwc).shape == (3, 32, 32)
    assert transform(Image.new("L", (32, 32))).shape == (3, 32, 32)  # grayscale replicated
    assert transform(torch.zeros(1, 32, 32, dtype=torch.uint8)).shape == (3, 32, 32)
    assert to_uint8_chw(torch.zeros(32, 32, dtype=torch.uint8)).shape == (3, 32, 32)
    as_float = transform(torch.full((3, 40, 40), 0.5))
    assert as_float.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        transform(torch.zeros(2, 8, 8, dtype=torch.uint8))


def test_paper_recipe_resizes_to_160_and_crops_128(dfb):
    torch.manual_seed(0)
    transform = train_transform(dfb, "paper")
    outputs = [transform(random_image()) for _ in range(4)]
    assert all(o.shape == (3, 128, 128) and o.dtype == torch.float32 for o in outputs)
    assert not all(torch.equal(outputs[0], o) for o in outputs[1:])  # random crops/flips differ
    assert "Resize((160, 160))" in repr(transform) and "RandomCrop(128" in repr(transform)
    assert repr(train_transform(dfb)) == repr(transform)  # default = the YAML's recipe


def test_cifar_recipe_pads_crops_and_flips(c10):
    transform = train_transform(c10, "cifar")
    image = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    torch.manual_seed(1)
    outs = [transform(image) for _ in range(20)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    low = (0 - c10.mean[0]) / c10.std[0]
    # With pad 4 most random crops include a zero border.
    assert any(torch.isclose(o[0], torch.tensor(low)).any() for o in outs)
    assert repr(train_transform(c10, "test")) == repr(test_transform(c10))
    with pytest.raises(ValueError, match="unknown training recipe 'bogus'"):
        train_transform(c10, "bogus")


def test_flip_happens_sometimes(c10):
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, :16] = 255
    transform = train_transform(c10, "cifar")
    torch.manual_seed(0)
    lefts = {bool(transform(image)[0, 16, 10] > 0) for _ in range(20)}
    assert lefts == {True, False}


def test_dense_transform_keeps_labels_and_pads_with_ignore(dfb):
    transform = dense_transform(dfb)
    assert isinstance(transform, DenseTrainTransform)
    assert transform.crop == 128 and transform.ignore_index == 255
    image = random_image(128, 128)
    mask = torch.zeros(128, 128, dtype=torch.uint8)
    mask[32:96, 32:96] = 3
    mask[:, :8] = 10  # the background label K
    torch.manual_seed(0)
    saw_padding = saw_scale_up = False
    for _ in range(30):
        x, m = transform(image, mask)
        assert x.shape == (3, 128, 128) and x.dtype == torch.float32
        assert m.shape == (128, 128) and m.dtype == torch.int64
        assert set(m.unique().tolist()) <= {0, 3, 10, 255}  # nearest: no invented labels
        padded = m == 255
        saw_padding |= bool(padded.any())
        saw_scale_up |= not bool(padded.any())
        if padded.any():
            assert torch.all(x[:, padded] == 0)  # the image is padded with the (normalised) mean
    assert saw_padding and saw_scale_up


def test_dense_transform_moves_image_and_mask_together():
    transform = DenseTrainTransform((0.0,) * 3, (1.0,) * 3, crop=16, scale=(1.0, 1.0))
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    image[:, :, :4] = 255
    mask = torch.zeros(16, 16, dtype=torch.uint8)
    mask[:, :4] = 1
    torch.manual_seed(0)
    for _ in range(10):
        x, m = transform(image, mask)
        assert torch.equal(x[0] > 0.5, m == 1)  # flipped together, same crop
    # A 32 px image with a 16 px mask: the image is brought to the mask's size first.
    x, m = transform(random_image(32, 32), mask)
    assert x.shape == (3, 16, 16) and m.shape == (16, 16)
    with pytest.raises(ValueError, match="HW mask"):
        transform(image, mask[None])
