"""Tiny random networks and the Outputs they produce, shared by the detector tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfb_ood.postprocessors.base import Outputs


class TinyNet(nn.Module):
    """Feature extractor + linear head, the shape every detector expects (pooled feature -> logits)."""

    def __init__(self, in_dim: int = 12, feat_dim: int = 16, num_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(in_dim, 32), nn.Tanh(), nn.Linear(32, feat_dim), nn.ReLU())
        self.fc = nn.Linear(feat_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x))


def outputs_of(net: TinyNet, x: torch.Tensor, labels: torch.Tensor | None = None) -> Outputs:
    """Run the net once and package what detectors need, in float64 for tight comparisons."""
    with torch.no_grad():
        feats = net.features(x)
        logits = net.fc(feats)
    return Outputs(
        logits=logits.double().numpy(),
        features=feats.double().numpy(),
        labels=None if labels is None else labels.numpy(),
        weight=net.fc.weight.detach().double().numpy(),
        bias=net.fc.bias.detach().double().numpy(),
    )


@pytest.fixture
def tiny_net() -> TinyNet:
    return TinyNet()


@pytest.fixture
def id_ood_data() -> dict[str, torch.Tensor]:
    """ID samples around 5 class centres, OOD samples from a shifted, wider distribution."""
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(5, 12, generator=gen) * 2.0
    train_y = torch.arange(400) % 5
    train_x = centres[train_y] + 0.5 * torch.randn(400, 12, generator=gen)
    test_y = torch.arange(100) % 5
    test_x = centres[test_y] + 0.5 * torch.randn(100, 12, generator=gen)
    ood_x = 3.0 * torch.randn(100, 12, generator=gen) + 1.0
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "ood_x": ood_x}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
