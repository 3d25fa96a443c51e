"""Shared fixtures for the network tests: tiny inputs, and a hand-made net whose CAM is known."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfb_ood.networks import OODNet


class BrightnessBackbone(nn.Module):
    """Feature map = [relu(brightness), relu(-brightness)], average-pooled by 2.

    With head rows [1, 0] (class 0) and [0, 1] (class 1) and zero bias, class 0's logit map is the
    image brightness itself, so the CAM of class 0 must light up exactly where the image is bright.
    """

    num_features = 2
    reduction = 2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        brightness = F.avg_pool2d(x.mean(dim=1, keepdim=True), 2)
        return torch.cat([brightness.relu(), (-brightness).relu()], dim=1)


def brightness_net(background: bool = False) -> OODNet:
    net = OODNet("brightness", BrightnessBackbone(), 2, background=background)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        net.head.weight[0, 0] = 1.0
        net.head.weight[1, 1] = 1.0
    return net


@pytest.fixture
def bright_net() -> OODNet:
    return brightness_net()


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    """Seed every test, and run it on one CPU thread (restored afterwards).

    Results do not depend on the thread count, but speed does: these tests run tiny convolutions,
    and on a shared 2-core machine OpenMP worker threads spin while waiting for a busy core,
    which made the suite 5-10x slower under load (110 s instead of 13 s) with two threads.
    """
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
