"""Training on cached features: the cheap recipes (``trainable: head`` or ``tail``).

Why: a pretrained backbone is the expensive part of every step on a CPU, and when it is frozen
its output for an image never changes. So each training image goes through the frozen part once
(plus once mirrored, when the recipe flips), the results are stored as a stage artifact of the
run, and both trainings then run only the trainable part (:mod:`networks.split`):

- the K-class classifier: the head (and the tail) on global-average-pooled feature maps;
- the (K+1)-class DFB network: the same backbone, its head applied per pixel to the feature map,
  the logit maps upsampled (bilinear) to the mask grid, cross-entropy against the pseudo masks
  (on a grid of at most 4 x 4 samples per feature cell, masks resampled by nearest neighbour:
  see ``loss_grid``).

What caching changes, compared with ``trainable: all``: the only augmentation is the horizontal
flip (a step takes each image's plain or mirrored features at random); the CAMs come from the
cached maps at one scale (plus the mirror) instead of four scales and their mirrors; the cache
holds float16 values (a relative rounding of 2^-11), while the saved networks are evaluated
whole, in float32, by the outputs stage. Steps, resume checkpoints and random draws follow
:mod:`harness.train`: step ``s`` draws from generators seeded by ``(seed, s)``, so a resumed run
computes what the uninterrupted one would have.

Under torchrun the feature extraction is sharded and gathered; training is cheap, so every rank
trains the same model on all the features and rank 0's weights are then given to every rank.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dfb_ood.errors import InputError, StateError
from dfb_ood.harness import distributed
from dfb_ood.harness.augment import IGNORE_INDEX, evaluation_batches
from dfb_ood.harness.partial_pass import PartialPass, progress_label
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.recipes import Recipe
from dfb_ood.harness.train import (
    InjectedFailure,
    Mode,
    TrainResult,
    batch_indices,
    injected_failure,
    resume_state,
    save_state,
    step_generator,
)
from dfb_ood.networks import OODNet, Split, cams_from_feature_maps

FAIL_ENV_HINT = "HARNESS_FAIL_AT_STEP"
FLOAT16_MAX = float(np.finfo(np.float16).max)
LOSS_SAMPLES = 4  # dense-loss pixels per feature cell and axis (see loss_grid)


@dataclass
class FeatureCache:
    """The frozen part's output for every training image: ``plain`` (N, C, h, w), ``flipped`` or None.

    Arrays may arrive memory-mapped from the run folder; they are read into memory once (as
    float16 tensors), since every training step gathers a random batch of rows.
    """

    plain: np.ndarray
    flipped: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._plain = _in_memory(self.plain)
        self._flipped = None if self.flipped is None else _in_memory(self.flipped)
        self._pooled: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def __len__(self) -> int:
        return int(self._plain.shape[0])

    def batch(self, index: torch.Tensor, mirrored: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """Float32 features of the rows ``index``, each from the mirrored cache where ``mirrored``."""
        features = self._plain[index].float()
        if mirrored is not None and self._flipped is not None and bool(mirrored.any()):
            features = torch.where(mirrored[:, None, None, None], self._flipped[index].float(), features)
        return features.to(device)

    def pooled(
        self, index: torch.Tensor, mirrored: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor:
        """Global-average-pooled features (B, C) of the rows ``index``: what a linear classifier head sees.

        Pooled once for the whole cache, in float32, as ``OODNet.forward_head`` pools a map.
        """
        if self._pooled is None:
            self._pooled = (
                _pool(self._plain),
                None if self._flipped is None else _pool(self._flipped),
            )
        plain, flipped = self._pooled
        features = plain[index]
        if mirrored is not None and flipped is not None:
            features = torch.where(mirrored[:, None], flipped[index], features)
        return features.to(device)


def _in_memory(array: np.ndarray) -> torch.Tensor:
    """A tensor over the array, read into memory first when it is memory-mapped (read-only)."""
    if isinstance(array, np.memmap) or not array.flags.writeable:
        return torch.from_numpy(np.array(array))
    return torch.from_numpy(np.ascontiguousarray(array))


def _pool(maps: torch.Tensor) -> torch.Tensor:
    """Spatial means (N, C) of float16 maps (N, C, h, w), computed in float32 in chunks."""
    return torch.cat([maps[i : i + 1024].float().mean(dim=(2, 3)) for i in range(0, maps.shape[0], 1024)])


@torch.no_grad()
def extract_features(
    split: Split,
    net: OODNet,
    images: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: int,
    device: torch.device,
    mirrored: bool = False,
    batch_size: int = 256,
    reporter: Reporter | None = None,
    description: str = "features",
    partial: PartialPass | None = None,
) -> np.ndarray:
    """The frozen part's output (N, C, h, w) as float16 for uint8 images (N, 3, H, W).

    Images pass the same evaluation transform as every other pass (normalise, resize to
    ``size``); with ``mirrored`` each image is flipped left-right first. With ``partial`` the
    rows are kept on disk chunk by chunk and a rerun resumes at the last completed chunk
    (:mod:`harness.partial_pass`); the result is the same array, bit for bit.
    """
    reporter = reporter or Reporter(quiet=True)
    net.to(device).eval()
    n = images.shape[0]
    out: np.ndarray | None = None
    resume = 0
    recorded = partial.recorded_shape() if partial is not None else None
    if partial is not None and recorded is not None and recorded[0] == n:
        resume = partial.start(recorded, np.float16)
        out = partial.array
    source = images.flip(-1) if mirrored else images
    batches = evaluation_batches(
        source[resume:], mean=mean, std=std, size=size, device=device, batch_size=batch_size
    )
    with reporter.task(progress_label(description, resume), total=n, completed=resume) as bar:
        for offset, batch in batches:
            start = resume + offset
            features = split.prefix(batch).float().cpu().numpy()
            peak = float(np.abs(features).max(initial=0.0))
            if not peak <= FLOAT16_MAX:  # also catches NaN
                raise InputError(
                    f"{description}: the frozen part of {net.arch!r} gives values up to {peak:g}, beyond "
                    f"float16 ({FLOAT16_MAX:g}), in which features are cached; use trainable: all for it"
                )
            if out is None:
                shape = (n, *features.shape[1:])
                out = np.empty(shape, np.float16) if partial is None else _open(partial, shape)
            if out.shape[1:] != features.shape[1:]:
                raise StateError(f"{description}: features {features.shape[1:]} for a pass of {out.shape}")
            out[start : start + features.shape[0]] = features
            if partial is not None:
                partial.done(start + features.shape[0])
            bar.advance(batch.shape[0])
    if out is None:
        raise InputError("no images to extract features from")
    if partial is None:
        return out
    partial.done(n, force=True)  # a pass killed before its commit (the mirrored one next, say) is kept whole
    return partial.result()


def _open(partial: PartialPass, shape: tuple[int, ...]) -> np.ndarray:
    """The partial's rows array for a pass starting at row 0."""
    partial.start(shape, np.float16)
    assert partial.array is not None
    return partial.array


