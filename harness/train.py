"""One training loop for both stages: the K-class classifier and the (K+1)-class dense network.

Only the loss differs: cross-entropy on GAP logits (with optional mixup) for the classifier,
per-pixel cross-entropy against pseudo masks (ignoring padded pixels) for the dense stage.

Several processes (torchrun, :mod:`harness.distributed`) train one model with
DistributedDataParallel. Every rank draws the same global batch, the same augmentation and the
same mixup partners as a single process would, augments the whole batch, and keeps only its own
contiguous slice for the forward and backward pass; the averaged gradients are then those of the
global batch, so the result matches the single-process run up to floating-point reduction order
(the networks use GroupNorm, which has no batch statistics to diverge). Only rank 0 writes
checkpoints; every rank resumes from the same one.

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
from torch.nn.parallel import DistributedDataParallel

from dfb_ood.errors import InputError, StateError
from dfb_ood.harness import distributed
from dfb_ood.harness.augment import IGNORE_INDEX, BatchAugmenter
from dfb_ood.harness.data.streaming import StreamedImages
from dfb_ood.harness.io import atomic_path
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.recipes import Recipe

Mode = Literal["classifier", "dense"]
FAIL_ENV = "HARNESS_FAIL_AT_STEP"  # "<mode>:<step>": raise after that step (tests of resume)


class InjectedFailure(StateError):
    """Raised on purpose by ``HARNESS_FAIL_AT_STEP`` so tests can interrupt a run mid-stage; one line
    and exit code 1, like the unexpected failure it stands for, but without a traceback."""


@dataclass
class TrainResult:
    """What the loop reports back: the loss curve, throughput, and where it (re)started."""

    steps: int
    resumed_from: int
    seconds: float
    images_per_s: float
    losses: list[float] = field(default_factory=list)

    @classmethod
    def of_run(cls, recipe: Recipe, start_step: int, seconds: float, losses: list[float]) -> TrainResult:
        """The result of a loop that ran ``recipe`` from ``start_step`` to its end in ``seconds``."""
        done = recipe.steps - start_step
        return cls(
            steps=recipe.steps,
            resumed_from=start_step,
            seconds=seconds,
            images_per_s=done * recipe.batch_size / seconds if seconds > 0 else 0.0,
            losses=losses,
        )


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """The generator of one random stream of one step: resuming at ``step`` redraws the same numbers."""
    mixed = np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & 0x7FFF_FFFF_FFFF_FFFF)


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=step_generator(seed, epoch, stream=1))


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> torch.Tensor:
    """The sample indices of one step: epoch-wise permutations, the last partial batch dropped."""
    per_epoch = max(1, n // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = _epoch_order(seed, epoch, n)
    return order[position * batch_size : (position + 1) * batch_size]


@dataclass(frozen=True)
class StepRows:
    """:func:`batch_indices` of a run as a picklable function of the step (for decoding workers)."""

    seed: int
    n: int
    batch_size: int

    def __call__(self, step: int) -> torch.Tensor:
        return batch_indices(self.seed, step, self.n, self.batch_size)


def _rows(values: torch.Tensor | np.ndarray, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` as a tensor; a numpy array (e.g. memory-mapped masks) reads those rows only."""
    if isinstance(values, torch.Tensor):
        return values[index]
    return torch.from_numpy(np.ascontiguousarray(values[index.numpy()]))


class _StepImages:
    """The uint8 images of each step: rows of the in-memory tensor, or the streamed set's next batch.

    A streamed set (:class:`harness.data.streaming.StreamedImages`) has its workers decode the
    batches of the steps still to run, in order, ahead of the loop; each is checked against the
    rows the loop asks for, so the two can never drift apart silently.
    """

    def __init__(self, images: torch.Tensor | StreamedImages, rows: StepRows, steps: range) -> None:
        self.images = images
        self.ahead = None if isinstance(images, torch.Tensor) else images.step_batches(rows, steps)
        self.expected = iter(steps)

    def __call__(self, step: int, index: torch.Tensor) -> torch.Tensor:
        if self.ahead is None:
            return self.images[index]
        if next(self.expected) != step:
            raise RuntimeError(f"training asked for step {step} out of order; the decoders run in step order")
        batch = next(self.ahead)
        if batch.shape[0] != index.shape[0]:
            raise RuntimeError(f"step {step}: decoded {batch.shape[0]} images for {index.shape[0]} rows")
        return batch


