"""Our own artifacts: safetensors + JSON sidecar, checked on load, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import dfb_ood.networks.checkpoint as checkpoint_module
from dfb_ood.networks import (
    CheckpointError,
    create_network,
    from_classifier,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    sidecar_path,
)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    net = create_network("rv2_tiny", 5, background=True).eval()
    with torch.no_grad():
        net.head.weight.normal_()
    path = save_checkpoint(
        net,
        tmp_path / "dfb.safetensors",
        input_size=32,
        normalization={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)},
        settings_hash="abc123",
        extra={"seed": 0},
    )
    return path, net


def test_round_trip_and_sidecar_content(saved: tuple[Path, torch.nn.Module]):
    path, net = saved
    meta = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path) == path.with_suffix(".json")
    assert meta["arch"] == "rv2_tiny" and meta["num_classes"] == 5 and meta["background"] is True
    assert meta["num_outputs"] == 6 and meta["feature_dim"] == 128 and meta["input_size"] == [32, 32]
    assert meta["normalization"] == {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    assert meta["settings_hash"] == "abc123" and meta["extra"] == {"seed": 0}
    assert read_checkpoint_meta(path) == meta
    loaded = load_checkpoint(path, arch="rv2_tiny", num_classes=5, background=True, settings_hash="abc123")
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert not loaded.training


def test_saved_in_dense_mode_loads_as_gap_classifier(tmp_path: Path):
    """Train (one step) through ``dense``, save, reload: the GAP logits are the dense maps' means."""
    net = from_classifier(create_network("rv2_tiny", 3))
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(4, 3, 32, 32)
    loss = torch.nn.functional.cross_entropy(net.dense(x), torch.randint(0, 4, (4, 32, 32)))
    loss.backward()
    optimiser.step()
    net.eval()
    with torch.no_grad():
        dense_means = net.dense(x, low_res=True).mean(dim=(2, 3))
    path = save_checkpoint(net, tmp_path / "dfb.safetensors")
    classifier_view = load_checkpoint(path, background=True)
    with torch.no_grad():
        torch.testing.assert_close(classifier_view(x), dense_means, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_classes": 10}, "num_classes"),
        ({"arch": "resnet18_32x32"}, "arch"),
        ({"background": False}, "background"),
        ({"settings_hash": "other"}, "settings_hash"),
    ],
)
def test_expectation_mismatch_is_a_clear_error(saved: tuple[Path, torch.nn.Module], kwargs: dict, field: str):
    path, _ = saved
    with pytest.raises(CheckpointError, match=f"expected {field}="):
        load_checkpoint(path, **kwargs)


def test_truncated_weights_file(saved: tuple[Path, torch.nn.Module]):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    path.write_bytes(data[:4])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_missing_or_broken_sidecar(saved: tuple[Path, torch.nn.Module]):
    path, _ = saved
    side = sidecar_path(path)
    text = side.read_text()
    side.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    side.unlink()
    with pytest.raises(CheckpointError, match="no sidecar"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(path.with_name("absent.safetensors"))


def test_sidecar_of_another_checkpoint_is_detected(saved: tuple[Path, torch.nn.Module], tmp_path: Path):
    path, _ = saved
    other = save_checkpoint(create_network("rv2_tiny", 7), tmp_path / "other.safetensors")
    sidecar_path(path).write_text(sidecar_path(other).read_text())
    with pytest.raises(CheckpointError, match="do not describe the same network"):
        load_checkpoint(path)


def test_edited_sidecar_with_wrong_arch_gives_no_raw_traceback(saved: tuple[Path, torch.nn.Module]):
    """Even a consistent-looking but wrong description fails with CheckpointError, not a KeyError."""
    path, _ = saved
    from safetensors.torch import load_file, save_file

    meta = read_checkpoint_meta(path)
    meta["arch"] = "rv2_small"
    meta["feature_dim"] = 256
    text = json.dumps(meta)
    save_file(load_file(str(path)), str(path), metadata={"dfb_ood": text})
    sidecar_path(path).write_text(text)
    with pytest.raises(CheckpointError, match="tensors do not match a 'rv2_small' network"):
        load_checkpoint(path)
    meta["arch"] = "no_such_net"
    text = json.dumps(meta)
    save_file(load_file(str(path)), str(path), metadata={"dfb_ood": text})
    sidecar_path(path).write_text(text)
    with pytest.raises(CheckpointError, match="no_such_net"):
        load_checkpoint(path)


def test_write_is_atomic_and_a_failed_save_keeps_the_old_file(
    saved: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
):
    path, net = saved
    before = path.read_bytes()

    def crash(fd: int) -> None:
        raise KeyboardInterrupt  # a run killed after writing the temporary file, before the rename

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(create_network("rv2_tiny", 5, background=True), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["dfb.json", "dfb.safetensors"]  # no temp files
    assert load_checkpoint(path).num_outputs == 6


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_weights_and_sidecar_follow_the_umask(tmp_path: Path, umask: int, mode: int):
    """Both files get ``0o666 & ~umask``, as ``open(path, "w")`` would give them; the folder is made.

    safetensors' ``save_file`` renames its own 0600 temporary file over the path it is given, which
    made every checkpoint 0600 while its sidecar was 0644.
    """
    stale = tmp_path / "sub" / "net.safetensors"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    stale.chmod(0o640)  # an existing file's mode is not kept either: the new file replaces it
    previous = os.umask(umask)
    try:
        net = create_network("rv2_tiny", 2)
        path = save_checkpoint(net, tmp_path / "sub" / "net.safetensors")
        fresh = save_checkpoint(net, tmp_path / "new" / "deeper" / "net.safetensors")
    finally:
        os.umask(previous)
    for folder in (path.parent, fresh.parent):
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
        assert modes == {"net.json": oct(mode), "net.safetensors": oct(mode)}
    assert load_checkpoint(path).num_classes == 2


def test_path_must_be_safetensors(tmp_path: Path):
    with pytest.raises(ValueError, match="safetensors"):
        save_checkpoint(create_network("rv2_tiny", 2), tmp_path / "net.pt")


def test_version_check(saved: tuple[Path, torch.nn.Module]):
    path, _ = saved
    meta = json.loads(sidecar_path(path).read_text())
    meta["format_version"] = checkpoint_module.FORMAT_VERSION + 1
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(path)


def test_own_checkpoint_can_seed_create_network(saved: tuple[Path, torch.nn.Module]):
    """weights= accepts our artifacts too (safetensors state dict with backbone./head. keys)."""
    path, net = saved
    again = create_network("rv2_tiny", 5, background=True, weights=path)
    torch.testing.assert_close(again.head_weight, net.head_weight)


def test_build_options_are_recorded_and_rebuilt(tmp_path):
    """A network built with options (here a dilated EfficientNet-Lite) reloads as the same function."""
    from dfb_ood.networks import create_network, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    net = create_network("effnet_lite0", 3, output_stride=16).eval()
    path = save_checkpoint(net, tmp_path / "net.safetensors")
    assert json.loads((tmp_path / "net.json").read_text())["build_options"] == {"output_stride": 16}
    loaded = load_checkpoint(path)
    assert loaded.build_options == {"output_stride": 16}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert loaded.forward_features(x).shape[-2:] == (4, 4)  # stride 16, not the default 32
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
