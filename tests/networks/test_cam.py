"""CAM and pseudo masks: known objects, blank images, shapes, targets, batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dfb_ood.networks import OODNet, class_activation_maps, create_network, pseudo_masks
from dfb_ood.networks.layers import gaussian_blur

from .conftest import brightness_net


def square_image(
    size: tuple[int, int] = (32, 32), box: tuple[int, int, int, int] = (4, 15, 6, 19)
) -> torch.Tensor:
    """One image, flat black background with a bright rectangle rows [r0, r1) x cols [c0, c1)."""
    image = torch.zeros(1, 3, *size)
    r0, r1, c0, c1 = box
    image[..., r0:r1, c0:c1] = 1.0
    return image


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int], grow: int = 0) -> torch.Tensor:
    r0, r1, c0, c1 = box
    mask = torch.zeros(size, dtype=torch.bool)
    mask[max(r0 - grow, 0) : r1 + grow, max(c0 - grow, 0) : c1 + grow] = True
    return mask


@pytest.mark.parametrize("sigma", [None, 1.0])
def test_mask_covers_the_object_and_not_the_background(bright_net: OODNet, sigma: float | None):
    box = (4, 15, 6, 19)  # off-centre, so a flip that is not flipped back would show
    image = square_image(box=box)
    masks = pseudo_masks(bright_net, image, torch.tensor([0]), sigma=sigma)
    assert masks.shape == (1, 32, 32) and masks.dtype == torch.long
    foreground = masks[0] == 0
    inner = box_mask((32, 32), (box[0] + 2, box[1] - 2, box[2] + 2, box[3] - 2))
    far = ~box_mask((32, 32), box, grow=3)
    assert bool(foreground[inner].all())
    assert bool((masks[0][far] == 2).all())  # background label K = 2
    union = (foreground | box_mask((32, 32), box)).sum()
    iou = (foreground & box_mask((32, 32), box)).sum() / union
    assert iou > 0.8


def test_cam_is_in_unit_range_and_peaks_on_the_object(bright_net: OODNet):
    cam = class_activation_maps(bright_net, square_image(), torch.tensor([0]))
    assert float(cam.min()) >= 0.0 and float(cam.max()) == pytest.approx(1.0)
    assert float(cam[0, 9, 12]) > 0.9 and float(cam[0, 28, 28]) == 0.0


@pytest.mark.parametrize("sigma", [None, 2.0])
def test_blank_image_gives_all_background_not_nan(bright_net: OODNet, sigma: float | None):
    blank = torch.zeros(2, 3, 32, 32)
    cam = class_activation_maps(bright_net, blank, torch.tensor([0, 0]), sigma=sigma)
    masks = pseudo_masks(bright_net, blank, torch.tensor([0, 0]), sigma=sigma)
    assert not torch.isnan(cam).any() and bool((cam == 0).all())
    assert bool((masks == 2).all())


def test_prediction_target_uses_the_predicted_class(bright_net: OODNet):
    image = square_image()
    # class 0 responds to brightness, so the bright square is predicted as class 0 whatever the label
    by_prediction = pseudo_masks(bright_net, image, target="prediction")
    assert set(by_prediction.unique().tolist()) == {0, 2}
    by_label = pseudo_masks(bright_net, image, torch.tensor([1]))  # class 1 responds to darkness: none here
    assert bool((by_label == 2).all())
    with pytest.raises(ValueError, match="labels are required"):
        pseudo_masks(bright_net, image)
    with pytest.raises(ValueError, match="class indices"):
        pseudo_masks(bright_net, image, torch.tensor([2]))


def test_single_scale_cam_is_the_rectified_dense_class_map():
    """At one scale without flips, the CAM is the class's low-res logit map, rectified, upsampled, /max."""
    net = create_network("rv2_tiny", 3).eval()
    with torch.no_grad():
        net.head.bias.fill_(0.05)
    x = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([2, 0])
    cam = class_activation_maps(net, x, labels, scales=(1.0,), flip=False)
    with torch.no_grad():
        low = net.dense(x, low_res=True)[torch.arange(2), labels].relu()
    dense = F.interpolate(low[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    expected = dense / dense.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(cam, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scales", [(1.0,), (1.0, 0.5, 1.5, 2.0), (0.5, 1.5)])
@pytest.mark.parametrize("flip", [False, True])
def test_shapes_and_labels_for_any_scales_flips_and_sizes(scales: tuple[float, ...], flip: bool):
    net = create_network("rv2_tiny", 3)
    x = torch.randn(3, 3, 20, 28)
    labels = torch.tensor([0, 1, 2])
    cam = class_activation_maps(net, x, labels, scales=scales, flip=flip, sigma=1.5)
    masks = pseudo_masks(net, x, labels, scales=scales, flip=flip, dtype=torch.uint8)
    assert cam.shape == (3, 20, 28) and cam.dtype == torch.float32 and torch.isfinite(cam).all()
    assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0
    assert masks.shape == (3, 20, 28) and masks.dtype == torch.uint8
    for i in range(3):  # each image is labelled with its own class or background only
        assert set(masks[i].unique().tolist()) <= {i, 3}


def test_batched_cams_equal_one_image_at_a_time():
    net = create_network("rv2_tiny", 4)  # GroupNorm: each image's features are independent of the batch
    x = torch.randn(3, 3, 32, 32)
    labels = torch.tensor([3, 1, 0])
    batched = class_activation_maps(net, x, labels)
    single = torch.cat([class_activation_maps(net, x[i : i + 1], labels[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_flip_is_undone(bright_net: OODNet):
    image = square_image(box=(2, 10, 2, 12))
    with_flip = class_activation_maps(bright_net, image, torch.tensor([0]), scales=(1.0,), flip=True)
    without = class_activation_maps(bright_net, image, torch.tensor([0]), scales=(1.0,), flip=False)
    torch.testing.assert_close(with_flip, without)  # brightness is mirror-equivariant


def test_dfb_net_uses_only_class_rows_and_training_mode_is_restored():
    net = brightness_net(background=True)
    with torch.no_grad():
        net.head.weight[2, 0] = 5.0  # a background row that would dominate if it were used
    net.train()
    masks = pseudo_masks(net, square_image(), torch.tensor([0]), target="prediction")
    assert net.training
    assert set(masks.unique().tolist()) == {0, 2}


def test_gaussian_blur_preserves_constants_and_mass_shape():
    flat = torch.full((2, 9, 7), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 2.0), flat)
    spike = torch.zeros(1, 21, 21)
    spike[0, 10, 10] = 1.0
    blurred = gaussian_blur(spike, 2.0)
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-4)
    assert int(blurred[0].argmax()) == 10 * 21 + 10
    torch.testing.assert_close(blurred[0], blurred[0].T)


def test_uint8_cannot_hold_large_background_label():
    net = create_network("rv2_tiny", 300)
    with pytest.raises(ValueError, match="background label"):
        pseudo_masks(net, torch.zeros(1, 3, 32, 32), torch.tensor([0]), dtype=torch.uint8)


def test_invalid_inputs():
    net = brightness_net()
    with pytest.raises(ValueError, match="B, C, H, W"):
        class_activation_maps(net, torch.zeros(3, 32, 32), torch.tensor([0]))
    with pytest.raises(ValueError, match="scales"):
        class_activation_maps(net, torch.zeros(1, 3, 32, 32), torch.tensor([0]), scales=())
    with pytest.raises(ValueError, match="2 labels for 1 images"):
        class_activation_maps(net, torch.zeros(1, 3, 32, 32), torch.tensor([0, 1]))


def test_chunked_network_calls_give_the_same_cams():
    net = create_network("rv2_tiny", 4)
    x = torch.randn(5, 3, 24, 24)
    labels = torch.tensor([0, 1, 2, 3, 0])
    whole = class_activation_maps(net, x, labels)
    chunked = class_activation_maps(net, x, labels, max_pixels=2 * 24 * 24)  # 2 images per call at scale 1
    torch.testing.assert_close(whole, chunked, rtol=1e-4, atol=1e-5)


def test_prediction_without_scale_one_still_predicts_at_scale_one(bright_net: OODNet):
    masks = pseudo_masks(bright_net, square_image(), target="prediction", scales=(0.5, 2.0), max_pixels=500)
    assert set(masks.unique().tolist()) == {0, 2}