class _StageForward(nn.Module):
    """The stage's forward (dense logit maps or GAP logits) as ``forward``.

    DistributedDataParallel synchronises gradients only for what runs through its ``forward``,
    so the dense stage cannot call ``net.dense`` past the wrapper. Holding ``net`` as a
    submodule leaves ``net.state_dict()`` (what checkpoints save) with its usual keys.
    """

    def __init__(self, net: nn.Module, mode: Mode) -> None:
        super().__init__()
        self.net = net
        self.mode = mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits (dense stage) or GAP logits (classifier)."""
        return self.net.dense(images) if self.mode == "dense" else self.net(images)


def _loss(
    model: nn.Module,
    mode: Mode,
    images: torch.Tensor,
    targets: torch.Tensor,
    mixup: tuple[torch.Tensor, float] | None,
    pixel_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The stage's loss on this process's images.

    ``mixup`` holds the mixup partners' targets and lambda. ``pixel_scale`` (several processes,
    dense stage) turns the per-pixel loss sum into this rank's share of the mean over the labelled
    pixels of the *global* batch: slices hold different numbers of ignored pixels, so averaging
    per-slice means would weight pixels unevenly.
    """
    logits = model(images)
    if mode == "dense":
        if pixel_scale is None:
            return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum") * pixel_scale
    if mixup is None:
        return F.cross_entropy(logits, targets)
    partner_targets, lam = mixup
    return lam * F.cross_entropy(logits, targets) + (1 - lam) * F.cross_entropy(logits, partner_targets)


