"""ImageNet networks: ``resnet50`` (torchvision / timm / OpenOOD layouts) and ``vit_b16`` (patch-token map).

References are independent of our code: torchvision's ``resnet50`` and timm's models themselves
(timm's ViT with ``global_pool="avg", fc_norm=False`` is exactly "head on the mean of the patch
tokens", and its ``forward_intermediates(output_fmt="NCHW")`` lays the tokens out on the grid
itself). Inputs are small (32-64 px) and ViT-B is built once per module to keep this quick.
Nothing is downloaded: ``hf_hub_download`` fails the test if called.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from typer.testing import CliRunner

from dfb_ood.networks import (
    OODNet,
    PretrainedWeightsUnavailable,
    create_network,
    from_classifier,
    load_foreign_state_dict,
)
from dfb_ood.networks.imagenet import RESNET50_HUB, RESNET50_TORCHVISION_FILE, vit_backbone

TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must never download anything")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so a buffer that failed to load would show."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _torchvision_pooled(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's penultimate feature: its own layers, then its avgpool."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


# --- resnet50 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_r50() -> torch.nn.Module:
    torch.manual_seed(5)
    return _randomise(torchvision.models.resnet50(weights=None, num_classes=10))


def _save(state: dict[str, torch.Tensor], path: Path, layout: str) -> Path:
    if layout == "openood-ddp":  # OpenOOD trains under DataParallel/DDP and may nest the weights
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}, path)
    elif path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("layout", ["torchvision", "openood-ddp", "safetensors"])
def test_resnet50_loads_torchvision_layout_with_identical_logits_and_features(
    torchvision_r50: torch.nn.Module, tmp_path: Path, layout: str
):
    suffix = ".safetensors" if layout == "safetensors" else ".pth"
    path = _save(torchvision_r50.state_dict(), tmp_path / f"r50{suffix}", layout)
    net = create_network("resnet50", 10, weights=path, load_head="require").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = net.forward_features(x)
        torch.testing.assert_close(
            net.forward_head(fmap, pre_logits=True), _torchvision_pooled(torchvision_r50, x)
        )
        torch.testing.assert_close(net(x), torchvision_r50(x), **TOL)
    assert fmap.shape == (2, 2048, 2, 2)


def test_resnet50_loads_timm_layout_with_identical_logits(tmp_path: Path):
    source = _randomise(timm.create_model("resnet50", pretrained=False, num_classes=7))
    path = _save(source.state_dict(), tmp_path / "timm_r50.pth", "timm")
    net = create_network("resnet50", 7, weights=path, load_head="require").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), source(x), **TOL)
        torch.testing.assert_close(
            net.forward_head(net.forward_features(x), pre_logits=True),
            source.forward_head(source.forward_features(x), pre_logits=True),
        )


def test_resnet50_dfb_takes_the_k_class_head_and_zero_background(
    torchvision_r50: torch.nn.Module, tmp_path: Path
):
    path = _save(torchvision_r50.state_dict(), tmp_path / "r50.pth", "torchvision")
    dfb = create_network("resnet50", 10, background=True, weights=path).eval()  # load_head="auto"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = dfb(x)
        torch.testing.assert_close(logits[:, :10], torchvision_r50(x), **TOL)
    assert torch.equal(logits[:, 10], torch.zeros(2))


def test_resnet50_imagenet_head_is_not_forced_into_a_k_class_head(
    torchvision_r50: torch.nn.Module, tmp_path: Path
):
    path = _save(torchvision_r50.state_dict(), tmp_path / "r50.pth", "torchvision")
    with pytest.warns(UserWarning, match="re-initialised"):
        net = create_network("resnet50", 3, weights=path)
    assert net.head_weight.shape == (3, 2048)


def _fake_hub_cache(root: Path, repo: str, state: dict[str, torch.Tensor]) -> None:
    snapshot = root / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)


@pytest.mark.parametrize("cache", ["huggingface", "torchvision"])
def test_resnet50_pretrained_comes_from_a_local_cache_only(
    torchvision_r50: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: str
):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # online or not, nothing is downloaded
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    if cache == "huggingface":
        _fake_hub_cache(tmp_path / "hf", RESNET50_HUB, torchvision_r50.state_dict())
    else:
        folder = tmp_path / "torch_hub" / "checkpoints"
        folder.mkdir(parents=True)
        torch.save(torchvision_r50.state_dict(), folder / RESNET50_TORCHVISION_FILE)
    net = create_network("resnet50", 3, pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = net.forward_head(net.forward_features(x), pre_logits=True)
        torch.testing.assert_close(pooled, _torchvision_pooled(torchvision_r50, x))
    assert net.head_weight.shape == (3, 2048)  # backbone only; the head stays fresh


@pytest.mark.parametrize("name", ["resnet50", "vit_b16"])
def test_pretrained_without_a_cached_file_explains_and_never_downloads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    with pytest.raises(PretrainedWeightsUnavailable, match="never downloaded") as info:
        create_network(name, 3, pretrained=True)
    assert "weights=" in str(info.value)


# --- vit_b16 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit_dfb() -> OODNet:
    """One ViT-B/16 DFB net (K=3, random weights, a head far from its init) for the whole module."""
    torch.manual_seed(16)
    net = create_network("vit_b16", 3, background=True).eval()
    with torch.no_grad():
        net.head.weight.normal_()
        net.head.bias.normal_()
    return net


@pytest.fixture(scope="module")
def resnet50_dfb() -> OODNet:
    torch.manual_seed(50)
    net = _randomise(create_network("resnet50", 3, background=True))
    with torch.no_grad():
        net.head.weight.normal_(std=0.05)
        net.head.bias.normal_()
    return net


@pytest.mark.parametrize("size", [(32, 32), (48, 32), (64, 80)])
@pytest.mark.parametrize("name", ["vit_b16", "resnet50"])
def test_dense_to_gap_identity_on_random_weights(
    vit_dfb: OODNet, resnet50_dfb: OODNet, name: str, size: tuple[int, int]
):
    net = vit_dfb if name == "vit_b16" else resnet50_dfb
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        fmap = net.forward_features(x)
        gap = net(x)
        low = net.dense(x, low_res=True)
        full = net.dense(x)
        # the head applied by hand at every feature pixel, then averaged
        by_hand = torch.einsum("bchw,oc->bohw", fmap, net.head_weight) + net.head_bias[:, None, None]
    # ViT: one token per whole 16 px patch; ResNet-50: each of its five stride-2 steps pads, so ceil
    grid = tuple(s // 16 for s in size) if name == "vit_b16" else tuple(-(-s // 32) for s in size)
    assert fmap.shape == (2, net.feature_dim, *grid)
    assert gap.shape == (2, 4) and full.shape == (2, 4, *size) and low.shape[-2:] == fmap.shape[-2:]
    torch.testing.assert_close(gap, low.mean(dim=(2, 3)), **TOL)
    torch.testing.assert_close(gap, by_hand.mean(dim=(2, 3)), **TOL)


def test_vit_map_is_timms_own_patch_grid_and_drops_the_class_token(vit_dfb: OODNet):
    backbone = vit_dfb.backbone
    x = torch.randn(2, 3, 48, 32)
    with torch.no_grad():
        fmap = vit_dfb.forward_features(x)
        (reference,) = backbone.forward_intermediates(
            x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True
        )
        tokens = type(backbone).forward_features(backbone, x)  # timm's tokens, class token first
    assert backbone.num_prefix_tokens == 1 and tokens.shape[1] == 1 + 3 * 2
    torch.testing.assert_close(fmap, reference)
    # the pooled feature is the mean of the patch tokens; the class token is not part of it
    pooled = vit_dfb.forward_head(fmap, pre_logits=True)
    torch.testing.assert_close(pooled, tokens[:, 1:].mean(dim=1), **TOL)
    assert not torch.allclose(pooled, tokens.mean(dim=1), atol=1e-3)


def test_vit_gap_logits_equal_timms_patch_mean_classifier(vit_dfb: OODNet):
    """timm's own ViT with ``global_pool="avg", fc_norm=False`` is head(mean of patch tokens)."""
    reference = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        num_classes=4,
        global_pool="avg",
        fc_norm=False,
        dynamic_img_size=True,
    ).eval()
    state = {k[len("backbone.") :]: v for k, v in vit_dfb.state_dict().items() if k.startswith("backbone.")}
    state["head.weight"] = vit_dfb.head_weight.detach().clone()
    state["head.bias"] = vit_dfb.head_bias.detach().clone()
    reference.load_state_dict(state, strict=True)  # same key layout as timm's: nothing left over
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(vit_dfb(x), reference(x), **TOL)


