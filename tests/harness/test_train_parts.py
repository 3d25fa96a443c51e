"""Recipes, the lr schedule, batched augmentation, deterministic batches, mask statistics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dfb_ood.harness.augment import IGNORE_INDEX, BatchAugmenter, apply_affine, random_affine_params
from dfb_ood.harness.masks import DegenerateMasksWarning, mask_stats, masks_from_cams, warn_if_degenerate
from dfb_ood.harness.recipes import available_recipes, load_recipe
from dfb_ood.harness.train import batch_indices


def test_shipped_recipes_parse_and_match_the_paper():
    assert {"paper", "cpu-quick"} <= set(available_recipes())
    paper = load_recipe("paper")
    assert (paper.lr, paper.momentum, paper.batch_size, paper.steps) == (0.003, 0.9, 128, 20000)
    assert paper.lr_drops == (0.3, 0.6, 0.9) and paper.mixup_alpha == 0.1
    assert (paper.resize, paper.crop) == (160, 128) and paper.cam.theta == 0.5
    assert paper.cam.scales == (1.0, 0.5, 1.5, 2.0) and paper.dense_scale == (0.5, 2.0)
    assert paper.dense_init == "pretrained" and load_recipe("cpu-quick").dense_init == "classifier"


def test_lr_schedule_drops_at_fractions_and_warms_up():
    recipe = load_recipe("paper").with_overrides(steps=100, warmup_steps=10)
    assert recipe.lr_at(0) == pytest.approx(0.0003)
    assert recipe.lr_at(9) == pytest.approx(0.003)
    assert recipe.lr_at(29) == pytest.approx(0.003)
    assert recipe.lr_at(30) == pytest.approx(0.0003)
    assert recipe.lr_at(60) == pytest.approx(0.00003)
    assert recipe.lr_at(99) == pytest.approx(0.000003)


def test_bad_recipe_names_the_file_and_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nsteps: 0\ncam: {theta: 1.5}\nlr_drops: [30]\n")
    with pytest.raises(ValueError, match=r"bad.yaml: steps must be >= 1.*lr_drops.*cam.theta"):
        load_recipe(path)
    path.write_text("name: bad\ndense: {init: random}\n")
    with pytest.raises(ValueError, match="dense.init must be 'classifier' or 'pretrained'"):
        load_recipe(path)
    path.write_text("name: bad\nstepz: 10\n")
    with pytest.raises(ValueError, match="unknown recipe key"):
        load_recipe(path)
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        load_recipe("nope")


def test_batches_are_a_function_of_seed_and_step_only():
    first = [batch_indices(3, step, 100, 32) for step in range(6)]
    again = [batch_indices(3, step, 100, 32) for step in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    # one epoch = 3 steps of 32 from a permutation: no repeats inside an epoch
    epoch = torch.cat(first[:3])
    assert len(set(epoch.tolist())) == 96
    assert not torch.equal(batch_indices(4, 0, 100, 32), first[0])


def test_dense_augmentation_keeps_image_and_mask_aligned():
    """Warp an image whose pixels encode their own label; the warped mask must read the same."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (4, 16, 16), generator=gen, dtype=torch.uint8)
    images = labels.float()[:, None].repeat(1, 3, 1, 1) * 40.0  # pixel value = 40 * label
    theta = random_affine_params(4, gen, (0.5, 2.0), 0.0, True)
    warped, warped_labels = apply_affine(images, theta, 16, labels)
    # nearest-sampled images agree with the mask wherever the mask is not padding
    nearest = torch.nn.functional.grid_sample(
        images,
        torch.nn.functional.affine_grid(theta, [4, 3, 16, 16], align_corners=False),
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )
    valid = warped_labels != IGNORE_INDEX
    assert valid.any() and (~valid).any()  # some shrinking happened, so padding exists
    assert torch.equal((nearest[:, 0] / 40.0).round().long()[valid], warped_labels[valid])
    assert warped.shape == (4, 3, 16, 16)


def test_identity_affine_is_exact_and_flip_flips():
    images = torch.rand(2, 3, 8, 8)
    identity = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]).repeat(2, 1, 1)
    same, _ = apply_affine(images, identity, 8)
    torch.testing.assert_close(same, images)
    flip = torch.tensor([[[-1.0, 0, 0], [0, 1.0, 0]]]).repeat(2, 1, 1)
    flipped, _ = apply_affine(images, flip, 8)
    torch.testing.assert_close(flipped, images.flip(-1))


def test_augmenter_outputs_normalised_batches_of_the_crop_size():
    aug = BatchAugmenter(
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), torch.device("cpu"), input_size=32, resize=40, crop=32
    )
    images = torch.full((5, 3, 32, 32), 255, dtype=torch.uint8)
    out = aug.classifier(images, torch.Generator().manual_seed(1))
    assert out.shape == (5, 3, 32, 32)
    torch.testing.assert_close(out, torch.ones_like(out))  # a 1.25x zoom of a white image stays white (=1)
    masks = torch.zeros((5, 32, 32), dtype=torch.uint8)
    dense_images, dense_masks = aug.dense(images, masks, torch.Generator().manual_seed(1))
    assert dense_images.shape == (5, 3, 32, 32) and dense_masks.dtype == torch.long
    assert set(dense_masks.unique().tolist()) <= {0, IGNORE_INDEX}


def test_masks_from_cams_and_degenerate_warning():
    cams = torch.zeros(4, 8, 8)
    cams[:2, 2:6, 2:6] = 0.9
    masks = masks_from_cams(cams, torch.tensor([1, 2, 3, 0]), 0.5, num_classes=4)
    assert masks.dtype == np.uint8 and masks[0, 3, 3] == 1 and masks[1, 3, 3] == 2 and masks[0, 0, 0] == 4
    stats = mask_stats(masks, 4)
    assert stats.mean_foreground == pytest.approx(0.125) and stats.all_background == 2
    assert not stats.degenerate
    blank = mask_stats(np.full((10, 8, 8), 4, dtype=np.uint8), 4)
    assert blank.degenerate and blank.all_background == 10
    with pytest.warns(DegenerateMasksWarning, match="degenerate"):
        warn_if_degenerate(blank, 0.5)
    full = mask_stats(np.zeros((10, 8, 8), dtype=np.uint8), 4)
    assert full.degenerate and full.all_foreground == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_degenerate(stats, 0.5)


def test_mask_agreement_against_true_objects_by_hand():
    from dfb_ood.harness.masks import mask_agreement

    masks = np.full((1, 4, 4), 3, dtype=np.uint8)
    masks[0, :2, :2] = 1  # 4 predicted foreground pixels
    truth = np.zeros((1, 4, 4), dtype=bool)
    truth[0, :2, :] = True  # 8 true pixels, 4 of them predicted
    agreement = mask_agreement(masks, truth, num_classes=3)
    assert agreement == pytest.approx({"iou": 4 / 8, "precision": 4 / 4, "recall": 4 / 8})


def test_atomic_writes_leave_normal_permissions(tmp_path):
    import os

    from dfb_ood.harness.io import write_json

    previous = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind
