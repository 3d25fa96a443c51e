"""RankFeat: agreement with pytorch-ood 0.4, a hand computation, the DFB variants, and a pipeline run.

pytorch-ood 0.4's ``RankFeat`` removes ``s1 u1 v1^T`` with the exact economy SVD
(``torch.linalg.svd``), as ours does, then applies a head and scores with ``EnergyBased.score``,
which is the negative energy of ours (an outlier score): ours == -theirs. The rank-1 term does not
depend on the SVD's sign convention (u1 and v1 flip together), so no sign fixing is needed. Neither
implements OpenOOD's block-3 term or its power-iteration ("accelerate") option.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_ood.detector import RankFeat as TorchRankFeat
from torch import nn
from typer.testing import CliRunner

from dfb_ood.harness.cli import app
from dfb_ood.harness.outputs import perturbed_logits
from dfb_ood.harness.run import Pipeline
from dfb_ood.networks import create_network
from dfb_ood.postprocessors._numerics import logsumexp
from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.dfb import DFBWrapper
from dfb_ood.postprocessors.rankfeat import RankFeat, remove_rank1
from dfb_ood.postprocessors.registry import create
from tests.harness.test_pipeline import TINY_BENCHMARK, TINY_RECIPE

K = 5


def _random_net(background: bool = False, seed: int = 0) -> nn.Module:
    """rv2_tiny with a head large enough that the logits (and their energies) differ visibly."""
    torch.manual_seed(seed)
    net = create_network("rv2_tiny", K, background=background)
    nn.init.normal_(net.head.weight, std=0.5)
    nn.init.normal_(net.head.bias, std=0.1)
    return net.eval()


def _images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ (1) pytorch-ood 0.4
def test_matches_pytorch_ood_on_a_random_oodnet() -> None:
    net = _random_net()
    x = _images()
    ours = RankFeat()
    logits = ours.infer(net, x)
    theirs = TorchRankFeat(backbone=net.forward_features, head=net.forward_head)
    with torch.no_grad():
        their_scores = theirs.predict(x).double().numpy()
    our_scores = ours.score(Outputs(logits=logits.double().numpy()))
    np.testing.assert_allclose(our_scores, -their_scores, rtol=1e-5, atol=1e-5)
    # and the edited feature maps themselves (theirs is a private helper of the same module)
    from pytorch_ood.detector.rankfeat import _remove_rank1

    with torch.no_grad():
        fmap = net.forward_features(x)
    torch.testing.assert_close(remove_rank1(fmap), _remove_rank1(fmap), rtol=1e-5, atol=1e-5)
    # the removal matters: the scores are not the plain energy
    with torch.no_grad():
        plain = logsumexp(net(x).double().numpy())
    assert not np.allclose(our_scores, plain, atol=1e-3)


# ------------------------------------------------------------------ (2) by hand
class MapNet(nn.Module):
    """Returns a fixed (B, C, h, w) feature map; GAP + a linear head, as OODNet does."""

    def __init__(self, fmap: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.fmap, self.weight, self.bias = fmap, weight, bias

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fmap[: x.shape[0]]

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3)) @ self.weight.T + self.bias


def test_hand_computation_with_svd() -> None:
    gen = torch.Generator().manual_seed(3)
    fmap = torch.rand(3, 4, 2, 3, generator=gen, dtype=torch.float64)  # C = 4, hw = 6
    weight = torch.randn(K, 4, generator=gen, dtype=torch.float64)
    bias = torch.randn(K, generator=gen, dtype=torch.float64)
    net = MapNet(fmap, weight, bias)
    expected_logits = []
    for sample in fmap:
        x = sample.reshape(4, 6)
        u, s, vh = torch.linalg.svd(x)
        edited = x - s[0] * torch.outer(u[:, 0], vh[0])
        # what is left has the remaining singular values of x
        torch.testing.assert_close(torch.linalg.svdvals(edited)[:3], s[1:4])
        expected_logits.append(weight @ edited.mean(dim=1) + bias)
    expected = torch.stack(expected_logits)
    logits = RankFeat().infer(net, torch.zeros(3, 1))
    torch.testing.assert_close(logits, expected)
    scores = RankFeat().score(Outputs(logits=logits.numpy()))
    np.testing.assert_allclose(scores, torch.logsumexp(expected, dim=1).numpy(), rtol=1e-12)
    # temperature: T * logsumexp(logits / T)
    hot = RankFeat(temperature=2.0).score(Outputs(logits=logits.numpy()))
    np.testing.assert_allclose(hot, 2.0 * torch.logsumexp(expected / 2.0, dim=1).numpy(), rtol=1e-12)


def test_a_rank1_map_leaves_only_the_bias() -> None:
    a = torch.rand(2, 4, 1, 1, dtype=torch.float64) + 0.5
    b = torch.rand(2, 1, 3, 3, dtype=torch.float64) + 0.5
    fmap = a * b  # each sample's (C, hw) matrix is a b^T
    torch.testing.assert_close(remove_rank1(fmap), torch.zeros_like(fmap), rtol=0, atol=1e-12)
    weight, bias = torch.randn(K, 4, dtype=torch.float64), torch.randn(K, dtype=torch.float64)
    logits = RankFeat().infer(MapNet(fmap, weight, bias), torch.zeros(2, 1))
    torch.testing.assert_close(logits, bias.expand(2, K), rtol=0, atol=1e-12)


def test_samples_are_independent_and_the_network_is_untouched() -> None:
    net = _random_net().train()
    x = _images(8)
    RankFeat().infer(net, x)
    assert net.training  # the mode is left as the caller set it
    net.eval()
    together = RankFeat().infer(net, x)
    apart = torch.cat([RankFeat().infer(net, x[:3]), RankFeat().infer(net, x[3:])])
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-5)
    assert not together.requires_grad and all(p.grad is None for p in net.parameters())
    with torch.inference_mode():  # evaluation loops may hold it
        torch.testing.assert_close(RankFeat().infer(net, x), together)


def test_bfloat16_maps_are_decomposed_in_float32() -> None:
    fmap = torch.rand(2, 8, 3, 3).to(torch.bfloat16)
    out = remove_rank1(fmap)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), remove_rank1(fmap.float()), rtol=0.02, atol=0.02)


def test_declarations_and_bad_arguments() -> None:
    detector = create("rankfeat")
    assert isinstance(detector, RankFeat) and detector.needs_network and detector.fusion_kind == "logit"
    assert detector.params() == {"temperature": 1.0}
    with pytest.raises(ValueError, match="temperature"):
        RankFeat(temperature=0.0)
    net = _random_net()
    with pytest.raises(ValueError, match="num_classes"):
        RankFeat().infer(net, _images(2), num_classes=K + 1)
    with pytest.raises(TypeError, match="forward_features"):
        RankFeat().infer(nn.Linear(3, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="feature maps"):
        remove_rank1(torch.zeros(2, 3))


# ------------------------------------------------------------------ (3) the DFB variants
class Spy(RankFeat):
    """RankFeat that records every Outputs it scores."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: list[Outputs] = []

    def _score(self, outputs: Outputs) -> np.ndarray:
        self._seen.append(outputs)
        return super()._score(outputs)