def test_vit_has_a_per_token_norm_and_no_layernorm_after_pooling(vit_dfb: OODNet):
    backbone = vit_dfb.backbone
    assert isinstance(backbone.fc_norm, torch.nn.Identity) and isinstance(backbone.head, torch.nn.Identity)
    assert isinstance(backbone.norm, torch.nn.LayerNorm)
    assert vit_dfb.feature_dim == 768 and vit_dfb.feature_stride == 16
    with pytest.raises(ValueError, match="fc_norm"):
        vit_backbone(fc_norm=True)


def test_vit_loads_a_timm_state_dict_file_and_dfb_from_classifier_keeps_it(vit_dfb: OODNet, tmp_path: Path):
    """A timm ``vit_base_patch16_224`` file (the fixture's weights under timm's keys) loads exactly."""
    state = {k[len("backbone.") :]: v for k, v in vit_dfb.state_dict().items() if k.startswith("backbone.")}
    state["head.weight"] = vit_dfb.head_weight[:3].detach().clone()  # a 3-class timm classifier
    state["head.bias"] = vit_dfb.head_bias[:3].detach().clone()
    path = _save(state, tmp_path / "vit.safetensors", "safetensors")
    classifier = create_network("vit_b16", 3, weights=path, load_head="require").eval()
    dfb = from_classifier(classifier).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(classifier.forward_features(x), vit_dfb.forward_features(x))
        torch.testing.assert_close(classifier(x), vit_dfb(x)[:, :3], **TOL)
        torch.testing.assert_close(dfb(x)[:, :3], classifier(x), **TOL)
        torch.testing.assert_close(dfb.dense(x, low_res=True).mean(dim=(2, 3)), dfb(x), **TOL)


