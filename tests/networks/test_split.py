"""Splitting a network into a cached frozen prefix and a trainable tail, and CAMs from feature maps.

References are computed by hand with plain torch ops (float64 where a bound is derived), never by
calling the code under test a second way. Tolerances come from float32 arithmetic: a dot product
of n terms computed in float32 is within ``gamma(n) * sum(|terms|)`` of the exact value, with
``gamma(n) = n * u / (1 - n * u)`` and ``u = 2**-24`` (the unit roundoff).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfb_ood.networks import (
    OODNet,
    Split,
    cams_from_feature_maps,
    can_split,
    class_activation_maps,
    create_network,
    pseudo_masks,
    split_network,
)

U32 = 2.0**-24  # float32 unit roundoff


def gamma(n: int) -> float:
    """Bound on the relative error of an n-term float32 sum (Higham's gamma_n)."""
    return n * U32 / (1 - n * U32)


# ---------------------------------------------------------------------------------- helpers
class PixelBackbone(nn.Module):
    """Stride-1 features ``relu(conv1x1(x))``: the feature map has the image's size."""

    reduction = 1

    def __init__(self, channels: int = 5) -> None:
        super().__init__()
        self.num_features = channels
        self.conv = nn.Conv2d(3, channels, kernel_size=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


def pixel_net(num_classes: int = 3, channels: int = 5, seed: int = 0) -> OODNet:
    """A stride-1 net with a random (seeded) backbone and head.

    Head rows are N(0.5, 1): on non-negative features most class maps are positive somewhere and
    vary across pixels, so CAMs have contrast (tests check that precondition on their data).
    """
    generator = torch.Generator().manual_seed(seed)
    net = OODNet("pixel", PixelBackbone(channels), num_classes)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
        net.head.weight.add_(0.5)
        net.head.bias.mul_(0.5)
    return net.eval()


def reference_cams(
    weight: torch.Tensor,
    bias: torch.Tensor,
    fmap: torch.Tensor,
    targets: torch.Tensor,
    size: tuple[int, int],
    fmap_flipped: torch.Tensor | None = None,
    normalise: str = "minmax",
) -> torch.Tensor:
    """The cached-feature CAM by hand, in float64, one image at a time.

    relu(W_y . fmap + b_y), plus the mirror's map flipped back (columns reversed by indexing),
    scaled to [0, 1] per image at feature resolution, then bilinear upsampling (align_corners=False).
    """
    maps = []
    for i, y in enumerate(targets.tolist()):
        w = weight[y].double()[:, None, None]
        b = float(bias[y])
        total = ((fmap[i].double() * w).sum(0) + b).clamp_min(0)
        if fmap_flipped is not None:
            mirror = ((fmap_flipped[i].double() * w).sum(0) + b).clamp_min(0)
            total = total + mirror[:, torch.arange(mirror.shape[-1] - 1, -1, -1)]
        if normalise == "minmax":
            low, span = total.min(), total.max() - total.min()
            total = (total - low) / span if span > 0 else torch.zeros_like(total)
        else:
            peak = total.max()
            total = total / peak if peak > 0 else torch.zeros_like(total)
        maps.append(total)
    stacked = torch.stack(maps)[:, None]
    return F.interpolate(stacked, size=size, mode="bilinear", align_corners=False)[:, 0]


def cam_tolerance(
    weight: torch.Tensor,
    bias: torch.Tensor,
    fmap: torch.Tensor,
    targets: torch.Tensor,
    fmap_flipped: torch.Tensor | None = None,
    normalise: str = "minmax",
) -> torch.Tensor:
    """Per-image bound (B, 1, 1) on |float32 CAM - exact CAM|.

    Each class map is a dot product of C terms plus a bias: error <= gamma(C + 1) * A, A the
    largest sum |W_y| . |fmap| + |b_y| over pixels; adding the mirror adds one rounding, so the
    summed map is within delta = gamma(C + 2) * (A + A_mirror). Min-max normalisation
    (t - low) / span perturbs numerator and span by <= 2 delta each: error <= 4 delta / span plus
    three roundings; division by the peak: <= 2 delta / peak plus one. Bilinear upsampling is a
    convex combination (weights computed in float32): the bound carries over plus 4 roundings.
    A map with no contrast at all gets the trivial bound 1.
    """
    channels = fmap.shape[1]
    bounds = []
    for i, y in enumerate(targets.tolist()):
        w = weight[y].double().abs()[:, None, None]
        b = abs(float(bias[y]))
        plain = (fmap[i].double().abs() * w).sum(0) + b
        magnitude = plain.max()
        total = ((fmap[i].double() * weight[y].double()[:, None, None]).sum(0) + float(bias[y])).clamp_min(0)
        if fmap_flipped is not None:
            magnitude = magnitude + ((fmap_flipped[i].double().abs() * w).sum(0) + b).max()
            mirror = (
                (fmap_flipped[i].double() * weight[y].double()[:, None, None]).sum(0) + float(bias[y])
            ).clamp_min(0)
            total = total + mirror.flip(-1)
        delta = gamma(channels + 2) * magnitude
        if normalise == "minmax":
            scale = total.max() - total.min()
            bound = 4 * delta / scale + 3 * U32
        else:
            scale = total.max()
            bound = 2 * delta / scale + U32
        # A flat map (scale 0) has no contrast to normalise: float32 noise may land anywhere in [0, 1].
        bounds.append(float(bound) + 4 * U32 if scale > 0 else 1.0)
    return torch.tensor(bounds, dtype=torch.float64)[:, None, None]


@pytest.fixture(scope="module")
def lite_base() -> OODNet:
    """effnet_lite0 (random weights, output stride 16, frozen BN), built once: tests deep-copy it."""
    torch.manual_seed(0)
    net = create_network("effnet_lite0", 3, pretrained=False, output_stride=16, freeze_bn=True)
    # Non-trivial BatchNorm statistics, so a layer that skipped its BN would show.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    return net.eval()


@pytest.fixture
def lite(lite_base: OODNet) -> OODNet:
    return copy.deepcopy(lite_base)


# ---------------------------------------------------------------------------------- split: tail
def test_tail_of_prefix_is_forward_features(lite: OODNet):
    split = split_network(lite, "tail")
    assert not split.trivial
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        prefix = split.prefix(x)
        whole = lite.forward_features(x)
        # The same modules run in the same order on the same input: the same float32 operations.
        assert torch.equal(split.tail(prefix), whole)
        assert prefix.shape == (2, lite.backbone.blocks[-1][0].conv_pw.in_channels, 4, 4)
        assert whole.shape == (2, lite.feature_dim, 4, 4)
        # With freeze_bn the network's train mode keeps BN in eval: still the same function.
        lite.train()
        assert torch.equal(split.tail(split.prefix(x)), lite.forward_features(x))


def test_tail_shares_the_backbones_modules_and_training_it_trains_the_backbone(lite: OODNet):
    keys_before = list(lite.state_dict())
    split = split_network(lite, "tail")
    assert list(lite.state_dict()) == keys_before  # splitting registers nothing on the network
    backbone = lite.backbone
    tail_modules = (backbone.blocks[-1], backbone.conv_head, backbone.bn2)
    expected_tail = {id(p) for module in tail_modules for p in module.parameters()}
    assert {id(p) for p in split.tail.parameters()} == expected_tail
    frozen_modules = (backbone.conv_stem, backbone.bn1, *backbone.blocks[:-1])
    frozen = {id(p) for module in frozen_modules for p in module.parameters()}
    assert frozen and not frozen & expected_tail
    trained = split.parameters(lite)
    assert len({id(p) for p in trained}) == len(trained)  # no duplicates
    assert {id(p) for p in trained} == expected_tail | {id(lite.head.weight), id(lite.head.bias)}

    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cached = split.prefix(x)  # computed once, no graph: the prefix can get no gradient
    before = {name: p.detach().clone() for name, p in lite.named_parameters()}
    optimizer = torch.optim.SGD(trained, lr=0.5)
    loss = F.cross_entropy(lite.forward_head(split.tail(cached)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    tail_names = ("backbone.blocks.6.", "backbone.conv_head.", "backbone.bn2.", "head.")
    assert len(backbone.blocks) == 7
    for name, parameter in lite.named_parameters():
        unchanged = torch.equal(parameter, before[name])
        if name.startswith(tail_names):
            if parameter.grad is not None and parameter.grad.abs().max() > 0:
                assert not unchanged, f"{name} is trainable but did not change"
        else:
            assert unchanged, f"{name} is frozen but changed"
            assert parameter.grad is None, name
    assert not torch.equal(backbone.conv_head.weight, before["backbone.conv_head.weight"])
    # The update happened in the backbone itself: the whole network computes the trained tail.
    with torch.no_grad():
        assert torch.equal(split.tail(split.prefix(x)), lite.forward_features(x))


# ---------------------------------------------------------------------------------- split: head
def test_head_split_is_trivial_and_trains_only_the_head(lite: OODNet):
    split = split_network(lite, "head")
    assert split.trivial and isinstance(split.tail, nn.Identity)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(split.prefix(x), lite.forward_features(x))
    trained = split.parameters(lite)
    assert [id(p) for p in trained] == [id(lite.head.weight), id(lite.head.bias)]
    rv2 = create_network("rv2_tiny", 4)
    assert [id(p) for p in split_network(rv2, "head").parameters(rv2)] == [
        id(rv2.head.weight),
        id(rv2.head.bias),
    ]


def test_split_parameters_are_deduplicated_when_the_tail_holds_the_head():
    net = pixel_net()
    split = Split(prefix=net.forward_features, tail=nn.Sequential(net.backbone.conv, net.head))
    parameters = split.parameters(net)
    assert len(parameters) == 4 and len({id(p) for p in parameters}) == 4
    assert {id(p) for p in parameters} == {id(p) for p in net.parameters()}
    assert not split.trivial


def test_tail_split_needs_a_backbone_with_a_tail(lite: OODNet):
    rv2 = create_network("rv2_tiny", 3)
    assert can_split(rv2, "head") and can_split(lite, "head") and can_split(lite, "tail")
    assert not can_split(rv2, "tail")
    assert not can_split(lite, "all")
    with pytest.raises(ValueError, match="rv2_tiny"):
        split_network(rv2, "tail")
    for bad in ("all", "bogus"):
        with pytest.raises(ValueError, match=repr(bad)):
            split_network(lite, bad)


# ---------------------------------------------------------------------------------- CAMs from feature maps
def random_case(seed: int, batch: int = 4, channels: int = 6, h: int = 3, w: int = 5, k: int = 3):
    generator = torch.Generator().manual_seed(seed)
    fmap = torch.rand(batch, channels, h, w, generator=generator) * 3
    flipped = torch.rand(batch, channels, h, w, generator=generator) * 3
    targets = torch.randint(0, k, (batch,), generator=generator)
    return fmap, flipped, targets


@pytest.mark.parametrize("normalise", ["minmax", "max"])
@pytest.mark.parametrize("mirror", [False, True])
def test_cams_from_feature_maps_equal_a_hand_computation(normalise: str, mirror: bool):
    net = pixel_net(num_classes=3, channels=6, seed=5)
    fmap, flipped, targets = random_case(6)
    flipped = flipped if mirror else None
    size = (12, 20)  # non-square, 4x the 3x5 map
    cams = cams_from_feature_maps(net, fmap, targets, size=size, fmap_flipped=flipped, normalise=normalise)
    assert cams.shape == (4, *size) and cams.dtype == torch.float32
    weight, bias = net.head_weight.detach(), net.head_bias.detach()
    reference = reference_cams(weight, bias, fmap, targets, size, flipped, normalise)
    assert bool((reference.amax(dim=(1, 2)) > 0.5).all())  # the data has contrast: not a zero test
    bound = cam_tolerance(weight, bias, fmap, targets, flipped, normalise)
    error = (cams.double() - reference).abs()
    assert bool((error <= bound).all()), float((error / bound).max())
    assert bool((cams >= 0).all()) and bool((cams <= 1).all())
    # The mirror term matters: without it the maps are different (the test can tell them apart).
    if mirror:
        alone = reference_cams(weight, bias, fmap, targets, size, None, normalise)
        assert float((alone - reference).abs().max()) > 0.05
    # Targets given as a plain list give the same maps.
    again = cams_from_feature_maps(
        net, fmap, targets.tolist(), size=size, fmap_flipped=flipped, normalise=normalise
    )
    assert torch.equal(again, cams)


def test_cams_from_feature_maps_on_flat_or_empty_maps_are_zero_not_nan():
    net = pixel_net(num_classes=2, channels=4, seed=7)
    with torch.no_grad():
        net.head.weight.copy_(
            torch.tensor([[1.0, 0.5, 0.0, 2.0], [-1.0, -1.0, -1.0, -1.0]])[:, :, None, None]
        )
        net.head.bias.copy_(torch.tensor([0.5, -0.1]))
    flat = torch.ones(2, 4, 3, 3) * torch.tensor([1.0, 2.0, 3.0, 0.5])[None, :, None, None]
    targets = torch.tensor([0, 1])  # class 0: a flat positive map; class 1: rectified to zero everywhere
    minmax = cams_from_feature_maps(net, flat, targets, size=(6, 6), fmap_flipped=flat, normalise="minmax")
    assert torch.equal(minmax, torch.zeros(2, 6, 6))
    by_max = cams_from_feature_maps(net, flat, targets, size=(6, 6), fmap_flipped=flat, normalise="max")
    assert not bool(by_max.isnan().any())
    assert torch.allclose(by_max[0], torch.ones(6, 6), rtol=0, atol=4 * U32)  # a flat positive map: 1
    assert torch.equal(by_max[1], torch.zeros(6, 6))  # an all-zero map stays zero
    with pytest.raises(ValueError, match="normalise"):
        cams_from_feature_maps(net, flat, targets, size=(6, 6), normalise="bogus")  # type: ignore[arg-type]


def test_cams_from_feature_maps_with_blur_span_exactly_zero_to_one():
    net = pixel_net(num_classes=3, channels=6, seed=8)
    fmap, flipped, targets = random_case(9, h=4, w=4)
    cams = cams_from_feature_maps(net, fmap, targets, size=(16, 16), fmap_flipped=flipped, sigma=1.5)
    unblurred = cams_from_feature_maps(net, fmap, targets, size=(16, 16), fmap_flipped=flipped)
    assert bool((unblurred.amax(dim=(1, 2)) > 0.5).all())  # every map has contrast to begin with
    assert not torch.allclose(cams, unblurred, atol=0.01)  # and the blur changed it
    assert bool(torch.isfinite(cams).all())
    # Min-max after the blur: (low - low) / span = 0 and span / span = 1 exactly in IEEE arithmetic.
    assert torch.equal(cams.amin(dim=(1, 2)), torch.zeros(4))
    assert torch.equal(cams.amax(dim=(1, 2)), torch.ones(4))


@pytest.mark.parametrize("normalise", ["minmax", "max"])
def test_cams_from_feature_maps_match_image_cams_at_one_scale_and_stride_one(normalise: str):
    # With a stride-1 backbone the feature map has the image's size, so upsampling is the identity
    # and the cached CAM (one scale plus the mirror) is exactly the image CAM at scale 1 with flip.
    net = pixel_net(num_classes=3, channels=5, seed=10)
    images = torch.randn(3, 3, 7, 9, generator=torch.Generator().manual_seed(11))
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        fmap = net.forward_features(images)
        mirrored = net.forward_features(images.flip(-1))
    cached = cams_from_feature_maps(
        net, fmap, labels, size=(7, 9), fmap_flipped=mirrored, normalise=normalise
    )
    image = class_activation_maps(net, images, labels, scales=(1.0,), flip=True, normalise=normalise)
    assert bool((image.amax(dim=(1, 2)) > 0.5).all())  # maps with contrast, not all zero
    # Same sums in the same order; only the float32 roundings of the normalisation may differ.
    assert torch.allclose(cached, image, rtol=0, atol=8 * U32)


def test_class_activation_maps_normalise_argument():
    net = pixel_net(num_classes=3, channels=5, seed=12)
    images = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(13))
    labels = torch.tensor([0, 1, 2, 1])
    kwargs = {"scales": (1.0, 0.5), "flip": True}
    by_max = class_activation_maps(net, images, labels, normalise="max", **kwargs)
    minmax = class_activation_maps(net, images, labels, normalise="minmax", **kwargs)
    default = class_activation_maps(net, images, labels, **kwargs)
    assert torch.equal(default, by_max)  # "max" (the release) stays the default
    assert torch.equal(minmax.amin(dim=(1, 2)), torch.zeros(4))
    assert torch.equal(minmax.amax(dim=(1, 2)), torch.ones(4))
    # Both scale the same summed map t: t / peak = m, so (t - low) / (peak - low) = (m - m_min) / (1 - m_min).
    low = by_max.amin(dim=(1, 2), keepdim=True).double()
    derived = (by_max.double() - low) / (1 - low)
    # m carries <= 1 rounding, m - m_min and 1 - m_min one more each, the quotient one;
    # all amplified by 1 / (1 - m_min).
    bound = 6 * U32 / (1 - low)
    assert bool(((minmax.double() - derived).abs() <= bound).all())
    # pseudo_masks thresholds that same map.
    masks = pseudo_masks(net, images, labels, theta=0.5, normalise="minmax", **kwargs)
    expected = torch.where(minmax > 0.5, labels[:, None, None], torch.full_like(masks, 3))
    assert torch.equal(masks, expected)
    with pytest.raises(ValueError, match="normalise"):
        class_activation_maps(net, images, labels, normalise="bogus", **kwargs)  # type: ignore[arg-type]
