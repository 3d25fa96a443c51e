"""OODNet: one module, two modes (dense per-pixel logits, GAP logits), and the DFB initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dfb_ood.networks import OODNet, create_network, from_classifier
from dfb_ood.networks.dfb import dfb_from_pretrained


@pytest.fixture(scope="module")
def tiny_dfb() -> OODNet:
    torch.manual_seed(1)
    net = create_network("rv2_tiny", 4, background=True).eval()
    with torch.no_grad():  # a head far from its init, so equalities are not trivially ~0
        net.head.weight.normal_()
        net.head.bias.normal_()
    return net


@pytest.mark.parametrize("size", [(32, 32), (24, 40), (17, 29), (64, 48)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_gap_logits_equal_mean_of_low_res_dense_logits(
    tiny_dfb: OODNet, size: tuple[int, int], align_corners: bool
):
    x = torch.randn(3, 3, *size)
    with torch.no_grad():
        low = tiny_dfb.dense(x, align_corners=align_corners, low_res=True)
        gap = tiny_dfb(x)
        full = tiny_dfb.dense(x, align_corners=align_corners)
    assert gap.shape == (3, 5)
    assert full.shape == (3, 5, *size)
    torch.testing.assert_close(gap, low.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True])
def test_head_then_upsample_equals_upsample_then_head(tiny_dfb: OODNet, align_corners: bool):
    x = torch.randn(2, 3, 28, 36)
    with torch.no_grad():
        fmap = tiny_dfb.forward_features(x)
        upsampled_features = F.interpolate(fmap, size=(28, 36), mode="bilinear", align_corners=align_corners)
        reference = tiny_dfb.head(upsampled_features)  # the head at full resolution: expensive way
        dense = tiny_dfb.dense(x, align_corners=align_corners)
        # Both orders sum the same C*4 products (C channels, 4 bilinear neighbours) plus the bias, in
        # different orders: float32 differs by at most 2*(C+4)*u times the sum of the terms' magnitudes
        # (Higham's bound), which interpolating |features| and convolving with |weights| gives.
        magnitude = F.interpolate(fmap.abs(), size=(28, 36), mode="bilinear", align_corners=align_corners)
        terms = F.conv2d(magnitude, tiny_dfb.head.weight.abs()) + tiny_dfb.head.bias.abs()[:, None, None]
        bound = 2 * (fmap.shape[1] + 4) * 2.0**-24 * float(terms.max())
    torch.testing.assert_close(dense, reference, rtol=0, atol=bound)


def test_head_shapes_and_matrix_view(tiny_dfb: OODNet):
    assert tiny_dfb.num_outputs == 5 and tiny_dfb.background_index == 4
    assert tiny_dfb.head_weight.shape == (5, tiny_dfb.feature_dim)
    assert tiny_dfb.head_bias.shape == (5,)
    assert tiny_dfb.head_weight.data_ptr() == tiny_dfb.head.weight.data_ptr()  # a view, not a copy
    classifier = create_network("rv2_tiny", 4)
    assert classifier.head_weight.shape == (4, classifier.feature_dim) and classifier.background_index is None


def test_forward_head_pre_logits_is_pooled_feature_and_logits_are_linear(tiny_dfb: OODNet):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fmap = tiny_dfb.forward_features(x)
        pooled = tiny_dfb.forward_head(fmap, pre_logits=True)
        logits = tiny_dfb.forward_head(fmap)
    assert fmap.shape == (2, tiny_dfb.feature_dim, 8, 8)
    assert pooled.shape == (2, tiny_dfb.feature_dim) and bool((pooled >= 0).all())  # after the final ReLU
    torch.testing.assert_close(logits, pooled @ tiny_dfb.head_weight.T + tiny_dfb.head_bias)


def test_from_classifier_copies_backbone_and_class_rows_and_zeroes_background():
    classifier = create_network("rv2_tiny", 3)
    with torch.no_grad():
        classifier.head.bias.normal_()
    dfb = from_classifier(classifier)
    assert dfb.background and not classifier.background
    assert dfb.arch == classifier.arch and dfb.num_classes == 3 and dfb.num_outputs == 4
    assert dfb.head.weight.shape == (4, classifier.feature_dim, 1, 1)
    torch.testing.assert_close(dfb.head_weight[:3], classifier.head_weight)
    torch.testing.assert_close(dfb.head_bias[:3], classifier.head_bias)
    assert bool((dfb.head_weight[3] == 0).all()) and dfb.head_bias[3].item() == 0.0
    x = torch.randn(2, 3, 32, 32)
    classifier.eval(), dfb.eval()
    with torch.no_grad():
        torch.testing.assert_close(dfb(x)[:, :3], classifier(x))
        torch.testing.assert_close(dfb(x)[:, 3], torch.zeros(2))
    # a copy: training the DFB net does not move the classifier
    with torch.no_grad():
        dfb.backbone.stem.weight.add_(1.0)
    assert not torch.equal(dfb.backbone.stem.weight, classifier.backbone.stem.weight)


def test_from_classifier_refuses_a_dfb_net_and_other_modules():
    with pytest.raises(ValueError, match="already"):
        from_classifier(create_network("rv2_tiny", 3, background=True))
    with pytest.raises(TypeError):
        from_classifier(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_dfb_from_pretrained_without_weights_is_a_fresh_k_plus_one_net():
    net = dfb_from_pretrained("rv2_tiny", 6, pretrained=False)
    assert net.background and net.num_outputs == 7 and net.head_weight.shape == (7, 128)


def test_dense_output_trains_with_per_pixel_cross_entropy():
    net = create_network("rv2_tiny", 3, background=True)
    x = torch.randn(2, 3, 32, 32)
    masks = torch.randint(0, 4, (2, 32, 32))
    loss = F.cross_entropy(net.dense(x), masks)
    loss.backward()
    assert (
        torch.isfinite(loss)
        and net.head.weight.grad is not None
        and net.backbone.stem.weight.grad is not None
    )


def test_num_classes_must_be_positive():
    with pytest.raises(ValueError):
        create_network("rv2_tiny", 0)


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", devices())
def test_everything_follows_the_module_and_input_device(device: str):
    from dfb_ood.networks import class_activation_maps

    net = from_classifier(create_network("rv2_tiny", 3).to(device))
    x = torch.randn(2, 3, 32, 32, device=device)
    assert net.head.weight.device.type == device
    with torch.no_grad():
        assert net(x).device.type == device and net.dense(x).device.type == device
    cam = class_activation_maps(net, x, torch.tensor([0, 2], device=device), sigma=1.0)
    assert cam.device.type == device


def test_double_precision_is_kept():
    net = create_network("rv2_tiny", 3).double().eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert net(x).dtype == torch.float64 and net.dense(x).dtype == torch.float64
    assert from_classifier(net).head.weight.dtype == torch.float64