def train_on_features(
    net: OODNet,
    split: Split,
    cache: FeatureCache,
    targets: torch.Tensor,
    recipe: Recipe,
    *,
    mode: Mode,
    device: torch.device,
    seed: int,
    checkpoint: Path,
    reporter: Reporter | None = None,
) -> TrainResult:
    """Train the split's trainable part of ``net`` in place on cached features.

    ``targets`` are class indices (N,) for the classifier, uint8 label maps (N, H, W) for the
    dense stage (K = background, ``IGNORE_INDEX`` ignored); the dense logits are upsampled to
    (H, W). Only the tail's and head's parameters get gradients; the frozen part's are restored
    to ``requires_grad=True`` afterwards, so later passes (e.g. ODIN's input gradients) see the
    network as usual.
    """
    reporter = reporter or Reporter(quiet=True)
    n = len(cache)
    if n < recipe.batch_size:
        raise InputError(
            f"{n} training images are fewer than one batch of {recipe.batch_size}; lower batch_size"
        )
    if targets.shape[0] != n:
        raise InputError(f"{targets.shape[0]} targets for {n} cached feature rows")
    net.to(device)
    trainable = split.parameters(net)
    flags = {name: p.requires_grad for name, p in net.named_parameters()}
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    for parameter in trainable:
        parameter.requires_grad_(True)
    optimizer = torch.optim.SGD(
        trainable,
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov and recipe.momentum > 0,
    )
    start_step = resume_state(checkpoint, net, optimizer, mode, device)
    flip = cache.flipped is not None
    fail_at = injected_failure(mode)
    per_epoch = max(1, n // recipe.batch_size)
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    main = distributed.is_main()
    last_save = time.monotonic()
    started = time.perf_counter()
    net.train()
    try:
        with reporter.task(
            f"train {mode} (cached features)", total=recipe.steps, completed=start_step
        ) as bar:
            for step in range(start_step, recipe.steps):
                for group in optimizer.param_groups:
                    group["lr"] = recipe.lr_at(step)
                index = batch_indices(seed, step, n, recipe.batch_size)
                mirrored = None
                if flip:
                    mirrored = (
                        torch.rand(index.shape[0], generator=step_generator(seed, step, stream=2)) < 0.5
                    )
                if mode == "classifier" and split.trivial:  # GAP commutes with an identity tail
                    logits = F.linear(cache.pooled(index, mirrored, device), net.head_weight, net.head_bias)
                    loss = F.cross_entropy(logits, targets[index].to(device).long())
                else:
                    fmap = split.tail(cache.batch(index, mirrored, device))
                    loss = _loss(net, mode, fmap, targets[index], mirrored, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                pending.append(loss.detach())
                if (step + 1) % per_epoch == 0 or step + 1 == recipe.steps or len(pending) >= 50:
                    values = torch.stack(pending).float().cpu().tolist()
                    losses.extend(values)
                    pending.clear()
                    bar.advance(len(values), info=f"loss {values[-1]:.3f}")
                if main and time.monotonic() - last_save >= recipe.checkpoint_every_s:
                    save_state(checkpoint, net, optimizer, step + 1, mode)
                    last_save = time.monotonic()
                if fail_at is not None and step + 1 == fail_at:
                    if main:
                        save_state(checkpoint, net, optimizer, step + 1, mode)
                    raise InjectedFailure(f"{FAIL_ENV_HINT}: stopped on purpose after {mode} step {fail_at}")
    finally:
        for name, parameter in net.named_parameters():
            parameter.requires_grad_(flags[name])
    seconds = time.perf_counter() - started
    if main:
        save_state(checkpoint, net, optimizer, recipe.steps, mode)
    _share_rank0_weights(net)
    net.eval()
    return TrainResult.of_run(recipe, start_step, seconds, losses)


def _loss(
    net: OODNet,
    mode: Mode,
    fmap: torch.Tensor,
    targets: torch.Tensor,
    mirrored: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """Cross-entropy of GAP logits (classifier) or of upsampled per-pixel logits (dense)."""
    if mode == "classifier":
        return F.cross_entropy(net.forward_head(fmap), targets.to(device).long())
    masks = targets.to(device)
    if mirrored is not None:
        masks = torch.where(mirrored.to(device)[:, None, None], masks.flip(-1), masks)
    grid = loss_grid(tuple(fmap.shape[-2:]), tuple(masks.shape[-2:]))
    if grid != tuple(masks.shape[-2:]):
        masks = F.interpolate(masks[:, None].float(), size=grid, mode="nearest-exact")[:, 0]
    logits = F.interpolate(net.dense_head(fmap), size=grid, mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, masks.long(), ignore_index=IGNORE_INDEX)


def loss_grid(feature: tuple[int, int], mask: tuple[int, int]) -> tuple[int, int]:
    """The pixel grid of the dense loss: the mask's, capped at ``LOSS_SAMPLES`` per feature cell and axis.

    Why: a logit map upsampled bilinearly from a 4x4 map is smooth, so sampling it (and the mask)
    at 16x16 points teaches the 1x1 head what 64x64 would, at a sixteenth of the cost; the cost of a
    cached dense step is otherwise almost all in the per-pixel softmax.
    """
    return (min(mask[0], LOSS_SAMPLES * feature[0]), min(mask[1], LOSS_SAMPLES * feature[1]))


def _share_rank0_weights(net: OODNet) -> None:
    """Under torchrun: every rank continues with rank 0's weights (they trained the same model)."""
    if not distributed.world().distributed:
        return
    state = distributed.from_main({k: v.cpu() for k, v in net.state_dict().items()})
    net.load_state_dict(state)


@torch.no_grad()
def cached_cams(
    net: OODNet,
    split: Split,
    cache: FeatureCache,
    targets: torch.Tensor,
    *,
    size: tuple[int, int],
    normalise: str,
    device: torch.device,
    sigma: float = 0.0,
    batch_size: int = 256,
    reporter: Reporter | None = None,
) -> torch.Tensor:
    """CAMs (N, *size) in [0, 1] of every cached image for its target class (the mirror added)."""
    reporter = reporter or Reporter(quiet=True)
    net.to(device).eval()
    n = len(cache)
    out = torch.empty((n, *size), dtype=torch.float32)
    with reporter.task("CAM masks (cached features)", total=n) as bar:
        for start in range(0, n, batch_size):
            rows = torch.arange(start, min(n, start + batch_size))
            fmap = split.tail(cache.batch(rows, None, device))
            flipped = None
            if cache.flipped is not None:
                flipped = split.tail(cache.batch(rows, torch.ones(rows.shape[0], dtype=torch.bool), device))
            out[start : start + rows.shape[0]] = cams_from_feature_maps(
                net,
                fmap,
                targets[rows].to(device),
                size=size,
                fmap_flipped=flipped,
                normalise=normalise,  # type: ignore[arg-type]
                sigma=sigma,
            ).cpu()
            bar.advance(rows.shape[0])
    return out


@torch.no_grad()
def cached_predictions(net: OODNet, split: Split, cache: FeatureCache, device: torch.device) -> torch.Tensor:
    """The classifier's predicted class (among the first K) for every cached image."""
    net.to(device).eval()
    n = len(cache)
    out = []
    for start in range(0, n, 256):
        rows = torch.arange(start, min(n, start + 256))
        logits = net.forward_head(split.tail(cache.batch(rows, None, device)))
        out.append(logits[:, : net.num_classes].argmax(dim=1).cpu())
    return torch.cat(out)