def test_harness_list_networks_shows_both():
    from dfb_ood.harness.cli import app

    result = CliRunner().invoke(app, ["list", "networks"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "resnet50" in result.output and "vit_b16" in result.output
    assert "class token dropped" in result.output


def _randomise_torchvision_vit(model: torch.nn.Module) -> torch.nn.Module:
    """torchvision zero-initialises the head and class token and sets LayerNorms to identity: undo that."""
    with torch.no_grad():
        model.class_token.normal_()
        model.heads.head.weight.normal_(std=0.05)
        model.heads.head.bias.normal_()
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_vit_loads_torchvision_and_openood_vit_b16_layout_exactly():
    """OpenOOD v1.5's ImageNet ``ViT_B_16`` subclasses torchvision's ``VisionTransformer``: same keys."""
    torch.manual_seed(7)
    source = _randomise_torchvision_vit(torchvision.models.vit_b_16(weights=None, num_classes=5))
    # in memory, as OpenOOD's DDP training nests it (files are read the same way; see the tests above)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    net = create_network("vit_b16", 5).eval()
    report = load_foreign_state_dict(net, wrapped, head="require")
    assert report.head == "loaded" and "converted from torchvision's ViT layout" in report.notes
    x = torch.randn(1, 3, 224, 224)  # torchvision's ViT runs at its own size only
    with torch.no_grad():
        tokens = source._process_input(x)
        tokens = source.encoder(torch.cat([source.class_token.expand(1, -1, -1), tokens], dim=1))
        ours = type(net.backbone).forward_features(net.backbone, x)  # timm's tokens, class token first
        torch.testing.assert_close(ours, tokens, **TOL)
        patch_mean = tokens[:, 1:].mean(dim=1)  # torchvision's patch tokens, pooled as vit_b16 pools
        torch.testing.assert_close(
            net.forward_head(net.forward_features(x), pre_logits=True), patch_mean, **TOL
        )
        torch.testing.assert_close(net(x), source.heads(patch_mean), **TOL)