@pytest.mark.parametrize("name", ["rankfeat_dfb", "rankfeat_dfbz"])
def test_dfb_variants_build_and_the_base_never_sees_the_background(name: str) -> None:
    detector = create(name)
    assert isinstance(detector, DFBWrapper) and isinstance(detector.base, RankFeat)
    assert detector.needs_network and detector.fusion_kind == "logit"

    net = _random_net(background=True)
    val_logits = detector.infer(net, _images(10, seed=4), num_classes=K).double().numpy()
    test_logits = detector.infer(net, _images(6, seed=5), num_classes=K).double().numpy()
    assert val_logits.shape == (10, K + 1)
    # every column, the background one included, comes from the same rank-1-removed features
    with torch.no_grad():
        fmap = net.forward_features(_images(6, seed=5))
        np.testing.assert_allclose(
            test_logits, net.forward_head(remove_rank1(fmap)).double().numpy(), rtol=1e-6, atol=1e-6
        )

    spy = Spy()
    wrapper = DFBWrapper(spy, fusion=detector.fusion)
    val = Outputs(logits=val_logits, background=True)
    test = Outputs(logits=test_logits, background=True)
    wrapper.fit(val, val)
    scores = wrapper.score(test)
    assert spy._seen and all(o.logits.shape[1] == K and not o.background for o in spy._seen)
    np.testing.assert_array_equal(spy._seen[-1].logits, test_logits[:, :K])
    np.testing.assert_allclose(scores, detector.fit(val, val).score(test), rtol=1e-12)
    if detector.fusion == "paper":  # Eq. 7 for a logit-type base: S_f + S_b / T
        expected = logsumexp(test_logits[:, :K]) + test_logits[:, K] / detector.fusion_temperature
        np.testing.assert_allclose(scores, expected, rtol=1e-12)


