"""Cheap recipes: features cached once, only the head (or the tail) trained on them.

Numbers are checked against hand computations with plain torch ops: the frozen part's output of
normalised images, full-batch SGD written out by hand, CAMs by hand (``reference_cams``). Float32
tolerances use the unit roundoff ``U32`` and ``gamma(n)`` (bound on an n-term sum's relative
error); float16 ones the half-spacing 2**-11 of that format.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from dfb_ood.harness.augment import IGNORE_INDEX
from dfb_ood.harness.cached import (
    FeatureCache,
    cached_cams,
    cached_predictions,
    extract_features,
    train_on_features,
)
from dfb_ood.harness.config import configs_root
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.recipes import Recipe, load_recipe
from dfb_ood.harness.run import BenchSettings, Pipeline
from dfb_ood.harness.train import InjectedFailure
from dfb_ood.networks import OODNet, create_network, from_classifier, load_checkpoint, split_network
from tests.networks.test_split import U32, cam_tolerance, gamma, reference_cams

from .test_pipeline import TINY_BENCHMARK

CPU = torch.device("cpu")
F16_HALF_SPACING = 2.0**-11  # round-to-nearest float16: relative error <= 2**-11 (normal numbers)
F16_TINY = 2.0**-25  # half the spacing of float16 subnormals: absolute error near zero


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    """Seeded, on one CPU thread (tiny ops; a shared 2-core machine), restored afterwards."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------- helpers
class ToyBackbone(nn.Module):
    """A small backbone with parameters and BatchNorm buffers, so "frozen" can be checked."""

    reduction = 1

    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        self.num_features = channels
        self.conv = nn.Conv2d(3, channels, kernel_size=1)
        self.norm = nn.BatchNorm2d(channels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


def toy_net(num_classes: int = 3, channels: int = 6, background: bool = False) -> OODNet:
    torch.manual_seed(1)
    net = OODNet("toy", ToyBackbone(channels), num_classes, background=background)
    with torch.no_grad():
        net.head.weight.normal_(0, 0.3)
        net.head.bias.normal_(0, 0.1)
    return net


def recipe(**changes: object) -> Recipe:
    base = {
        "name": "test",
        "lr": 0.5,
        "momentum": 0.9,
        "weight_decay": 1e-3,
        "nesterov": True,
        "batch_size": 8,
        "steps": 6,
        "warmup_steps": 0,
        "lr_drops": (0.5,),
        "lr_drop_factor": 0.1,
        "dense_scale": (1.0, 1.0),
        "trainable": "head",
        "checkpoint_every_s": 3600.0,
    }
    base.update(changes)
    return Recipe(**base)  # type: ignore[arg-type]


def random_features(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Non-negative float16 maps (what a ReLU backbone caches)."""
    generator = np.random.default_rng(seed)
    return (generator.random(shape) * 2).astype(np.float16)


def as_float(array: np.ndarray) -> torch.Tensor:
    """float16 -> float32 is exact."""
    return torch.from_numpy(np.array(array, dtype=np.float32))


def sgd_by_hand(
    logits_of: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    features: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    rec: Recipe,
    terms: int,
) -> tuple[torch.Tensor, torch.Tensor, list[float], float, float]:
    """Full-batch SGD (Nesterov momentum, weight decay) on mean cross-entropy, written out by hand.

    ``logits_of(W, b, features)`` is linear in (W, b) and in the features. Returns the final W, b,
    the losses, and bounds on how far a float32 implementation may be from these weights and losses.

    The bound: an implementation that sums in another order (another batch order, a pooled cache,
    a conv instead of einsum) gets each gradient entry within gamma(terms) times its absolute
    terms, |J|^T |g| (the gradient of <|g|, logits_of(W, b, |features|)>, since the map is linear);
    a gradient error e moves the final weights by at most lr * e * (1 + m + m^2 + ...) * (1 + m)
    (Nesterov, momentum m), summed over the steps. Twice that covers the propagation of earlier
    differences through later gradients (steps * lr * curvature stays below one here), plus a few
    roundings of each update.
    """
    weight, bias = weight.clone(), bias.clone()
    buffers: list[torch.Tensor | None] = [None, None]
    losses = []
    amplification = (1 + rec.momentum) / (1 - rec.momentum)
    bound = 0.0
    for step in range(rec.steps):
        lr = rec.lr if step < round(rec.lr_drops[0] * rec.steps) else rec.lr * rec.lr_drop_factor
        w = weight.clone().requires_grad_(True)
        b = bias.clone().requires_grad_(True)
        logits = logits_of(w, b, features)
        loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
        g_logits, g_w, g_b = torch.autograd.grad(loss, (logits, w, b))
        losses.append(float(loss.detach()))
        probe_w = torch.zeros_like(w, requires_grad=True)
        probe_b = torch.zeros_like(b, requires_grad=True)
        absolute = (g_logits.abs() * logits_of(probe_w, probe_b, features.abs())).sum()
        abs_w, abs_b = torch.autograd.grad(absolute, (probe_w, probe_b))
        largest = max(float(abs_w.max()), float(abs_b.max()))
        bound += lr * amplification * gamma(terms) * largest
        for i, (p, g) in enumerate(((weight, g_w), (bias, g_b))):
            d = g + rec.weight_decay * p
            buffers[i] = d.clone() if buffers[i] is None else rec.momentum * buffers[i] + d
            p -= lr * (d + rec.momentum * buffers[i])
    scale = max(float(weight.abs().max()), float(bias.abs().max()))
    bound = 2 * bound + 4 * rec.steps * U32 * scale
    # The bound holds at every step (it only grows). A logit moves by <= (C * max|f| + 1) * bound,
    # cross-entropy is 2-Lipschitz in the largest logit change (its gradient's l1 norm is <= 2),
    # and each loss is itself a float32 sum over `terms` at most.
    channels = features.shape[1]
    loss_bound = 2 * (channels * float(features.abs().max()) + 1) * bound + gamma(terms) * max(losses)
    return weight, bias, losses, bound, loss_bound


def pooled_logits(w: torch.Tensor, b: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    return maps.mean(dim=(2, 3)) @ w.T + b


def dense_logits(size: tuple[int, int]) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def logits(w: torch.Tensor, b: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        low = torch.einsum("nchw,oc->nohw", maps, w) + b[None, :, None, None]
        return F.interpolate(low, size=size, mode="bilinear", align_corners=False)

    return logits


# ---------------------------------------------------------------------------------- FeatureCache
def test_feature_cache_rows_mirrors_and_pooling():
    plain = random_features(0, (10, 5, 3, 4))
    flipped = random_features(1, (10, 5, 3, 4))
    cache = FeatureCache(plain, flipped)
    assert len(cache) == 10
    index = torch.tensor([3, 0, 7, 3, 9])
    mirrored = torch.tensor([False, True, False, True, True])
    batch = cache.batch(index, mirrored, CPU)
    assert batch.dtype == torch.float32 and batch.shape == (5, 5, 3, 4)
    for row, (i, m) in enumerate(zip(index.tolist(), mirrored.tolist())):
        assert torch.equal(batch[row], as_float(flipped[i] if m else plain[i])), row
    assert torch.equal(cache.batch(index, None, CPU), as_float(plain[index.numpy()]))
    assert torch.equal(
        cache.batch(index, torch.zeros(5, dtype=torch.bool), CPU), as_float(plain[index.numpy()])
    )

    pooled = cache.pooled(index, mirrored, CPU)
    assert pooled.dtype == torch.float32 and pooled.shape == (5, 5)
    # Both are float32 means of the same 12 exact values, maybe summed in another order.
    hw = 3 * 4
    bound = 2 * gamma(hw) * batch.abs().mean(dim=(2, 3)) + U32 * pooled.abs()
    assert bool(((pooled - batch.mean(dim=(2, 3))).abs() <= bound).all())
    exact = np.where(mirrored.numpy()[:, None, None, None], flipped[index.numpy()], plain[index.numpy()])
    exact = torch.from_numpy(exact.astype(np.float64).mean(axis=(2, 3)))
    assert bool(((pooled.double() - exact).abs() <= gamma(hw) * exact.abs() + U32 * exact.abs()).all())

    # No mirror cache: mirrored rows fall back to the plain maps (a recipe without flip).
    alone = FeatureCache(plain)
    assert torch.equal(alone.batch(index, mirrored, CPU), as_float(plain[index.numpy()]))
    assert torch.equal(alone.pooled(index, mirrored, CPU), alone.pooled(index, None, CPU))


def test_feature_cache_reads_memory_mapped_arrays(tmp_path: Path):
    plain = random_features(2, (7, 4, 2, 2))
    flipped = random_features(3, (7, 4, 2, 2))
    np.save(tmp_path / "train.npy", plain)
    np.save(tmp_path / "train_flipped.npy", flipped)
    mapped = FeatureCache(
        np.load(tmp_path / "train.npy", mmap_mode="r"), np.load(tmp_path / "train_flipped.npy", mmap_mode="r")
    )
    in_memory = FeatureCache(plain, flipped)
    index = torch.tensor([6, 1, 2])
    mirrored = torch.tensor([True, False, True])
    assert len(mapped) == 7
    assert torch.equal(mapped.batch(index, mirrored, CPU), in_memory.batch(index, mirrored, CPU))
    assert torch.equal(mapped.pooled(index, mirrored, CPU), in_memory.pooled(index, mirrored, CPU))


# ---------------------------------------------------------------------------------- extract_features
def test_extract_features_equal_the_frozen_part_of_normalised_images():
    net = create_network("rv2_tiny", 3).eval()
    generator = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=generator)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    split = split_network(net, "head")

    def by_hand(pixels: torch.Tensor, size: int) -> torch.Tensor:
        x = (pixels.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        if size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        with torch.no_grad():
            return net.forward_features(x)

    for size, mirrored in ((16, False), (16, True), (12, False)):
        out = extract_features(
            split, net, images, mean=mean, std=std, size=size, device=CPU, mirrored=mirrored, batch_size=5
        )
        reference = by_hand(images.flip(-1) if mirrored else images, size)
        assert out.dtype == np.float16 and out.shape == tuple(reference.shape)
        # One batch of the same shape on both sides: float32 agrees to a few roundings (16 of the
        # largest value: the normalisation may be written another way); then one float16 rounding.
        ref = reference.numpy().astype(np.float64)
        bound = F16_HALF_SPACING * np.abs(ref) + F16_TINY + 16 * U32 * np.abs(ref).max()
        assert np.all(np.abs(out.astype(np.float64) - ref) <= bound), (size, mirrored)
    # Batches of 2 give the same rows as one batch of 5 (up to the same float16 rounding).
    small = extract_features(split, net, images, mean=mean, std=std, size=16, device=CPU, batch_size=2)
    whole = by_hand(images, 16).numpy().astype(np.float64)
    bound = F16_HALF_SPACING * np.abs(whole) + F16_TINY + 16 * U32 * np.abs(whole).max()
    assert np.all(np.abs(small.astype(np.float64) - whole) <= bound)


# ---------------------------------------------------------------------------------- train_on_features
@pytest.mark.parametrize("flip", [False, True])
def test_classifier_on_cached_features_is_full_batch_sgd_by_hand(tmp_path: Path, flip: bool):
    n, k = 16, 3
    plain = random_features(5, (n, 6, 2, 3))
    # The mirror cache holds each map mirrored: GAP is the same, so the hand SGD ignores flips.
    cache = FeatureCache(plain, plain[..., ::-1].copy() if flip else None)
    labels = torch.arange(n) % k
    net = toy_net(k)
    rec = recipe(batch_size=n)  # one batch of all rows per step: the batch order cannot matter
    weight, bias, losses, bound, loss_bound = sgd_by_hand(
        pooled_logits, as_float(plain), labels, net.head_weight.detach(), net.head_bias.detach(), rec, n * 6
    )
    result = train_on_features(
        net, split_network(net, "head"), cache, labels, rec, mode="classifier", device=CPU, seed=0,
        checkpoint=tmp_path / "c.pt",
    )  # fmt: skip
    assert result.steps == 6 and result.resumed_from == 0 and len(result.losses) == 6
    assert losses[-1] < losses[0]  # the reference itself learns: the comparison is not of constants
    assert float((net.head_weight.detach() - weight).abs().max()) <= bound
    assert float((net.head_bias.detach() - bias).abs().max()) <= bound
    assert np.allclose(result.losses, losses, rtol=0, atol=loss_bound)
    assert not net.training  # left in eval mode


def test_dense_on_cached_features_is_full_batch_sgd_by_hand_and_flips_masks(tmp_path: Path):
    n, k, size = 8, 3, (8, 12)
    plain = random_features(6, (n, 5, 2, 3))
    generator = torch.Generator().manual_seed(7)
    masks = torch.randint(0, k + 1, (n, *size), generator=generator, dtype=torch.uint8)
    masks[:, :, :3] = IGNORE_INDEX  # an ignored band on one side: a mask that was not flipped would show
    net = toy_net(k, channels=5, background=True)
    rec = recipe(batch_size=n, dense_flip=True, lr=1.0)
    weight, bias, losses, bound, loss_bound = sgd_by_hand(
        dense_logits(size), as_float(plain), masks.long(), net.head_weight.detach(), net.head_bias.detach(),
        rec, n * size[0] * size[1] * 4 + 5,
    )  # fmt: skip
    # Mirrored features are the mirror image of the plain ones: with the mask mirrored too (what
    # training must do), a mirrored row's loss equals the plain row's, up to rounding.
    cache = FeatureCache(plain, plain[..., ::-1].copy())
    result = train_on_features(
        net, split_network(net, "head"), cache, masks, rec, mode="dense", device=CPU, seed=3,
        checkpoint=tmp_path / "d.pt",
    )  # fmt: skip
    assert losses[-1] < losses[0]
    assert float((net.head_weight.detach() - weight).abs().max()) <= bound
    assert float((net.head_bias.detach() - bias).abs().max()) <= bound
    assert np.allclose(result.losses, losses, rtol=0, atol=loss_bound)


def test_only_the_trainable_part_changes_and_flags_are_restored(tmp_path: Path):
    torch.manual_seed(0)
    net = create_network("effnet_lite0", 3, pretrained=False, output_stride=16, freeze_bn=True)
    net.backbone.conv_stem.weight.requires_grad_(False)  # a flag the caller set: must come back as is
    split = split_network(net, "tail")
    generator = torch.Generator().manual_seed(8)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=generator)
    plain = extract_features(split, net, images, mean=(0.5,) * 3, std=(0.5,) * 3, size=32, device=CPU)
    assert plain.shape == (8, 192, 2, 2)
    state = {name: value.clone() for name, value in net.state_dict().items()}
    flags = {name: p.requires_grad for name, p in net.named_parameters()}
    train_on_features(
        net, split, FeatureCache(plain), torch.arange(8) % 3, recipe(batch_size=4, steps=3, lr=0.1),
        mode="classifier", device=CPU, seed=0, checkpoint=tmp_path / "c.pt",
    )  # fmt: skip
    trainable = ("backbone.blocks.6.", "backbone.conv_head.", "backbone.bn2.", "head.")
    parameters = dict(net.named_parameters())
    for name, value in net.state_dict().items():
        if name.startswith(trainable) and name in parameters:
            assert not torch.equal(value, state[name]), f"{name} should have trained"
        else:  # frozen weights, and every BatchNorm statistic (freeze_bn), unchanged
            assert torch.equal(value, state[name]), f"{name} should be frozen"
    assert {name: p.requires_grad for name, p in net.named_parameters()} == flags
    assert not flags["backbone.conv_stem.weight"] and flags["backbone.blocks.0.0.conv_dw.weight"]

    # The head split on a toy net: the backbone (weights and BN statistics) untouched.
    toy = toy_net(3)
    before = {name: value.clone() for name, value in toy.state_dict().items()}
    train_on_features(
        toy, split_network(toy, "head"), FeatureCache(random_features(9, (8, 6, 2, 2))), torch.arange(8) % 3,
        recipe(batch_size=4, steps=3), mode="classifier", device=CPU, seed=0, checkpoint=tmp_path / "t.pt",
    )  # fmt: skip
    for name, value in toy.state_dict().items():
        assert torch.equal(value, before[name]) != name.startswith("head."), name
    assert all(p.requires_grad for p in toy.parameters())


def separable(n: int, k: int, channels: int, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """Maps where class c lights up channel c (plus noise): linearly separable after pooling."""
    generator = np.random.default_rng(seed)
    labels = np.arange(n) % k
    maps = generator.random((n, channels, 2, 2)) * 0.5
    maps[np.arange(n), labels] += 1.5
    return maps.astype(np.float16), torch.from_numpy(labels)


def test_classifier_loss_decreases_and_predictions_are_right_on_separable_features(tmp_path: Path):
    plain, labels = separable(48, 3, 6, seed=10)
    cache = FeatureCache(plain, plain[..., ::-1].copy())
    net = toy_net(3)
    with torch.no_grad():
        net.head.weight.zero_()  # start at chance: loss log(3)
        net.head.bias.zero_()
    result = train_on_features(
        net, split_network(net, "head"), cache, labels, recipe(batch_size=16, steps=30, lr_drops=(0.9,)),
        mode="classifier", device=CPU, seed=0, checkpoint=tmp_path / "c.pt",
    )  # fmt: skip
    assert len(result.losses) == 30
    assert result.losses[0] == pytest.approx(np.log(3), abs=1e-5)
    assert np.mean(result.losses[-5:]) < 0.25 * result.losses[0]
    predictions = cached_predictions(net, split_network(net, "head"), cache, CPU)
    assert torch.equal(predictions, labels)
    with torch.no_grad():
        by_hand = (as_float(plain).mean(dim=(2, 3)) @ net.head_weight.T + net.head_bias).argmax(dim=1)
    assert torch.equal(predictions, by_hand)


def test_cached_predictions_ignore_the_background_logit():
    plain, labels = separable(12, 3, 6, seed=11)
    net = toy_net(3, background=True)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.weight[:3, :3, 0, 0] = torch.eye(3)
        net.head.bias.zero_()
        net.head.bias[3] = 100.0  # the background would win every argmax over K + 1
    predictions = cached_predictions(net, split_network(net, "head"), FeatureCache(plain), CPU)
    assert torch.equal(predictions, labels)


@pytest.mark.parametrize("trainable", ["head", "tail"])
def test_interrupted_dense_training_resumes_to_identical_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trainable: str
):
    if trainable == "head":
        initial = toy_net(3, background=True)
        plain = random_features(12, (20, 6, 2, 2))
    else:
        torch.manual_seed(0)
        classifier = create_network("effnet_lite0", 3, pretrained=False, output_stride=16, freeze_bn=True)
        initial = from_classifier(classifier)
        plain = random_features(12, (20, 192, 2, 2))
    cache = FeatureCache(plain, random_features(13, plain.shape))  # any mirror cache: the draws matter
    generator = torch.Generator().manual_seed(14)
    masks = torch.randint(0, 4, (20, 8, 8), generator=generator, dtype=torch.uint8)
    rec = recipe(batch_size=6, steps=12, lr=0.05, lr_drops=(0.5,), warmup_steps=2)

    def train(net: OODNet, checkpoint: Path):
        return train_on_features(
            net, split_network(net, trainable), cache, masks, rec, mode="dense", device=CPU, seed=5,
            checkpoint=checkpoint,
        )  # fmt: skip

    reference = copy.deepcopy(initial)
    monkeypatch.setenv("HARNESS_FAIL_AT_STEP", "classifier:3")  # another stage's failure: ignored here
    full = train(reference, tmp_path / "reference.pt")
    assert full.resumed_from == 0 and len(full.losses) == 12

    monkeypatch.setenv("HARNESS_FAIL_AT_STEP", "dense:7")
    interrupted = copy.deepcopy(initial)
    flags = {name: p.requires_grad for name, p in interrupted.named_parameters()}
    with pytest.raises(InjectedFailure):
        train(interrupted, tmp_path / "resume.pt")
    assert {name: p.requires_grad for name, p in interrupted.named_parameters()} == flags
    saved = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert saved["step"] == 7 and saved["mode"] == "dense"

    monkeypatch.delenv("HARNESS_FAIL_AT_STEP")
    restarted = copy.deepcopy(initial)  # a new process: the weights it starts from are the initial ones
    resumed = train(restarted, tmp_path / "resume.pt")
    assert resumed.resumed_from == 7 and len(resumed.losses) == 5
    assert resumed.losses == full.losses[7:]
    expected = reference.state_dict()
    for name, value in restarted.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert not torch.equal(restarted.head.weight, initial.head.weight)  # it did train


def test_train_on_features_refuses_too_few_rows_or_mismatched_targets(tmp_path: Path):
    net = toy_net(3)
    cache = FeatureCache(random_features(15, (6, 6, 2, 2)))
    split = split_network(net, "head")
    with pytest.raises(ValueError, match="batch_size"):
        train_on_features(
            net, split, cache, torch.zeros(6), recipe(batch_size=8), mode="classifier", device=CPU, seed=0,
            checkpoint=tmp_path / "c.pt",
        )  # fmt: skip
    with pytest.raises(ValueError, match="5 targets for 6"):
        train_on_features(
            net, split, cache, torch.zeros(5), recipe(batch_size=2), mode="classifier", device=CPU, seed=0,
            checkpoint=tmp_path / "c.pt",
        )  # fmt: skip


# ---------------------------------------------------------------------------------- cached_cams
def test_cached_cams_equal_hand_cams_of_the_cache_and_its_mirror():
    n, k, size = 7, 3, (8, 12)
    plain = random_features(16, (n, 5, 2, 3))
    flipped = random_features(17, (n, 5, 2, 3))
    net = toy_net(k, channels=5)
    with torch.no_grad():
        net.head.weight.add_(0.3)  # class maps positive somewhere: CAMs with contrast
    targets = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    weight, bias = net.head_weight.detach(), net.head_bias.detach()
    for cache, mirror in ((FeatureCache(plain, flipped), as_float(flipped)), (FeatureCache(plain), None)):
        for normalise in ("minmax", "max"):
            cams = cached_cams(
                net, split_network(net, "head"), cache, targets, size=size, normalise=normalise, device=CPU,
                batch_size=3,
            )  # fmt: skip
            assert cams.shape == (n, *size)
            reference = reference_cams(weight, bias, as_float(plain), targets, size, mirror, normalise)
            assert bool((reference.amax(dim=(1, 2)) > 0.5).all())
            bound = cam_tolerance(weight, bias, as_float(plain), targets, mirror, normalise)
            assert bool(((cams.double() - reference).abs() <= bound).all()), (mirror is None, normalise)


# ---------------------------------------------------------------------------------- recipes
def frozen_yaml(name: str = "frozen-4x4") -> dict:
    """A shipped cached recipe's YAML: by default frozen-4x4, whose CAMs come from the cached maps
    (so every rule of caching applies to it, the mirror of the CAMs included)."""
    return yaml.safe_load((configs_root() / "recipes" / f"{name}.yaml").read_text())


def write_recipe(tmp_path: Path, data: dict, name: str = "variant") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["frozen", "frozen-4x4"])
def test_shipped_frozen_recipe_is_a_cached_recipe(tmp_path: Path, name: str):
    shipped = load_recipe(name)
    assert shipped.trainable == "head" and shipped.cam.normalise == "minmax"
    # frozen: CAMs from one 128 px pass (2x eval_size); frozen-4x4: from the cached 4x4 maps
    assert shipped.cam.scales == ((2.0,) if name == "frozen" else (1.0,))
    assert shipped.dense_scale == (1.0, 1.0)
    assert shipped.crop is None and shipped.resize is None and shipped.pad == 0 and shipped.mixup_alpha == 0
    copied = load_recipe(write_recipe(tmp_path, frozen_yaml(name)))
    assert copied.as_dict() == {**shipped.as_dict(), "name": name}
    # the two differ in their CAMs only
    other = load_recipe("frozen-4x4" if name == "frozen" else "frozen").as_dict()
    differing = {key for key in shipped.as_dict() if shipped.as_dict()[key] != other[key]}
    assert differing == {"name", "description", "cam"}
    # The same augmentations are fine when everything trains on images.
    data = frozen_yaml()
    data.update(trainable="all", train_transform={"crop": 64, "pad": 4, "flip": True}, mixup_alpha=0.2)
    data["cam"]["scales"] = [1.0, 2.0]
    assert load_recipe(write_recipe(tmp_path, data)).trainable == "all"


def _set(data: dict, dotted: str, value: object) -> dict:
    *sections, key = dotted.split(".")
    target = data
    for section in sections:
        target = target.setdefault(section, {})
    target[key] = value
    return data


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("train_transform.crop", 32, "train_transform.crop"),
        ("train_transform.resize", 72, "train_transform.resize"),
        ("train_transform.pad", 4, "train_transform.pad"),
        ("mixup_alpha", 0.1, "mixup_alpha"),
        ("dense.scale", [0.5, 2.0], "dense.scale"),
        ("cam.flip", False, "cam.flip"),
        ("dense.flip", False, "dense.flip"),
        ("train_transform.flip", False, "train_transform.flip"),
        ("trainable", "bogus", "trainable"),
        ("trainable", 3, "trainable"),
        ("cam.normalise", "bogus", "cam.normalise"),
    ],
)
@pytest.mark.parametrize("trainable", ["head", "tail"])
def test_cached_recipe_refuses_what_caching_cannot_honour(
    tmp_path: Path, key: str, value: object, named: str, trainable: str
):
    data = _set(frozen_yaml(), "trainable", trainable)
    path = write_recipe(tmp_path, _set(data, key, value))
    with pytest.raises(ValueError, match=named.replace(".", r"\.")) as error:
        load_recipe(path)
    assert str(path) in str(error.value)


def test_cam_section_given_alone_is_checked_too(tmp_path: Path):
    data = frozen_yaml()
    data["cam"] = {"scales": [1.0], "flip": False}  # the rest of the cam section at its defaults
    with pytest.raises(ValueError, match=r"cam\.flip"):
        load_recipe(write_recipe(tmp_path, data))


def test_cached_recipe_may_take_cams_from_image_passes_at_other_scales(tmp_path: Path):
    """CAMs are not training: other scales are allowed, and then the flip need not match."""
    data = frozen_yaml()
    data["cam"].update(scales=[2.0], flip=False)
    recipe = load_recipe(write_recipe(tmp_path, data))
    assert recipe.cam.scales == (2.0,) and not recipe.cam.flip and recipe.trainable == "head"


# ---------------------------------------------------------------------------------- pipeline, end to end
TINY_CACHED_RECIPE = """
name: tiny-cached
description: the tiny random network, frozen, heads trained on cached features
network: rv2_tiny
pretrained: false
trainable: head
optimizer: {lr: 0.05, momentum: 0.9, weight_decay: 0.0005}
batch_size: 32
steps: 24
warmup_steps: 2
lr_drops: [0.7]
train_transform: {flip: true}
eval_size: 16
dense: {scale: [1.0, 1.0], flip: true}
cam: {scales: [1.0], flip: true, sigma: 0.0, theta: 0.5, target: label, normalise: minmax}
checkpoint_every_s: 600
"""


class Recorder(Reporter):
    """Quiet progress, but every message kept."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.messages: list[str] = []

    def message(self, text: str, label: str | None = None) -> None:
        self.messages.append(f"{label or ''} {text}")


def normalised(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - 0.5) / 0.5


def test_cached_pipeline_end_to_end(tmp_path: Path):
    (tmp_path / "tiny.yaml").write_text(TINY_BENCHMARK)
    (tmp_path / "recipe.yaml").write_text(TINY_CACHED_RECIPE)
    out = tmp_path / "run"
    settings = BenchSettings(
        benchmark=str(tmp_path / "tiny.yaml"), recipe=str(tmp_path / "recipe.yaml"), out=out, device="cpu",
        quiet=True, detectors=["msp", "bg"],
    )  # fmt: skip

    def run(until: str = "evaluate") -> tuple[Pipeline, Recorder]:
        recorder = Recorder()
        pipeline = Pipeline(settings, reporter=recorder)
        pipeline.run(until=until)
        return pipeline, recorder

    # 1. Up to the classifier: the features stage is computed and recorded with checksums.
    first, _ = run("classifier")
    assert set(first.timings) >= {"features", "classifier"}
    stages = json.loads((out / "stages.json").read_text())
    features = stages["features"]
    assert set(features["files"]) == {"features/train.npy", "features/train_flipped.npy"}
    assert features["key"] == first.features_key() and features["shape"] == [192, 128, 4, 4]
    for name, digest in features["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name

    # The cache holds the classifier's frozen backbone output of the ID training images (and mirrors).
    classifier = load_checkpoint(out / "classifier.safetensors", num_classes=6, background=False).eval()
    images, labels = first.arrays("train")
    with torch.no_grad():
        plain_ref = classifier.forward_features(normalised(images)).double().numpy()
        mirror_ref = classifier.forward_features(normalised(images.flip(-1))).double().numpy()
    plain = np.load(out / "features" / "train.npy")
    mirror = np.load(out / "features" / "train_flipped.npy")
    assert plain.dtype == np.float16
    for cached, ref in ((plain, plain_ref), (mirror, mirror_ref)):
        bound = F16_HALF_SPACING * np.abs(ref) + F16_TINY + 16 * U32 * np.abs(ref).max()
        assert np.all(np.abs(cached.astype(np.float64) - ref) <= bound)
    # The backbone is frozen: exactly the random backbone drawn from the seed.
    torch.manual_seed(0)
    fresh = create_network("rv2_tiny", 6)
    for name, value in fresh.backbone.state_dict().items():
        assert torch.equal(classifier.backbone.state_dict()[name], value), name
    original_bytes = (out / "features" / "train.npy").read_bytes()

    # 2. A damaged cache is recomputed with a warning (never used), when the masks stage needs it.
    data = bytearray(original_bytes)
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
    (out / "features" / "train.npy").write_bytes(bytes(data))
    second, recorder = run()
    warned = [m for m in recorder.messages if "features/train.npy" in m and "recomputing" in m]
    assert len(warned) == 1 and "warning" in warned[0]
    assert "classifier" not in second.timings  # the classifier was loaded, not retrained
    assert "features" in second.timings
    assert (out / "features" / "train.npy").read_bytes() == original_bytes  # deterministic recompute
    stages = json.loads((out / "stages.json").read_text())
    assert stages["features"]["files"] == features["files"]

    # masks.json: the new fields, and masks equal to thresholded hand CAMs of the cache.
    info = json.loads((out / "masks.json").read_text())
    assert info["normalise"] == "minmax" and info["theta"] == 0.5
    assert info["mean_background"] == pytest.approx(1 - info["mean_foreground"], abs=1e-12)
    masks = np.load(out / "masks.npy")
    targets = torch.from_numpy(labels)
    weight, bias = classifier.head_weight.detach(), classifier.head_bias.detach()
    cams = reference_cams(weight, bias, as_float(plain), targets, (16, 16), as_float(mirror), "minmax")
    bound = cam_tolerance(weight, bias, as_float(plain), targets, as_float(mirror), "minmax")
    expected = np.where(cams.numpy() > 0.5, labels[:, None, None], 6)
    clear = (cams - 0.5).abs().numpy() > bound.numpy()  # pixels whose side of theta is certain
    assert clear.mean() > 0.8  # the float32 bound leaves most pixels decided (low-contrast maps aside)
    assert np.array_equal(masks[clear], expected[clear])
    assert info["mean_foreground"] == pytest.approx(float((masks != 6).mean()), abs=1e-12)

    # 3. The same settings again: nothing is recomputed, no stage record changes.
    stages = (out / "stages.json").read_text()
    third, recorder = run()
    assert not {"features", "classifier", "masks", "dense"} & set(third.timings)
    assert (out / "stages.json").read_text() == stages
    assert not [m for m in recorder.messages if "recomputing" in m]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete"

    # The DFB net: the same frozen backbone; GAP logits = spatial mean of its low-res dense logits.
    dfb = load_checkpoint(out / "dfb.safetensors", num_classes=6, background=True).eval()
    for name, value in classifier.backbone.state_dict().items():
        assert torch.equal(dfb.backbone.state_dict()[name], value), name
    test_images, _ = third.arrays("test")
    x = normalised(test_images)
    with torch.no_grad():
        gap = dfb(x).double()
        dense = dfb.dense(x, low_res=True).double()
        fmap = dfb.forward_features(x).double()
    assert dense.shape[-2:] == (4, 4)
    # Both are (C * hw)-term sums of W . f plus b, in two orders: each within gamma(C + hw + 1) of
    # the exact value, relative to |W| . mean|f| + |b|.
    channels, hw = fmap.shape[1], 16
    magnitude = fmap.abs().mean(dim=(2, 3)) @ dfb.head_weight.detach().double().abs().T
    magnitude = magnitude + dfb.head_bias.detach().double().abs()
    bound = 2 * gamma(channels + hw + 1) * magnitude
    assert bool(((gap - dense.mean(dim=(2, 3))).abs() <= bound).all())
