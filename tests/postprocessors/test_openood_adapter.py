"""The OpenOOD adapter, driven the way OpenOOD's evaluator drives a postprocessor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.openood_adapter import OpenOODPostprocessor
from dfb_ood.postprocessors.registry import create


class FakeOpenOODNet(nn.Module):
    """Mimics OpenOOD's network API: ``net(x, return_feature=True)`` and ``get_fc()``."""

    def __init__(self, outputs: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 10), nn.ReLU())
        self.fc = nn.Linear(10, outputs)

    def forward(self, x, return_feature: bool = False):
        feature = self.body(x)
        logits = self.fc(feature)
        return (logits, feature) if return_feature else logits

    def get_fc(self):
        return self.fc.weight.detach().cpu().numpy(), self.fc.bias.detach().cpu().numpy()


def loader(n: int, seed: int, label: int | None = None, batch: int = 16):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    y = torch.arange(n) % 3 if label is None else torch.full((n,), label)
    return [{"data": x[i : i + batch], "label": y[i : i + batch]} for i in range(0, n, batch)]


def direct_outputs(net: FakeOpenOODNet, batches, background: bool = False) -> Outputs:
    """The net's outputs, batch by batch as the adapter computes them.

    One big batch would do the same arithmetic, but a matrix product may round a row differently
    with another number of rows, and Mahalanobis' precision matrix amplifies that (a few units in
    the last place of the features already use half of the tolerance below).
    """
    with torch.no_grad():
        parts = [net(b["data"], return_feature=True) for b in batches]
    logits, feats = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    w, b = net.get_fc()
    return Outputs(
        logits=logits.numpy(),
        features=feats.numpy(),
        labels=torch.cat([b_["label"] for b_ in batches]).numpy(),
        weight=w,
        bias=b,
        background=background,
    )


@pytest.mark.parametrize("name", ["msp", "vim", "knn", "mds"])
def test_adapter_matches_direct_scoring(name):
    net = FakeOpenOODNet().eval()
    kwargs = {"dim": 5} if name == "vim" else {"k": 5} if name == "knn" else {}
    train, test = loader(64, 0), loader(40, 1)
    adapter = OpenOODPostprocessor(create(name, **kwargs))
    adapter.setup(net, {"train": train, "val": loader(32, 2)}, {"val": loader(16, 3, label=-1)})
    pred, conf, label = adapter.inference(net, test)
    reference = create(name, **kwargs).fit(direct_outputs(net, train))
    np.testing.assert_allclose(conf, reference.score(direct_outputs(net, test)), rtol=1e-5, atol=1e-5)
    assert pred.dtype.kind == "i" and label.tolist() == (torch.arange(40) % 3).tolist()
    assert conf.shape == (40,)


def test_adapter_with_dfb_variant_uses_background_and_k_class_predictions():
    net = FakeOpenOODNet(outputs=4).eval()  # K = 3 classes + background
    adapter = OpenOODPostprocessor(create("energy_dfbz"))
    assert adapter.background
    adapter.setup(net, {"train": loader(64, 0), "val": loader(32, 2)}, {})
    pred, conf, _ = adapter.inference(net, loader(40, 1))
    assert pred.max() <= 2  # argmax over the 3 class logits only
    reference = create("energy_dfbz").fit(
        direct_outputs(net, loader(64, 0), True), direct_outputs(net, loader(32, 2), True)
    )
    np.testing.assert_allclose(
        conf, reference.score(direct_outputs(net, loader(40, 1), True)), rtol=1e-5, atol=1e-5
    )


def test_adapter_runs_odin_perturbation_through_the_network():
    net = FakeOpenOODNet().eval()
    odin = OpenOODPostprocessor(create("odin", temperature=2.0, noise=0.05))
    odin.setup(net, {"train": loader(32, 0)}, {})
    _, conf_perturbed, _ = odin.inference(net, loader(40, 1))
    clean = OpenOODPostprocessor(create("odin", temperature=2.0, noise=0.0))
    clean.setup(net, {"train": loader(32, 0)}, {})
    _, conf_clean, _ = clean.inference(net, loader(40, 1))
    assert not np.allclose(conf_perturbed, conf_clean)
    # ODIN's perturbation is chosen to increase the max softmax: on average the score rises.
    assert conf_perturbed.mean() > conf_clean.mean()
    assert all(p.grad is None for p in net.parameters())


def test_adapter_errors_are_clear():
    net = FakeOpenOODNet().eval()
    with pytest.raises(KeyError, match="train"):
        OpenOODPostprocessor(create("msp")).setup(net, {}, {})
    with pytest.raises(ValueError, match="no batches"):
        OpenOODPostprocessor(create("msp")).inference(net, [])
