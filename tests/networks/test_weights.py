"""Foreign weights: OpenOOD's best.ckpt layout, timm / BiT files, wrappers, and unsafe pickles."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from dfb_ood.networks import CheckpointError, create_network, load_foreign_state_dict, read_state_dict

# ----------------------------------------------------------------------------- OpenOOD ResNet18_32x32


def openood_resnet18_state(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in OpenOOD v1.5's ResNet18_32x32 layout, written from its description.

    CIFAR stem conv1 (3x3) + bn1; layer1..4 of two BasicBlocks (conv1/bn1/conv2/bn2), a 1x1 conv +
    BN shortcut under ``shortcut.0`` / ``shortcut.1`` where the shape changes; ``fc`` Linear(512, K).
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, out_chs: int, in_chs: int, k: int) -> None:
        fan_in = in_chs * k * k
        state[f"{name}.weight"] = torch.randn(out_chs, in_chs, k, k, generator=gen) * math.sqrt(2.0 / fan_in)

    def bn(name: str, chs: int) -> None:
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(chs, generator=gen)
        state[f"{name}.bias"] = 0.1 * torch.randn(chs, generator=gen)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(chs, generator=gen)
        state[f"{name}.running_var"] = 0.5 + torch.rand(chs, generator=gen)
        state[f"{name}.num_batches_tracked"] = torch.tensor(100)

    conv("conv1", 64, 3, 3)
    bn("bn1", 64)
    in_chs = 64
    for layer, width in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            block_in = in_chs if block == 0 else width
            conv(f"{prefix}.conv1", width, block_in, 3)
            bn(f"{prefix}.bn1", width)
            conv(f"{prefix}.conv2", width, width, 3)
            bn(f"{prefix}.bn2", width)
            if block == 0 and layer > 1:
                conv(f"{prefix}.shortcut.0", width, block_in, 1)
                bn(f"{prefix}.shortcut.1", width)
        in_chs = width
    state["fc.weight"] = 0.05 * torch.randn(num_classes, 512, generator=gen)
    state["fc.bias"] = 0.05 * torch.randn(num_classes, generator=gen)
    return state


def openood_reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """OpenOOD's ResNet18_32x32 forward in plain functional ops (eval-mode BN), for comparison."""

    def bn(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.batch_norm(
            t, state[f"{name}.running_mean"], state[f"{name}.running_var"], state[f"{name}.weight"],
            state[f"{name}.bias"], training=False, eps=1e-5,
        )  # fmt: skip

    out = F.relu(bn(F.conv2d(x, state["conv1.weight"], padding=1), "bn1"))
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            stride = 2 if (layer > 1 and block == 0) else 1
            h = F.relu(
                bn(F.conv2d(out, state[f"{prefix}.conv1.weight"], stride=stride, padding=1), f"{prefix}.bn1")
            )
            h = bn(F.conv2d(h, state[f"{prefix}.conv2.weight"], padding=1), f"{prefix}.bn2")
            if f"{prefix}.shortcut.0.weight" in state:
                shortcut = bn(
                    F.conv2d(out, state[f"{prefix}.shortcut.0.weight"], stride=stride), f"{prefix}.shortcut.1"
                )
            else:
                shortcut = out
            out = F.relu(h + shortcut)
    return F.linear(out.mean(dim=(2, 3)), state["fc.weight"], state["fc.bias"])


def test_openood_key_layout_matches_ours_exactly():
    ours = create_network("resnet18_32x32", 10).state_dict()
    theirs = openood_resnet18_state(10)
    expected = {f"backbone.{k}": v.shape for k, v in theirs.items() if not k.startswith("fc.")}
    got = {k: v.shape for k, v in ours.items() if k.startswith("backbone.")}
    assert got == expected
    assert ours["head.weight"].shape == (10, 512, 1, 1)


def test_openood_best_ckpt_loads_as_the_k_class_classifier(tmp_path: Path):
    state = openood_resnet18_state(10)
    path = tmp_path / "best.ckpt"
    torch.save(state, path)
    net = create_network("resnet18_32x32", 10, weights=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), openood_reference_forward(state, x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(net.head_weight, state["fc.weight"])


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module_prefix", "both"])
def test_wrapped_and_dataparallel_checkpoints_load(tmp_path: Path, wrap: str):
    state = openood_resnet18_state(5)
    if wrap in ("module_prefix", "both"):
        state = {f"module.{k}": v for k, v in state.items()}
    obj: object = state
    if wrap in ("state_dict", "both"):
        obj = {"state_dict": state, "epoch": 7, "best_acc": 0.93}
    elif wrap == "model":
        obj = {"model": state, "optimizer": {"lr": 0.1}}
    path = tmp_path / "wrapped.pth"
    torch.save(obj, path)
    net = create_network("resnet18_32x32", 5, weights=path)
    plain = (
        state
        if wrap == "state_dict" or wrap == "model"
        else {k[len("module.") :]: v for k, v in state.items()}
    )
    torch.testing.assert_close(net.backbone.conv1.weight, plain["conv1.weight"])
    torch.testing.assert_close(net.head_bias, plain["fc.bias"])


def test_pickle_that_would_execute_code_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Payload(), protocol=2))
    zipped = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": Payload()}, zipped)
    for path in (raw, zipped):
        with pytest.raises(CheckpointError, match="refused") as info:
            create_network("resnet18_32x32", 10, weights=path)
        assert "arbitrary code" in str(info.value)
        with pytest.raises(CheckpointError):
            read_state_dict(path)
    assert not marker.exists()


