"""``timm:<model>``: any timm CNN as a backbone, offline, with timm's key layout and our checkpoints.

Every test builds random weights or reads files it wrote itself; none touches the network (the
pretrained tests set ``HF_HUB_OFFLINE=1`` and point ``HF_HOME`` at an empty or hand-made cache).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file

from dfb_ood.harness.preflight import check_network
from dfb_ood.networks import (
    PretrainedWeightsUnavailable,
    available_networks,
    create_network,
    load_checkpoint,
    network_spec,
    save_checkpoint,
)

NAME = "timm:resnet18"


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must never download anything")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)


def _offline(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def _randomise_bn(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that a BN buffer that failed to load would show."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)


def test_spec_comes_from_timm_without_being_listed():
    spec = network_spec(NAME)
    assert NAME not in available_networks()
    assert spec.feature_dim == 512 and spec.input_size == 224
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    assert spec.hub_repo is not None and spec.hub_repo.startswith("timm/resnet18")


def test_resnet18_builds_with_a_spatial_map_and_dense_equals_gap():
    net = create_network(NAME, 3).eval()
    assert net.num_outputs == 3 and net.feature_dim == 512 and net.feature_stride == 32
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = net.forward_features(x)
        gap = net(x)
        low = net.dense(x, low_res=True)
        full = net.dense(x)
    assert fmap.shape == (2, 512, 2, 2)
    assert gap.shape == (2, 3) and full.shape == (2, 3, 64, 64)
    torch.testing.assert_close(gap, low.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)
    dfb = create_network(NAME, 3, background=True)
    assert dfb.num_outputs == 4 and dfb.background_index == 3


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="timm:resnet18") as info:
        create_network("timm:resnt18", 3)
    assert "resnt18" in str(info.value) and "did you mean" in str(info.value)


def test_a_pretrained_tag_picks_its_hub_repo_and_a_wrong_tag_lists_the_real_ones():
    assert network_spec("timm:resnet18.tv_in1k").hub_repo == "timm/resnet18.tv_in1k"
    with pytest.raises(ValueError, match="timm:resnet18.tv_in1k"):
        network_spec("timm:resnet18.nope")


def test_a_vit_is_refused_clearly():
    with pytest.raises(ValueError, match="only CNNs are supported") as info:
        network_spec("timm:vit_tiny_patch16_224")
    assert "tokens" in str(info.value)


def test_pretrained_offline_without_cache_raises_with_instructions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    _offline(monkeypatch, tmp_path / "empty_hf_home")
    with pytest.raises(PretrainedWeightsUnavailable, match="HF_HUB_OFFLINE") as info:
        create_network(NAME, 3, pretrained=True)
    assert "weights=" in str(info.value) and network_spec(NAME).hub_repo in str(info.value)


def test_pretrained_offline_loads_from_the_hugging_face_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    source = timm.create_model("resnet18", pretrained=False).eval()  # with its 1000-class fc, as on the hub
    _randomise_bn(source)
    repo = network_spec(NAME).hub_repo
    snapshot = tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "model.safetensors")
    )
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    _offline(monkeypatch, tmp_path)
    net = create_network(NAME, 3, pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_features(x), source.forward_features(x))
    assert net.head_weight.shape == (3, 512)  # the ImageNet head is not forced in


def test_weights_path_in_timm_layout_round_trips(tmp_path: Path):
    source = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    _randomise_bn(source)
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    net = create_network(NAME, 3, weights=path, load_head="require").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), source(x))


def test_checkpoint_round_trip_rebuilds_the_timm_arch(tmp_path: Path):
    net = create_network(NAME, 3, background=True).eval()
    _randomise_bn(net)
    path = save_checkpoint(net, tmp_path / "dfb.safetensors", input_size=64)
    loaded = load_checkpoint(path, arch=NAME, num_classes=3, background=True)
    assert loaded.arch == NAME
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.dense(x), net.dense(x))


def test_preflight_accepts_a_timm_network_for_pretrained_recipes():
    recipe = SimpleNamespace(
        name="imagenet-pretrained",
        network_options={},
        pretrained=True,
        dense_init="pretrained",
        trainable="all",
    )
    check_network(NAME, recipe)  # has a hub repo: no "no published pretrained weights" error
