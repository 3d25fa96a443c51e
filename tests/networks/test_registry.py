"""The registry: names, shapes, the YAML descriptions, and pretrained weights without a network."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml

from dfb_ood import networks
from dfb_ood.networks import PretrainedWeightsUnavailable, available_networks, create_network, network_spec

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "networks"


def test_available_networks_has_the_required_ones():
    names = available_networks()
    assert {"bit_r50x1", "rv2_tiny", "rv2_small", "resnet18_32x32"} <= set(names)
    assert names == sorted(names)


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="rv2_tiny") as info:
        create_network("resnet9000", 10)
    assert "resnet9000" in str(info.value)


@pytest.mark.parametrize("name", ["rv2_tiny", "rv2_small", "resnet18_32x32"])
def test_small_networks_keep_a_spatial_map_at_32px(name: str):
    net = create_network(name, 10).eval()
    with torch.no_grad():
        fmap = net.forward_features(torch.randn(2, 3, 32, 32))
    assert fmap.shape[1] == net.feature_dim
    assert min(fmap.shape[-2:]) >= 4
    if name.startswith("rv2"):
        assert fmap.shape[-2:] == (8, 8)


def test_bit_r50x1_builds_offline_with_random_weights(monkeypatch: pytest.MonkeyPatch):
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("construction must not download anything")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    net = create_network("bit_r50x1", 10).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and net.feature_dim == 2048
    assert net.head_weight.shape == (10, 2048)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_network_yaml_holds_only_what_the_spec_lacks(path: Path):
    """The spec is the one source of a network's facts; its YAML only describes it for the CLI."""
    config = yaml.safe_load(path.read_text())
    assert set(config) == {"name", "description"}
    assert config["name"] == path.stem and path.stem in available_networks()
    assert isinstance(config["description"], str) and config["description"]
    assert network_spec(path.stem).description is None  # never a second copy of the YAML's text


@pytest.mark.parametrize("name", available_networks())
def test_spec_facts_are_those_of_the_built_network(name: str):
    spec = network_spec(name)
    assert (spec.mean is None) == (spec.std is None)
    if spec.mean is not None:
        assert len(spec.mean) == len(spec.std) == 3
    net = create_network(name, 3).eval()
    stride, size = net.feature_stride, spec.input_size
    assert net.feature_dim == spec.feature_dim and size % stride == 0
    with torch.no_grad():
        fmap = net.forward_features(torch.randn(1, 3, size, size))
    assert fmap.shape[1:] == (spec.feature_dim, size // stride, size // stride)


def test_every_registered_network_has_a_yaml():
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} == set(available_networks())


@pytest.fixture
def offline_empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """HF_HUB_OFFLINE=1, an empty Hugging Face cache, and any download attempt is a test failure."""

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted while offline")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    return tmp_path / "hub"


def test_pretrained_offline_without_a_file_says_how_to_provide_weights(offline_empty_cache: Path):
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        create_network("bit_r50x1", 10, pretrained=True)
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "weights=" in message and "BiT-M-R50x1.npz" in message


def test_dfb_from_pretrained_offline_fails_the_same_way(offline_empty_cache: Path):
    with pytest.raises(PretrainedWeightsUnavailable):
        networks.dfb_from_pretrained("bit_r50x1", 10)


def test_pretrained_for_a_network_without_published_weights_is_a_clear_error():
    with pytest.raises(PretrainedWeightsUnavailable, match="weights="):
        create_network("rv2_tiny", 10, pretrained=True)