# ------------------------------------------------------------------ (4) end to end
@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "tiny.yaml").write_text(TINY_BENCHMARK)
    (tmp_path / "recipe.yaml").write_text(TINY_RECIPE)
    return {"benchmark": tmp_path / "tiny.yaml", "recipe": tmp_path / "recipe.yaml", "root": tmp_path}


def test_pipeline_runs_rankfeat_and_caches_its_pass(tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "run"
    args = ["bench", "--benchmark", str(tiny["benchmark"]), "--recipe", str(tiny["recipe"])]
    args += ["--out", str(out), "--post", "rankfeat,rankfeat_dfbz", "--device", "cpu", "--no-report"]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # per detector: 3 OOD sets + near_mean + far_mean + all_mean
    assert [r["detector"] for r in rows] == ["rankfeat"] * 6 + ["rankfeat_dfbz"] * 6
    assert {r["detector_network"] for r in rows if r["detector"] == "rankfeat"} == {"classifier"}
    assert {r["detector_network"] for r in rows if r["detector"] == "rankfeat_dfbz"} == {"dfb"}
    for row in rows:
        assert 0.0 <= float(row["auroc"]) <= 1.0 and 0.0 <= float(row["fpr95"]) <= 1.0

    # Each network's pass is cached under outputs/<kind>/perturbed-<tag>/, one folder per set it read.
    for kind in ("classifier", "dfb"):
        (folder,) = (out / "outputs" / kind).glob("perturbed-*")
        names = {p.parent.name for p in folder.glob("*/logits.npy")}
        assert {"test", "unseen", "textures", "noise"} <= names
    assert (next((out / "outputs" / "dfb").glob("perturbed-*")) / "val" / "logits.npy").is_file()

    # The cached pass is RankFeat's logits of those images, background column included.
    reopened = Pipeline.from_run_dir(out)
    nets, _ = reopened.artifacts()
    images, _ = reopened.arrays("textures")
    fresh = perturbed_logits(
        RankFeat(), nets["dfb"], images, mean=(0.5,) * 3, std=(0.5,) * 3, size=16, device=torch.device("cpu")
    )
    cached = np.load(next((out / "outputs" / "dfb").glob("perturbed-*")) / "textures" / "logits.npy")
    assert cached.shape == (40, 7)
    np.testing.assert_allclose(cached, fresh, rtol=1e-5, atol=1e-5)

    # Running again reuses the cached passes: same rows.
    again = CliRunner().invoke(app, [*args, "--quiet"])
    assert again.exit_code == 0, again.output
    with open(out / "results.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == rows