def train_network(
    net: nn.Module,
    images: torch.Tensor | StreamedImages,
    targets: torch.Tensor | np.ndarray,
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
    """Train ``net`` in place on uint8 images (N, 3, H, W), held in memory or streamed from files.

    ``targets`` are class indices (N,) for the classifier or uint8 label maps (N, H, W) for the
    dense stage (K = background, ``IGNORE_INDEX`` = ignore), as a tensor or a numpy array (a
    memory map is read a batch of rows at a time). A streamed set's batches are decoded ahead by
    its workers (:meth:`StreamedImages.step_batches`): the same pixels at the same steps as the
    in-memory tensor, so the same training. ``checkpoint`` is the resume file of
    this stage; it is left in place at the end (the caller removes it once the final weights are
    saved).

    Under torchrun (:func:`harness.distributed.init` done) ``recipe.batch_size`` is the global
    batch, split evenly over the ranks; only rank 0 writes ``checkpoint``.
    """
    reporter = reporter or Reporter(quiet=True)
    n = images.shape[0]
    if n < recipe.batch_size:
        raise InputError(
            f"{n} training images are fewer than one batch of {recipe.batch_size}; lower batch_size"
        )
    team = distributed.world()
    if recipe.batch_size % team.size:
        raise InputError(
            f"the global batch of {recipe.batch_size} does not split evenly over {team.size} processes; "
            f"choose a batch_size divisible by {team.size}"
        )
    local = recipe.batch_size // team.size
    rows = slice(team.rank * local, (team.rank + 1) * local)  # this rank's slice of every global batch
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
    start_step = resume_state(checkpoint, net, optimizer, mode, device)
    if distributed.from_main(start_step) != start_step:
        raise InputError(
            f"{checkpoint}: rank {team.rank} would resume at step {start_step}, rank 0 at another step; "
            "with several nodes the run directory must be on a filesystem that every node shares"
        )
    distributed.barrier()  # every rank has read the checkpoint before rank 0 may overwrite it
    model: nn.Module = _StageForward(net, mode)
    if team.distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
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
    fail_at = injected_failure(mode)
    per_epoch = max(1, n // recipe.batch_size)
    step_rows = StepRows(seed, n, recipe.batch_size)
    step_images = _StepImages(images, step_rows, range(start_step, recipe.steps))
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    last_save = time.monotonic()
    started = time.perf_counter()
    net.train()
    with reporter.task(f"train {mode}", total=recipe.steps, completed=start_step) as bar:
        for step in range(start_step, recipe.steps):
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr_at(step)
            index = step_rows(step)
            generator = step_generator(seed, step, stream=2)
            # The whole global batch is augmented (and mixup partners drawn) on every rank, so
            # that each rank's slice is exactly what a single process would have at those rows.
            mixup = None
            pixel_scale = None
            if mode == "dense":
                batch, batch_targets = augmenter.dense(
                    step_images(step, index), _rows(targets, index), generator
                )
                if team.distributed:
                    labelled = (batch_targets != IGNORE_INDEX).sum().clamp_min(1)
                    pixel_scale = team.size / labelled
                batch, batch_targets = batch[rows], batch_targets[rows]
            else:
                batch = augmenter.classifier(step_images(step, index), generator)
                batch_targets = _rows(targets, index).to(device)
                drawn = _mixup(batch, recipe.mixup_alpha, seed, step, generator)
                if drawn is None:
                    batch, batch_targets = batch[rows], batch_targets[rows]
                else:
                    partner, lam = drawn
                    mine = partner[rows]
                    batch = lam * batch[rows] + (1 - lam) * batch[mine]
                    mixup = (batch_targets[mine], lam)
                    batch_targets = batch_targets[rows]
            if cuda:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = _loss(model, mode, batch, batch_targets, mixup, pixel_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            pending.append(loss.detach())
            epoch_end = (step + 1) % per_epoch == 0
            if epoch_end or step + 1 == recipe.steps or len(pending) >= 25:
                # One host synchronisation (and one all-reduce) per logging interval, not per step.
                # Each rank's loss is its share of the global batch's loss; their mean is that loss.
                values = distributed.average(torch.stack(pending).float()).cpu().tolist()
                losses.extend(values)
                pending.clear()
                bar.advance(len(values), info=f"loss {values[-1]:.3f}")
            if team.rank == 0 and (epoch_end or time.monotonic() - last_save >= recipe.checkpoint_every_s):
                save_state(checkpoint, net, optimizer, step + 1, mode)
                last_save = time.monotonic()
                if on_checkpoint is not None:
                    on_checkpoint(step + 1)
            if fail_at is not None and step + 1 == fail_at:
                if team.rank == 0:
                    save_state(checkpoint, net, optimizer, step + 1, mode)
                raise InjectedFailure(f"{FAIL_ENV}: stopped on purpose after {mode} step {fail_at}")
    seconds = time.perf_counter() - started
    if team.rank == 0:
        save_state(checkpoint, net, optimizer, recipe.steps, mode)
    del model  # drop DDP's gradient hooks before the network is used on its own
    net.eval()
    return TrainResult.of_run(recipe, start_step, seconds, losses)


def _mixup(
    batch: torch.Tensor, alpha: float, seed: int, step: int, generator: torch.Generator
) -> tuple[torch.Tensor, float] | None:
    if alpha <= 0:
        return None
    lam = float(np.random.default_rng([seed, step, 3]).beta(alpha, alpha))
    partner = torch.randperm(batch.shape[0], generator=generator).to(batch.device)
    return partner, lam


def injected_failure(mode: Mode) -> int | None:
    """The step after which ``HARNESS_FAIL_AT_STEP`` asks this stage to stop (tests of resume)."""
    value = os.environ.get(FAIL_ENV, "")
    if not value:
        return None
    target, _, step = value.partition(":")
    if target != mode:
        return None
    try:
        return int(step)
    except ValueError:
        raise InputError(f"{FAIL_ENV} must look like 'dense:120', got {value!r}") from None


def save_state(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, step: int, mode: Mode) -> None:
    """Write a resume checkpoint atomically: the weights, the optimizer and the next step."""
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "mode": mode}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def resume_state(
    path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, mode: Mode, device: torch.device
) -> int:
    """Load a resume checkpoint into ``net`` and ``optimizer``; the step to continue from (0: none)."""
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, OSError) as error:
        raise InputError(
            f"{path}: resume checkpoint is unreadable ({error}); delete it to restart the stage"
        ) from None
    if state.get("mode") != mode:
        raise InputError(f"{path}: resume checkpoint is for the {state.get('mode')} stage, not {mode}")
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])
