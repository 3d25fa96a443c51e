"""ODIN: input perturbation, DFB column handling, and agreement with pytorch-ood 0.4.0.

Compared with pytorch-ood's ``ODIN`` / ``odin_preprocessing`` (cross-entropy with the predicted class
at temperature T, ``x - eps * sign(grad) / norm_std``): the perturbed inputs, the logits of the
perturbed inputs and the scores (ours == -theirs) agree. Differences on purpose, not tested against
it: pytorch-ood averages the loss over the batch and we sum it (the sign of every input gradient is
the same; only an underflow to an exact zero could differ); and pytorch-ood has no notion of a
background column, so the ``num_classes`` path is compared with ``odin_preprocessing`` applied to a
model restricted to the first K logits.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pytorch_ood.detector import ODIN as TorchODIN
from pytorch_ood.detector import odin_preprocessing
from torch import nn

from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.odin import ODIN
from tests.postprocessors.conftest import TinyNet


class TinyConv(nn.Module):
    """A 3-channel image net, to check per-channel std on (N, C, H, W) inputs."""

    def __init__(self, num_outputs: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(8, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


STD_12 = tuple(float(v) for v in np.linspace(0.2, 0.4, 12))
STD_RGB = (0.247, 0.243, 0.261)
U = 2.0**-24  # float32 unit roundoff
# An input-gradient entry of these nets is a float32 sum of at most 72 products (8 channels x 3x3
# taps), which rounding may move by up to 2 * 72 * U ~ 1e-5 of the sum of their magnitudes (two
# summation orders, Higham's bound). 1e-3 of the sample's largest entry leaves a factor 100 for that
# sum exceeding the largest entry.
SIGN_MARGIN = 1e-3


def certain_signs(net: nn.Module, x: torch.Tensor, temperature: float, num_classes: int | None = None):
    """Entries of ``x`` whose input-gradient sign no float32 rounding can flip.

    The gradient of the ODIN loss is taken in float64, on a float64 copy of the net; an entry is
    certain when it lies farther than ``SIGN_MARGIN`` of its sample's largest entry from zero.
    Elsewhere two correct implementations (or one, on two CPUs) may step either way, so the
    comparisons below skip those entries, and the samples that hold one where logits or scores
    are compared. Returns (entries, samples), both boolean.
    """
    net64 = copy.deepcopy(net).double()
    inputs = x.detach().double().requires_grad_(True)
    logits = net64(inputs)
    head = logits if num_classes is None else logits[:, :num_classes]
    loss = -torch.log_softmax(head / temperature, dim=1).max(dim=1).values.sum()
    (grad,) = torch.autograd.grad(loss, inputs)
    flat = grad.abs().reshape(len(grad), -1)
    entries = flat > SIGN_MARGIN * flat.amax(dim=1, keepdim=True)
    samples = entries.all(dim=1)
    assert samples.float().mean() > 0.8, "too few samples left to compare"
    return entries.reshape(x.shape), samples


@pytest.fixture
def x(id_ood_data) -> torch.Tensor:
    return torch.cat([id_ood_data["test_x"], id_ood_data["ood_x"]])


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(64, 3, 6, 6, generator=torch.Generator().manual_seed(2))


def _theirs(values: torch.Tensor) -> np.ndarray:
    return values.detach().double().numpy()


CASES = [(1000.0, 0.0014), (1000.0, 0.05), (2.0, 0.0014), (2.0, 0.05)]


@pytest.mark.parametrize(("temperature", "noise"), CASES)
@pytest.mark.parametrize("std", [(1.0, 1.0, 1.0), STD_12])
def test_matches_pytorch_ood_on_tiny_net(tiny_net, x, temperature, noise, std):
    ours = ODIN(temperature=temperature, noise=noise, input_std=std)
    norm_std = list(std) if len(std) == 12 else None
    x_ref = odin_preprocessing(tiny_net, x, eps=noise, temperature=temperature, norm_std=norm_std)
    x_ours = ours.perturb(tiny_net, x)
    assert not torch.equal(x_ours, x)
    entries, samples = certain_signs(tiny_net, x, temperature)
    torch.testing.assert_close(x_ours[entries], x_ref[entries], rtol=0, atol=1e-7)
    logits = ours.infer(tiny_net, x)
    with torch.no_grad():
        torch.testing.assert_close(logits[samples], tiny_net(x_ref)[samples], rtol=0, atol=1e-6)
    ref = TorchODIN(tiny_net, eps=noise, temperature=temperature, norm_std=norm_std)
    theirs = _theirs(ref.predict(x))
    scores = ours.score_batches(tiny_net, [x])
    np.testing.assert_allclose(scores[samples], -theirs[samples], rtol=0, atol=2e-6)


@pytest.mark.parametrize(("temperature", "noise"), CASES)
def test_matches_pytorch_ood_per_channel_on_images(images, temperature, noise):
    net = TinyConv()
    ours = ODIN(temperature=temperature, noise=noise, input_std=STD_RGB)
    x_ref = odin_preprocessing(net, images, eps=noise, temperature=temperature, norm_std=list(STD_RGB))
    x_ours = ours.perturb(net, images)
    entries, samples = certain_signs(net, images, temperature)
    torch.testing.assert_close(x_ours[entries], x_ref[entries], rtol=0, atol=1e-7)
    # each channel moved by noise / std_c wherever the gradient is non-zero; x' = x - step is rounded
    # (<= U |x'|) and so is x' - x (<= U |step|)
    step = (x_ours - images).abs().amax(dim=(0, 2, 3))
    atol = U * float(x_ours.abs().max() + step.max())
    torch.testing.assert_close(step, noise / torch.tensor(STD_RGB), rtol=0, atol=atol)
    ref = TorchODIN(net, eps=noise, temperature=temperature, norm_std=list(STD_RGB))
    theirs = _theirs(ref.predict(images))
    scores = ours.score_batches(net, [images])
    np.testing.assert_allclose(scores[samples], -theirs[samples], rtol=0, atol=2e-6)


def test_perturbation_raises_confidence(tiny_net, x):
    """The step follows -grad of the cross-entropy, so the tempered max softmax should mostly rise."""
    det = ODIN(temperature=2.0, noise=0.01)
    clean = det.score(Outputs(logits=tiny_net(x).detach().double().numpy()))
    perturbed = det.score_batches(tiny_net, [x])
    assert np.mean(perturbed > clean) > 0.95


def test_num_classes_keeps_background_clean(x):
    k = 5
    net = TinyNet(num_classes=k + 1, seed=4)
    det = ODIN(temperature=1000.0, noise=0.05, input_std=STD_12)
    with torch.no_grad():
        clean = net(x)
    logits = det.infer(net, x, num_classes=k)
    assert logits.shape == clean.shape
    assert torch.equal(logits[:, k], clean[:, k])
    assert torch.all((logits[:, :k] - clean[:, :k]).abs().amax(dim=1) > 0)

    # the first K columns are the logits of the input perturbed as if the net had only K outputs
    def foreground(inp: torch.Tensor) -> torch.Tensor:
        return net(inp)[:, :k]

    x_ref = odin_preprocessing(foreground, x, eps=0.05, temperature=1000.0, norm_std=list(STD_12))
    _, samples = certain_signs(net, x, 1000.0, num_classes=k)
    with torch.no_grad():
        torch.testing.assert_close(logits[samples, :k], net(x_ref)[samples, :k], rtol=0, atol=1e-6)
    # and that differs from the perturbation that sees all K + 1 logits
    x_all = det.perturb(net, x)
    assert not torch.equal(x_all, det.perturb(net, x, num_classes=k))


def test_zero_noise_gives_the_clean_logits(x):
    net = TinyNet(num_classes=6)
    det = ODIN(noise=0.0)
    assert not det.needs_network and ODIN().needs_network
    with torch.no_grad():
        clean = net(x)
    assert torch.equal(det.infer(net, x), clean)
    assert torch.equal(det.infer(net, x, num_classes=5), clean)


@pytest.mark.parametrize("train_mode", [True, False])
def test_network_is_left_untouched(x, train_mode):
    net = TinyNet(num_classes=6).train(train_mode)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ODIN(noise=0.05).infer(net, x, num_classes=5)
    assert all(p.grad is None for p in net.parameters())
    assert all(m.training == train_mode for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_input_is_not_modified_and_needs_no_grad(tiny_net, x):
    x_copy = x.clone()
    det = ODIN(noise=0.05)
    out = det.infer(tiny_net, x)
    assert torch.equal(x, x_copy) and not x.requires_grad and x.grad is None
    assert not out.requires_grad


def test_works_under_no_grad_and_inference_mode(tiny_net, x):
    det = ODIN(temperature=2.0, noise=0.05)
    expected = det.infer(tiny_net, x)
    with torch.no_grad():
        assert torch.equal(det.infer(tiny_net, x), expected)
    with torch.inference_mode():
        x_inf = x.clone()
        assert torch.equal(det.infer(tiny_net, x_inf), expected)


def test_batches_are_independent(tiny_net, x):
    """The summed loss makes each sample's step independent of its batch (no batch-norm here).

    Not bit for bit: a matrix product may round a row differently with another number of rows (or
    another alignment), so the comparison allows what float32 allows. A step lost or scaled by the
    batch (a mean loss underflowing at large T, say) would move entries by the whole step.
    """
    det = ODIN(temperature=1000.0, noise=0.0014)
    entries, samples = certain_signs(tiny_net, x, 1000.0)
    whole = det.perturb(tiny_net, x)
    split = torch.cat([det.perturb(tiny_net, x[:37]), det.perturb(tiny_net, x[37:])])
    # x - noise * sign(g): the same float32 operations on the same numbers where the sign is certain
    torch.testing.assert_close(split[entries], whole[entries], rtol=0, atol=0)
    # Logits of one input through the 3 layers (sums of <= 32 products of magnitude <= 10) differ
    # by <= 1e-4 between batch sizes; a T = 1000 softmax turns a logit change d into a score change
    # <= d / (2 T) = 5e-8.
    scores_whole = det.score_batches(tiny_net, [x])
    scores_split = det.score_batches(tiny_net, [(x[:37], None), (x[37:], None)])
    np.testing.assert_allclose(scores_split[samples], scores_whole[samples], rtol=0, atol=1e-7)


def test_score_hand_values():
    out = Outputs(logits=np.array([[0.0, 0.0, 4.0 * np.log(3.0)], [1.0, 1.0, 1.0]]))
    # at T = 2 the tempered softmax of row 0 is (1, 1, 9) / 11
    np.testing.assert_allclose(ODIN(temperature=2.0).score(out), [9 / 11, 1 / 3], rtol=1e-12)
    assert ODIN.name == "odin" and ODIN.fusion_kind == "softmax"
    assert ODIN().params() == {"temperature": 1000.0, "noise": 0.0014, "input_std": (1.0, 1.0, 1.0)}


def test_refuses_background_and_bad_arguments(tiny_net, x):
    with pytest.raises(ValueError, match="background"):
        ODIN().score(Outputs(logits=np.zeros((2, 3)), background=True))
    with pytest.raises(ValueError, match="channel"):
        ODIN(input_std=(0.2, 0.3, 0.4)).infer(tiny_net, x)  # 12 input columns, 3 stds
    with pytest.raises(ValueError, match="num_classes"):
        ODIN().infer(tiny_net, x, num_classes=9)
    with pytest.raises(ValueError):
        ODIN(temperature=0.0)
    with pytest.raises(ValueError):
        ODIN(noise=-1.0)
    with pytest.raises(ValueError):
        ODIN(input_std=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="no batches"):
        ODIN().score_batches(tiny_net, [])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_images_device(tiny_net, x):
    det = ODIN(temperature=1000.0, noise=0.0014, input_std=STD_12)
    cpu = det.infer(tiny_net, x)
    gpu = det.infer(tiny_net.cuda(), x.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)
