"""One training loop for both stages: the K-class classifier and the (K+1)-class dense network.

Only the loss differs: cross-entropy on GAP logits (with optional mixup) for the classifier,
per-pixel cross-entropy against pseudo masks (ignoring padded pixels) for the dense stage.

Resumability is built in, not bolted on. Everything random in step ``s`` (the epoch's sample
order, augmentation, mixup) is drawn from generators seeded by ``(seed, s)``, and the model and
optimizer are checkpointed atomically at every epoch end and at least every
``recipe.checkpoint_every_s`` seconds. A run killed at any moment restarts from its last
checkpoint and reproduces, step for step, what the uninterrupted run would have computed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import IGNORE_INDEX, BatchAugmenter
from harness.io import atomic_path
from harness.progress import Reporter
from harness.recipes import Recipe

Mode = Literal["classifier", "dense"]
FAIL_ENV = "HARNESS_FAIL_AT_STEP"  # "<mode>:<step>": raise after that step (tests of resume)


class InjectedFailure(RuntimeError):
    """Raised on purpose by ``HARNESS_FAIL_AT_STEP`` so tests can interrupt a run mid-stage."""


@dataclass
class TrainResult:
    """What the loop reports back: the loss curve, throughput, and where it (re)started."""

    steps: int
    resumed_from: int
    seconds: float
    images_per_s: float
    losses: list[float] = field(default_factory=list)


def _step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    mixed = np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & 0x7FFF_FFFF_FFFF_FFFF)


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=_step_generator(seed, epoch, stream=1))


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> torch.Tensor:
    """The sample indices of one step: epoch-wise permutations, the last partial batch dropped."""
    per_epoch = max(1, n // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = _epoch_order(seed, epoch, n)
    return order[position * batch_size : (position + 1) * batch_size]


def _loss(
    net: nn.Module,
    mode: Mode,
    images: torch.Tensor,
    targets: torch.Tensor,
    mixup: tuple[torch.Tensor, float] | None,
) -> torch.Tensor:
    if mode == "dense":
        return F.cross_entropy(net.dense(images), targets, ignore_index=IGNORE_INDEX)
    logits = net(images)
    if mixup is None:
        return F.cross_entropy(logits, targets)
    partner, lam = mixup
    return lam * F.cross_entropy(logits, targets) + (1 - lam) * F.cross_entropy(logits, targets[partner])


def train_network(
    net: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    recipe: Recipe,
    *,
    mode: Mode,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    seed: int,
    checkpoint: Path,
    reporter: Reporter | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``net`` in place on in-memory uint8 images (N, 3, H, W).

    ``targets`` are class indices (N,) for the classifier or uint8 label maps (N, H, W) for the
    dense stage (K = background, ``IGNORE_INDEX`` = ignore). ``checkpoint`` is the resume file of
    this stage; it is left in place at the end (the caller removes it once the final weights are
    saved).
    """
    reporter = reporter or Reporter(quiet=True)
    n = images.shape[0]
    if n < recipe.batch_size:
        raise ValueError(
            f"{n} training images are fewer than one batch of {recipe.batch_size}; lower batch_size"
        )
    cuda = device.type == "cuda"
    net.to(device)
    if cuda:
        net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        net.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov and recipe.momentum > 0,
    )
    start_step = _resume(checkpoint, net, optimizer, mode, device)
    augmenter = BatchAugmenter(
        mean,
        std,
        device,
        input_size=images.shape[-1],
        resize=recipe.resize,
        crop=recipe.crop,
        pad=recipe.pad,
        flip=recipe.flip,
        dense_scale=recipe.dense_scale,
        dense_flip=recipe.dense_flip,
    )
    fail_at = _injected_failure(mode)
    per_epoch = max(1, n // recipe.batch_size)
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    last_save = time.monotonic()
    started = time.perf_counter()
    net.train()
    with reporter.task(f"train {mode}", total=recipe.steps, completed=start_step) as bar:
        for step in range(start_step, recipe.steps):
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr_at(step)
            index = batch_indices(seed, step, n, recipe.batch_size)
            generator = _step_generator(seed, step, stream=2)
            if mode == "dense":
                batch, batch_targets = augmenter.dense(images[index], targets[index], generator)
                mixup = None
            else:
                batch = augmenter.classifier(images[index], generator)
                batch_targets = targets[index].to(device)
                mixup = _mixup(batch, recipe.mixup_alpha, seed, step, generator)
                if mixup is not None:
                    partner, lam = mixup
                    batch = lam * batch + (1 - lam) * batch[partner]
            if cuda:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = _loss(net, mode, batch, batch_targets, mixup)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            pending.append(loss.detach())
            epoch_end = (step + 1) % per_epoch == 0
            if epoch_end or step + 1 == recipe.steps or len(pending) >= 25:
                # One host synchronisation per logging interval, not per step.
                values = torch.stack(pending).float().cpu().tolist()
                losses.extend(values)
                pending.clear()
                bar.advance(len(values), info=f"loss {values[-1]:.3f}")
            if epoch_end or time.monotonic() - last_save >= recipe.checkpoint_every_s:
                _save(checkpoint, net, optimizer, step + 1, mode)
                last_save = time.monotonic()
                if on_checkpoint is not None:
                    on_checkpoint(step + 1)
            if fail_at is not None and step + 1 == fail_at:
                _save(checkpoint, net, optimizer, step + 1, mode)
                raise InjectedFailure(f"{FAIL_ENV}: stopped on purpose after {mode} step {fail_at}")
    seconds = time.perf_counter() - started
    done = recipe.steps - start_step
    _save(checkpoint, net, optimizer, recipe.steps, mode)
    net.eval()
    return TrainResult(
        steps=recipe.steps,
        resumed_from=start_step,
        seconds=seconds,
        images_per_s=done * recipe.batch_size / seconds if seconds > 0 else 0.0,
        losses=losses,
    )


def _mixup(
    batch: torch.Tensor, alpha: float, seed: int, step: int, generator: torch.Generator
) -> tuple[torch.Tensor, float] | None:
    if alpha <= 0:
        return None
    lam = float(np.random.default_rng([seed, step, 3]).beta(alpha, alpha))
    partner = torch.randperm(batch.shape[0], generator=generator).to(batch.device)
    return partner, lam


def _injected_failure(mode: Mode) -> int | None:
    value = os.environ.get(FAIL_ENV, "")
    if not value:
        return None
    target, _, step = value.partition(":")
    if target != mode:
        return None
    try:
        return int(step)
    except ValueError:
        raise ValueError(f"{FAIL_ENV} must look like 'dense:120', got {value!r}") from None


def _save(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, step: int, mode: Mode) -> None:
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "mode": mode}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(
    path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, mode: Mode, device: torch.device
) -> int:
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"{path}: resume checkpoint is unreadable ({error}); delete it to restart the stage"
        ) from None
    if state.get("mode") != mode:
        raise ValueError(f"{path}: resume checkpoint is for the {state.get('mode')} stage, not {mode}")
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])