def test_truncated_and_missing_files_are_clear_errors(tmp_path: Path):
    path = tmp_path / "best.ckpt"
    torch.save(openood_resnet18_state(10), path)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        create_network("resnet18_32x32", 10, weights=cut)
    with pytest.raises(CheckpointError, match="not found"):
        create_network("resnet18_32x32", 10, weights=tmp_path / "nope.ckpt")
    tensors = tmp_path / "cut.safetensors"
    save_file({"conv1.weight": torch.zeros(64, 3, 3, 3)}, tensors)
    tensors.write_bytes(tensors.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        create_network("resnet18_32x32", 10, weights=tensors)


def test_weights_of_another_architecture_are_a_clear_error(tmp_path: Path):
    path = tmp_path / "best.ckpt"
    torch.save(openood_resnet18_state(10), path)
    with pytest.raises(CheckpointError, match="do not fit a 'rv2_tiny' backbone") as info:
        create_network("rv2_tiny", 10, weights=path)
    assert "missing" in str(info.value) and "unexpected" in str(info.value)


def test_head_with_another_class_count_is_reinitialised_not_loaded(tmp_path: Path):
    state = openood_resnet18_state(100)
    path = tmp_path / "cifar100.ckpt"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="head has 100 outputs .* re-initialised"):
        net = create_network("resnet18_32x32", 10, weights=path)
    assert net.head_weight.shape == (10, 512)
    torch.testing.assert_close(net.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert not torch.equal(net.head_weight, state["fc.weight"][:10])
    with pytest.warns(UserWarning):
        report = load_foreign_state_dict(net, path)
    assert report.head == "reinitialised"
    with pytest.raises(CheckpointError, match="100 outputs"):
        load_foreign_state_dict(net, path, head="require")
    with pytest.raises(CheckpointError, match="Wrong class count"):
        create_network("resnet18_32x32", 10, weights=path, load_head="require")
    with pytest.raises(ValueError, match="head must be"):
        load_foreign_state_dict(net, path, head="maybe")  # type: ignore[arg-type]


def test_k_class_head_fills_the_class_rows_of_a_dfb_net(tmp_path: Path):
    state = openood_resnet18_state(10)
    path = tmp_path / "best.ckpt"
    torch.save(state, path)
    dfb = create_network("resnet18_32x32", 10, background=True, weights=path)
    torch.testing.assert_close(dfb.head_weight[:10], state["fc.weight"])
    assert bool((dfb.head_weight[10] == 0).all()) and dfb.head_bias[10].item() == 0.0
    assert load_foreign_state_dict(dfb, state).head == "extended"


def test_in_memory_state_dict_and_head_skip():
    net = create_network("resnet18_32x32", 10)
    before = net.head_weight.detach().clone()
    report = load_foreign_state_dict(net, openood_resnet18_state(10), head="skip")
    assert report.head == "skipped" and torch.equal(net.head_weight, before)


def test_not_a_state_dict_is_explained(tmp_path: Path):
    path = tmp_path / "odd.pt"
    torch.save({"weights": [torch.zeros(2)], "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="no state dict found"):
        read_state_dict(path)


# ----------------------------------------------------------------------------- BiT-M-R50x1


@pytest.fixture(scope="module")
def bit_timm_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A timm-format BiT-R50x1 state dict with a 1000-class ImageNet head, as a safetensors file."""
    torch.manual_seed(3)
    model = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=1000).eval()
    path = tmp_path_factory.mktemp("bit") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def test_timm_bit_file_loads_backbone_and_never_the_imagenet_head(
    bit_timm_file: tuple[Path, torch.nn.Module],
):
    path, model = bit_timm_file
    with pytest.warns(UserWarning, match="1000 outputs"):
        net = create_network("bit_r50x1", 10, weights=path).eval()
    assert net.head_weight.shape == (10, 2048)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_features(x), model.forward_features(x))


def test_pretrained_is_read_from_the_hub_cache_when_offline(
    bit_timm_file: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    path, model = bit_timm_file
    repo = tmp_path / "hub" / "models--timm--resnetv2_50x1_bit.goog_in21k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snapshot / "model.safetensors").symlink_to(path)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted while offline")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    net = create_network("bit_r50x1", 7, pretrained=True)
    torch.testing.assert_close(net.backbone.stem.conv.weight, model.stem.conv.weight)
    assert net.head_weight.shape == (7, 2048)


def test_pretrained_online_uses_the_hub_download(
    bit_timm_file: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
):
    path, model = bit_timm_file
    calls: list[tuple] = []

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        calls.append((repo_id, filename))
        return str(path)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    net = create_network("bit_r50x1", 10, background=True, pretrained=True)
    assert calls == [("timm/resnetv2_50x1_bit.goog_in21k", "model.safetensors")]
    torch.testing.assert_close(net.backbone.norm.weight, model.norm.weight)
    assert net.num_outputs == 11


def test_failed_download_becomes_an_explanation(monkeypatch: pytest.MonkeyPatch):
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("connection refused")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken)
    from dfb_ood.networks import PretrainedWeightsUnavailable

    with pytest.raises(PretrainedWeightsUnavailable, match="connection refused") as info:
        create_network("bit_r50x1", 10, pretrained=True)
    assert "weights=" in str(info.value)


def bit_npz(path: Path, head_classes: int = 1000) -> dict[str, np.ndarray]:
    """An archive in the original BiT layout (HWIO kernels, 'resnet/' prefix), from its description."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}

    def put(name: str, *shape: int) -> None:
        arrays[f"resnet/{name}"] = rng.standard_normal(shape, dtype=np.float32).astype(np.float16)

    put("root_block/standardized_conv2d/kernel", 7, 7, 3, 64)
    put("group_norm/gamma", 2048)
    put("group_norm/beta", 2048)
    put("head/conv2d/kernel", 1, 1, 2048, head_classes)
    put("head/conv2d/bias", head_classes)
    in_chs = 64
    for block, (units, out_chs) in enumerate(zip([3, 4, 6, 3], [256, 512, 1024, 2048]), start=1):
        mid = out_chs // 4
        for unit in range(1, units + 1):
            prefix = f"block{block}/unit{unit:02d}"
            unit_in = in_chs if unit == 1 else out_chs
            put(f"{prefix}/a/standardized_conv2d/kernel", 1, 1, unit_in, mid)
            put(f"{prefix}/b/standardized_conv2d/kernel", 3, 3, mid, mid)
            put(f"{prefix}/c/standardized_conv2d/kernel", 1, 1, mid, out_chs)
            for part, chs in (("a", unit_in), ("b", mid), ("c", mid)):
                put(f"{prefix}/{part}/group_norm/gamma", chs)
                put(f"{prefix}/{part}/group_norm/beta", chs)
            if unit == 1:
                put(f"{prefix}/a/proj/standardized_conv2d/kernel", 1, 1, unit_in, out_chs)
        in_chs = out_chs
    np.savez(path, **arrays)
    return arrays


def test_original_bit_npz_loads_and_its_head_is_ignored(tmp_path: Path):
    path = tmp_path / "BiT-M-R50x1.npz"
    arrays = bit_npz(path)
    net = create_network("bit_r50x1", 10, weights=path)

    def oihw(name: str) -> torch.Tensor:
        return torch.from_numpy(arrays[f"resnet/{name}"].astype(np.float32)).permute(3, 2, 0, 1)

    torch.testing.assert_close(net.backbone.stem.conv.weight, oihw("root_block/standardized_conv2d/kernel"))
    block = net.backbone.stages[2].blocks[5]
    torch.testing.assert_close(block.conv2.weight, oihw("block3/unit06/b/standardized_conv2d/kernel"))
    torch.testing.assert_close(
        net.backbone.stages[1].blocks[0].downsample.conv.weight,
        oihw("block2/unit01/a/proj/standardized_conv2d/kernel"),
    )
    assert net.head_weight.shape == (10, 2048)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.isfinite(net.eval()(x)).all()


def test_npz_for_other_networks_or_broken_archives_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "bad.npz"
    np.savez(path, **{"resnet/root_block/standardized_conv2d/kernel": np.zeros((7, 7, 3, 64), np.float32)})
    with pytest.raises(CheckpointError, match="missing"):
        create_network("bit_r50x1", 10, weights=path)
    with pytest.raises(CheckpointError, match="cannot read"):
        create_network("rv2_tiny", 10, weights=path)


def test_hub_falls_back_to_the_older_file_name(
    bit_timm_file: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    from huggingface_hub.errors import EntryNotFoundError

    path, model = bit_timm_file
    legacy = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), legacy)
    calls: list[str] = []

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        calls.append(filename)
        if filename == "model.safetensors":
            raise EntryNotFoundError("404")
        return str(legacy)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    net = create_network("bit_r50x1", 10, pretrained=True)
    assert calls == ["model.safetensors", "pytorch_model.bin"]
    torch.testing.assert_close(net.backbone.stem.conv.weight, model.stem.conv.weight)
