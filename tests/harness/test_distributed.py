"""Several processes (torchrun, gloo on the CPU) give the single-process result, and the helpers behind it.

What DDP must make equal is checked where it can be checked exactly, and every tolerance is derived
from float32 arithmetic rather than from what one machine happened to print:

- one DDP step on 2 gloo processes against one process on the global batch
  (:func:`test_one_ddp_step_on_two_processes_is_one_step_on_the_global_batch`): the same sample
  indices and augmented inputs at every step, gradients within the bound of a reordered float32
  sum, and the updated weights within that bound times the learning rate;
- the whole pipeline under ``--launcher torchrun`` against a single process
  (:func:`test_two_processes_train_and_evaluate_like_one`): weights within the same bound summed
  over the run's steps, pseudo masks that differ only where a CAM sits on the threshold, outputs
  gathered in dataset order, and metrics that differ by no more than the ID/OOD score pairs that
  are close enough to swap (a 6-step network scores near chance, so such pairs exist; each swap
  moves AUROC by 1/(n_id * n_ood)).

None of it assumes that two runs round the same way: thread counts, SIMD width, the reduction
order of a convolution and gloo's all-reduce may all differ between the runs compared.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from typer.testing import CliRunner

from dfb_ood.harness import distributed
from dfb_ood.harness import train as train_module
from dfb_ood.harness.array_folder import map_arrays
from dfb_ood.harness.augment import IGNORE_INDEX
from dfb_ood.harness.cli import app
from dfb_ood.harness.distributed import (
    World,
    gather_rows,
    gather_rows_into,
    shard_range,
    strip_launcher_options,
    torchrun_command,
)
from dfb_ood.harness.evaluate import prepare_detector
from dfb_ood.harness.masks import compute_cams, masks_from_cams
from dfb_ood.harness.metrics import evaluate_ood
from dfb_ood.harness.outputs import forward_outputs, scratch_arrays
from dfb_ood.harness.recipes import Recipe, load_recipe
from dfb_ood.harness.run import Pipeline
from dfb_ood.harness.train import train_network
from dfb_ood.networks import create_network
from dfb_ood.networks.checkpoint import load_checkpoint
from dfb_ood.networks.dfb import from_classifier

from .test_pipeline import DETECTORS, TINY_BENCHMARK, TINY_RECIPE, bench_args

U = 2.0**-24  # float32 unit roundoff: one rounding moves a value x by at most U * |x|
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")
STEPS = 6  # training steps per stage of the end-to-end runs
# How far two runs' weights may drift apart after STEPS steps, as a share of the distance they
# travelled (see assert_weights_within for why it is not a rounding bound).
DRIFT = 0.05
runner = CliRunner()


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "tiny.yaml").write_text(TINY_BENCHMARK)
    recipe = TINY_RECIPE.replace("steps: 24", f"steps: {STEPS}\nmixup_alpha: 0.1")
    (tmp_path / "recipe.yaml").write_text(recipe)
    return {"benchmark": tmp_path / "tiny.yaml", "recipe": tmp_path / "recipe.yaml", "root": tmp_path}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def harness_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dfb_ood", *args]


def run_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------ float32 bounds
def sum_terms(images: torch.Tensor) -> int:
    """The most terms one gradient entry sums: every pixel of every image at the stem (stride 1)."""
    return images.shape[0] * images.shape[-2] * images.shape[-1]


def reorder_bound(m: int, magnitude: torch.Tensor | float) -> torch.Tensor | float:
    """How far two float32 sums of the same ``m`` terms, added in different orders, can lie apart.

    Each order is within (m - 1) * U * sum|terms| of the exact sum (Higham, *Accuracy and Stability
    of Numerical Algorithms*, 2nd ed., eq. 4.4, to first order in U); two orders are within twice
    that. ``magnitude`` stands for sum|terms|. The one extra rounding of gloo's all-reduce and the
    power-of-two rescalings (DDP's division by the world size) are covered by the m - 1 -> m slack.
    """
    return 2 * m * U * magnitude


def assert_weights_within(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], start: dict[str, np.ndarray], m: int, what: str
) -> None:
    """Trained weights agree per tensor: within the float32 bound of one step, or ``DRIFT`` of the way.

    Rounding changes every step's gradient by at most ``reorder_bound(m, .)`` of its scale (the
    one-step test below checks this tightly against per-sample gradients), so over a few steps the
    two runs' updates differ, to first order, by that fraction of the displacement |w - w0|, plus
    the rounding of each in-place update (U * |w| per run and step). That first-order argument
    assumes the loss is smooth; a ReLU network's is not: a difference of one ulp can move a
    pre-activation across zero and switch a unit, after which the later steps' gradients differ
    by more than any rounding bound. Measured over ``STEPS`` = 6 steps: within the first-order
    bound on one CPU, up to 1.4% of the displacement (11x that bound) on another. So after the first
    step the weights are held to ``DRIFT`` = 5% of their displacement: a gradient that is not
    all-reduced or wrongly scaled moves them by 20% to 270% of it (measured), four times more.
    """
    assert got.keys() == want.keys() == start.keys(), what  # DDP must not prefix the saved keys
    for key, tensor in want.items():
        displacement = float(np.abs(tensor - start[key]).max())
        first_order = 2 * STEPS * U * float(np.abs(tensor).max()) + reorder_bound(m, displacement)
        bound = max(first_order, DRIFT * displacement)
        worst = float(np.abs(got[key] - tensor).max())
        assert worst <= bound, f"{what} {key}: differs by {worst:.3g}, bound {bound:.3g}"


def near_pairs(id_scores: np.ndarray, ood_scores: np.ndarray, delta: float) -> int:
    """ID/OOD score pairs closer than 2 * delta: the only pairs that scores moved by <= delta can swap."""
    ood_sorted = np.sort(ood_scores)
    low = np.searchsorted(ood_sorted, id_scores - 2 * delta, side="left")
    high = np.searchsorted(ood_sorted, id_scores + 2 * delta, side="right")
    return int((high - low).sum())


# ------------------------------------------------------------------ one DDP step, recorded
STEP_RECIPE = Recipe(
    name="ddp-step",
    lr=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    batch_size=32,
    steps=2,
    warmup_steps=0,
    lr_drops=(),
    mixup_alpha=0.1,
    pad=2,
    crop=16,
    dense_scale=(0.75, 1.5),
    checkpoint_every_s=600,
)
MODES = ("classifier", "dense")


def step_problem(mode: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The same network and data in every process: 48 random 16 px images, 6 classes (+ background)."""
    generator = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (48, 3, 16, 16), generator=generator, dtype=torch.uint8)
    if mode == "classifier":
        targets = torch.randint(0, 6, (48,), generator=generator)
    else:  # label maps with the background label 6
        targets = torch.randint(0, 7, (48, 16, 16), generator=generator).to(torch.uint8)
    torch.manual_seed(0)
    return create_network("rv2_tiny", 6, background=mode == "dense"), images, targets


@contextlib.contextmanager
def recorded_training() -> Iterator[dict[str, list]]:
    """What ``train_network`` does at every step, seen from outside its code.

    ``indices``: the global batch's sample indices; ``batch``: this process's (images, targets,
    mixup partners' targets) as handed to the loss, and ``lam``; ``grads``: the gradients the
    optimizer applies (after DDP's all-reduce); ``weights``: the parameters after the update.
    """
    log: dict[str, list] = {"indices": [], "batch": [], "lam": [], "grads": [], "weights": []}
    batch_indices, loss = train_module.batch_indices, train_module._loss

    def recording_indices(*args, **kwargs):
        index = batch_indices(*args, **kwargs)
        log["indices"].append(index.clone())
        return index

    def recording_loss(model, mode, images, targets, mixup, pixel_scale=None):
        partners = None if mixup is None else mixup[0].clone()
        log["batch"].append((images.detach().clone(), targets.clone(), partners))
        log["lam"].append(None if mixup is None else mixup[1])
        return loss(model, mode, images, targets, mixup, pixel_scale)

    def parameters(optimizer):
        return [p for group in optimizer.param_groups for p in group["params"]]

    handles = [
        register_optimizer_step_pre_hook(
            lambda opt, args, kwargs: log["grads"].append([p.grad.clone() for p in parameters(opt)])
        ),
        register_optimizer_step_post_hook(
            lambda opt, args, kwargs: log["weights"].append([p.detach().clone() for p in parameters(opt)])
        ),
    ]
    train_module.batch_indices, train_module._loss = recording_indices, recording_loss
    try:
        yield log
    finally:
        train_module.batch_indices, train_module._loss = batch_indices, loss
        for handle in handles:
            handle.remove()


def recorded_stage(mode: str, checkpoint: Path) -> dict[str, list]:
    net, images, targets = step_problem(mode)
    with recorded_training() as log:
        train_network(
            net,
            images,
            targets,
            STEP_RECIPE,
            mode=mode,
            mean=(0.5,) * 3,
            std=(0.5,) * 3,
            device=torch.device("cpu"),
            seed=0,
            checkpoint=checkpoint,
        )
    return log


def per_sample_gradients(mode: str, single: dict[str, list]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """At step 0, per parameter: the sum over the batch of |each sample's gradient|, and what rank 0
    would apply if nothing were all-reduced (twice the sum over the first half of the batch).

    The first is the sum|terms| of the reduction, up to the pixels within one sample, which are
    not separated (that would cost a backward pass per pixel): their cancellation is what the
    worst-case factor m (rather than the typical sqrt(m)) of the bound covers.
    """
    net, _, _ = step_problem(mode)
    stage = train_module._StageForward(net, mode)
    images, targets, partners = single["batch"][0]
    labelled = (targets != IGNORE_INDEX).sum()
    magnitude = [torch.zeros_like(p) for p in net.parameters()]
    unsynced = [torch.zeros_like(p) for p in net.parameters()]
    with one_thread():  # 32 tiny backward passes: more threads only add overhead
        for i in range(images.shape[0]):
            one = slice(i, i + 1)
            if mode == "dense":  # its pixels' share of the mean over the batch's labelled pixels
                loss = train_module._loss(stage, mode, images[one], targets[one], None, 1.0 / labelled)
            else:  # its share of the batch mean
                mixup = None if partners is None else (partners[one], single["lam"][0])
                loss = train_module._loss(stage, mode, images[one], targets[one], mixup) / images.shape[0]
            net.zero_grad(set_to_none=True)
            loss.backward()
            for total, half, p in zip(magnitude, unsynced, net.parameters()):
                total += p.grad.abs()
                if i < images.shape[0] // 2:
                    half += 2 * p.grad
    return magnitude, unsynced


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_collectives(rank: int) -> None:
    assert distributed.world() == World(rank=rank, size=2, local_rank=rank, backend="gloo")
    assert distributed.is_main() == (rank == 0)
    assert distributed.from_main(f"rank {rank}") == "rank 0"
    for n in (5, 1):  # uneven shards, and an empty one
        full = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
        start, stop = shard_range(n)
        np.testing.assert_array_equal(gather_rows(full[start:stop], n), full)
        as_bytes = full.astype(np.uint8)
        np.testing.assert_array_equal(gather_rows(as_bytes[start:stop], n), as_bytes)
    mean = distributed.average(torch.tensor([float(rank), 2.0 * rank]))
    torch.testing.assert_close(mean, torch.tensor([0.5, 1.0]))
    _check_chunked_gather(rank)


def _check_chunked_gather(rank: int) -> None:
    """gather_rows_into, piece by piece, is np.concatenate of the shards, bit for bit.

    Odd ``n`` gives unequal shards (and n = 1 an empty one on rank 0, the receiver), so the
    padded last pieces are exercised; chunk_rows 1, 2 and 3 take several steps, 64 one. Rank 0
    gathers into an unnamed memory map (what a pass gathers into), once from a separate array
    and once from its own rows of the map.
    """
    generator = np.random.default_rng(3)
    for dtype, tail in ((np.float32, (5,)), (np.uint8, (3, 4))):
        for n in (7, 9, 1, 0):
            if dtype == np.float32:
                full = generator.standard_normal((n, *tail)).astype(np.float32)
                full.reshape(-1)[: min(3, full.size)] = [-0.0, np.inf, np.nan][: min(3, full.size)]
            else:
                full = generator.integers(0, 256, (n, *tail), dtype=np.uint8)
            shards = [full[a:b] for a, b in (shard_range(n, r, 2) for r in range(2))]
            want = np.concatenate(shards)
            start, stop = shard_range(n)
            for chunk_rows in (1, 2, 3, 64):
                for own in (False, True):
                    with scratch_arrays(None, {"out": want.shape}, dtype=dtype) as scratch:
                        out = scratch["out"] if rank == 0 else None
                        part = full[start:stop].copy()
                        if own and out is not None:
                            out[start:stop] = part
                            part = out[start:stop]
                        gather_rows_into(part, n, out, dst=0, chunk_rows=chunk_rows)
                        if out is not None:
                            assert out.dtype == want.dtype and out.shape == want.shape
                            assert out.tobytes() == want.tobytes(), (dtype, n, chunk_rows, own)
    # the default piece is GATHER_CHUNK_BYTES: 2 rows of 5 float32 per step here, 3 steps for 9 rows
    steps: list[int] = []
    gather, chunk = distributed.dist.gather, distributed.GATHER_CHUNK_BYTES

    def counted(tensor: torch.Tensor, *args, **kwargs):
        steps.append(tensor.shape[0])
        return gather(tensor, *args, **kwargs)

    distributed.dist.gather = counted
    distributed.GATHER_CHUNK_BYTES = 2 * 5 * 4 + 4
    try:
        full = np.arange(9 * 5, dtype=np.float32).reshape(9, 5)
        out = np.empty_like(full) if rank == 0 else None
        start, stop = shard_range(9)
        gather_rows_into(full[start:stop], 9, out)
    finally:
        distributed.dist.gather, distributed.GATHER_CHUNK_BYTES = gather, chunk
    assert steps == [2, 2, 1]  # the shards hold 4 and 5 rows: the last piece pads rank 0's
    if rank == 0:
        np.testing.assert_array_equal(out, full)
    with pytest.raises(ValueError, match="pass out=None" if rank else "rank 0 needs float32"):
        gather_rows_into(full[start:stop], 9, np.empty((9, 5), dtype=np.float32 if rank else np.float64))


def _gloo_worker(rank: int, port: int, folder: str) -> None:
    """One of two gloo processes: the collectives, then both training stages under DDP, recorded."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)  # two processes on what may be two cores
    distributed.init(torch.device("cpu"))
    _check_collectives(rank)
    logs = {mode: recorded_stage(mode, Path(folder, f"ddp-{mode}.resume.pt")) for mode in MODES}
    torch.save(logs, Path(folder, f"rank{rank}.pt"))
    distributed.barrier()
    distributed.finish()
    distributed.shutdown()
    assert distributed.world() == World()
    Path(folder, f"rank{rank}.ok").write_text("ok")


@pytest.fixture(scope="module")
def gloo_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two gloo processes, started once for the tests that read what they recorded."""
    folder = tmp_path_factory.mktemp("gloo")
    torch.multiprocessing.spawn(_gloo_worker, args=(free_port(), str(folder)), nprocs=2, join=True)
    return folder


def test_collectives_gather_in_dataset_order_on_two_gloo_processes(gloo_pair):
    assert {p.name for p in gloo_pair.glob("*.ok")} == {"rank0.ok", "rank1.ok"}


def test_one_ddp_step_on_two_processes_is_one_step_on_the_global_batch(gloo_pair):
    """DDP's whole promise, checked directly: same samples, all-reduced gradients, same update."""
    ranks = [torch.load(gloo_pair / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    for mode in MODES:
        single = recorded_stage(mode, gloo_pair / f"single-{mode}.resume.pt")
        parts = [rank[mode] for rank in ranks]
        names = [name for name, _ in step_problem(mode)[0].named_parameters()]
        for step in range(STEP_RECIPE.steps):
            # The same samples: every rank draws the global batch's indices, and its slices, side by
            # side, are the single process's batch: the same augmentation and mixup partners. The
            # inputs are the same float32 operations on the same numbers, so equal up to a vectorised
            # and a scalar path rounding a couple of operations differently.
            for part in parts:
                torch.testing.assert_close(part["indices"][step], single["indices"][step], rtol=0, atol=0)
            for k, want in enumerate(single["batch"][step]):
                if want is None:
                    continue
                glued = torch.cat([part["batch"][step][k] for part in parts])
                atol = 8 * U * float(want.abs().max()) if want.is_floating_point() else 0
                torch.testing.assert_close(
                    glued, want, rtol=0, atol=atol, msg=f"{mode} step {step} input {k}"
                )
            # Both ranks apply the same all-reduced gradient (two addends: a + b == b + a exactly).
            for a, b in zip(parts[0]["grads"][step], parts[1]["grads"][step]):
                assert torch.equal(a, b)
            for a, b in zip(parts[0]["weights"][step], parts[1]["weights"][step]):
                assert torch.equal(a, b)
        # Step 0 starts from the same weights: the all-reduced gradient is the global batch's.
        images = single["batch"][0][0]
        m = sum_terms(images)
        start = [p.detach() for p in step_problem(mode)[0].parameters()]
        lr = STEP_RECIPE.lr_at(0)
        magnitudes, unsynced = per_sample_gradients(mode, single)
        for name, want, got, magnitude, w0, w1, got_w1 in zip(
            names,
            single["grads"][0],
            parts[0]["grads"][0],
            magnitudes,
            start,
            single["weights"][0],
            parts[0]["weights"][0],
        ):
            bound = reorder_bound(m, magnitude)
            worst = float((got - want).abs().max())
            assert bool(((got - want).abs() <= bound).all()), f"{mode} {name}: gradient off by {worst:.3g}"
            # SGD's first step with momentum: w1 = w0 - lr * (g + wd * w0), two roundings per run.
            direction = (want + STEP_RECIPE.weight_decay * w0).abs()
            weight_bound = lr * (bound + 2 * U * direction) + 2 * U * w1.abs()
            assert bool(((got_w1 - w1).abs() <= weight_bound).all()), f"{mode} {name}: update differs"
        # The bound is tight enough to matter: rank 0's own half-batch gradient (what it would
        # apply without the all-reduce) lies outside it for most entries of every tensor.
        for name, half, want, magnitude in zip(names, unsynced, single["grads"][0], magnitudes):
            outside = ((half - want).abs() > reorder_bound(m, magnitude)).float().mean()
            assert outside > 0.5, f"{mode} {name}: only {float(outside):.0%} of the entries would notice"


# ------------------------------------------------------------------ the pipeline, end to end
SEED, K, NETWORK = 0, 6, "rv2_tiny"  # what bench_args runs: the default seed, TINY_BENCHMARK's 6 classes
END_TO_END_TERMS = 32 * 16 * 16  # TINY_RECIPE: batch 32, 16 px crops and dense warps
# Cross-entropy terms are >= 0, so a reordered mean of them moves by at most this fraction of itself.
LOSS_RTOL = reorder_bound(END_TO_END_TERMS, 1.0)


def state(net: torch.nn.Module) -> dict[str, np.ndarray]:
    return {key: value.detach().cpu().numpy().copy() for key, value in net.state_dict().items()}


def weights(run: Path, net: str) -> dict[str, np.ndarray]:
    return load_file(run / f"{net}.safetensors")


def classifier_of(run: Path) -> torch.nn.Module:
    return load_checkpoint(run / "classifier.safetensors", num_classes=K, background=False)


def classifier_start() -> dict[str, np.ndarray]:
    """Stage 1's weights before its first step (it seeds with the run's seed, then builds the network)."""
    torch.manual_seed(SEED)
    return state(create_network(NETWORK, K))


def dense_reference(
    run: Path, checkpoint: Path
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """Stage 3 redone in this one process from ``run``'s own classifier and masks.

    Returns (weights before the first step, trained weights, final loss as stages.json logs it).
    Comparing ``run``'s DFB net with this, rather than with another run's, keeps apart what DDP
    must make equal from what a pseudo mask flipped by rounding changes: one pixel whose CAM sits
    on the threshold in one run and not the other moves the dense weights by up to ~3% of their
    displacement (measured), far more than rounding does.
    """
    pipeline = Pipeline.from_run_dir(run)
    torch.manual_seed(SEED)
    net = from_classifier(classifier_of(run))
    start = state(net)
    images, _ = pipeline.arrays("train")
    result = train_network(
        net,
        images,
        torch.from_numpy(np.load(run / "masks.npy")),
        pipeline.recipe,
        mode="dense",
        mean=pipeline.benchmark.mean,
        std=pipeline.benchmark.std,
        device=torch.device("cpu"),
        seed=SEED + 1,
        checkpoint=checkpoint,
    )
    return start, state(net), float(np.mean(result.losses[-20:]))  # as stages.json's final_loss


def assert_masks_follow_the_cams(single: Path, multi: Path) -> None:
    """Each run's masks are its classifier's CAMs thresholded, in dataset order; the runs' masks
    differ only where a CAM lies within the two classifiers' CAM difference of the threshold."""
    pipeline = Pipeline.from_run_dir(single)
    images, labels = pipeline.arrays("train")
    cam_settings = pipeline.recipe.cam
    cams = [
        compute_cams(
            classifier_of(run),
            images,
            torch.from_numpy(labels),
            cam_settings,
            mean=pipeline.benchmark.mean,
            std=pipeline.benchmark.std,
            size=pipeline.eval_size,
            device=torch.device("cpu"),
        )
        for run in (single, multi)
    ]
    masks = [np.load(run / "masks.npy") for run in (single, multi)]
    # A CAM pixel is a normalised sum over 128 feature channels at 2 scales, with and without flip;
    # recomputed here in one batch instead of the run's shards, the sum may be reordered.
    recomputed = reorder_bound(128 * 2 * 2, 1.0)
    for cam, mask, run in zip(cams, masks, (single, multi)):
        expected = masks_from_cams(cam, torch.from_numpy(labels), cam_settings.theta, K)
        on_edge = (cam - cam_settings.theta).abs().numpy() <= recomputed
        assert not ((mask != expected) & ~on_edge).any(), f"{run.name}: masks are not its CAMs in order"
    delta = float((cams[0] - cams[1]).abs().max())
    near = (cams[0] - cam_settings.theta).abs().numpy() <= 2 * delta + 2 * recomputed
    flipped = masks[0] != masks[1]
    assert not (flipped & ~near).any(), f"{int(flipped.sum())} mask pixels differ, not all on the threshold"


def assert_outputs_in_dataset_order(multi: Path) -> None:
    """The gathered outputs are the run's networks applied to each set, rows in dataset order.

    Recomputed here in one process: the same weights on the same images, only the batch split
    differs, which may reorder float32 sums (<= 1152 terms: 3x3 kernels over 128 channels) in
    each of the network's layers. That moves a logit by ~1e-4 of the logits' scale at most; a
    shard gathered out of order moves it by the scale itself.
    """
    pipeline = Pipeline.from_run_dir(multi)
    nets = {"classifier": classifier_of(multi)}
    nets["dfb"] = load_checkpoint(multi / "dfb.safetensors", num_classes=K, background=True)
    for kind, net in nets.items():
        for path in sorted(p.parent for p in (multi / "outputs" / kind).glob("*/logits.npy")):
            if path.name.startswith("perturbed-"):
                continue
            images, labels = pipeline.arrays(path.name)
            logits, _ = forward_outputs(
                net,
                images,
                mean=pipeline.benchmark.mean,
                std=pipeline.benchmark.std,
                size=pipeline.eval_size,
                device=torch.device("cpu"),
            )
            saved = map_arrays(path)
            np.testing.assert_array_equal(saved["labels"], labels)
            scale = float(np.abs(logits).max())
            bound = 7 * reorder_bound(3 * 3 * 128, scale)
            np.testing.assert_allclose(saved["logits"], logits, rtol=0, atol=bound, err_msg=str(path))


def detector_scores(run: Path) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(ID test scores, OOD scores) of every detector and OOD set, from the run's cached outputs."""
    pipeline = Pipeline.from_run_dir(run)
    nets, outputs = pipeline.artifacts()
    scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for name in DETECTORS.split(","):
        detector, sets, _ = prepare_detector(
            name, outputs, overrides=pipeline.detector_overrides(), perturbed=pipeline.perturbed_outputs(nets)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detector.fit(sets.train, sets.val, sets.ood_val)
        id_scores = np.asarray(detector.score(sets.test), dtype=np.float64)
        for ood_name, ood in sets.ood.items():
            scores[(name, ood_name)] = (id_scores, np.asarray(detector.score(ood), dtype=np.float64))
    return scores


def accuracy_tolerance(single: Path, multi: Path) -> float:
    """ID accuracy can change only on test images whose top two logits are closer than twice the
    largest logit difference between the runs (each such image flips at most 1/n of accuracy)."""
    worst = 0.0
    for kind in ("classifier", "dfb"):
        a = map_arrays(single / "outputs" / kind / "test")
        b = map_arrays(multi / "outputs" / kind / "test")
        logits_1, logits_2 = a["logits"][:, :K], b["logits"][:, :K]
        delta = float(np.abs(logits_1 - logits_2).max())
        top_two = np.sort(logits_1, axis=1)[:, -2:]
        worst = max(worst, float(np.mean(top_two[:, 1] - top_two[:, 0] <= 2 * delta)))
    return worst


def assert_metrics_agree(single: Path, multi: Path) -> None:
    """Every reported metric differs by no more than the ID/OOD pairs that can swap.

    If no score moves by more than delta, only an ID/OOD pair closer than 2 * delta can change
    order (a tie counts as half a swap). Each swap moves AUROC by 1 / (n_id * n_ood), FPR@95 by
    at most 1 / n_ood (one OOD sample crosses the threshold) and average precision by at most
    1 / n_positives. The CSV keeps 6 decimals: 1e-6 more. Mean rows: the mean of their sets'.
    """
    scores = [detector_scores(run) for run in (single, multi)]
    rows = [read_rows(run / "results.csv") for run in (single, multi)]
    for run_rows, run_scores in zip(rows, scores):  # the reported numbers are these scores'
        for row in run_rows:
            if (row["detector"], row["dataset"]) in run_scores:
                got = evaluate_ood(*run_scores[(row["detector"], row["dataset"])]).as_dict()
                for metric in METRICS:
                    assert float(row[metric]) == pytest.approx(got[metric], abs=1e-6), (row, metric)
    tolerance: dict[tuple[str, str], dict[str, float]] = {}
    for key, (id_1, ood_1) in scores[0].items():
        id_2, ood_2 = scores[1][key]
        delta = max(float(np.abs(id_2 - id_1).max()), float(np.abs(ood_2 - ood_1).max()))
        pairs = near_pairs(id_1, ood_1, delta)
        per_swap = 1 / min(id_1.size, ood_1.size)
        tolerance[key] = {"auroc": pairs / (id_1.size * ood_1.size), "fpr95": pairs * per_swap}
        tolerance[key].update(aupr_in=pairs * per_swap, aupr_out=pairs * per_swap)
    group_of = {
        (r["detector"], r["dataset"]): r["group"]
        for r in rows[0]
        if (r["detector"], r["dataset"]) in scores[0]
    }
    accuracy = accuracy_tolerance(single, multi)
    for row_1, row_2 in zip(*rows):
        key = (row_1["detector"], row_1["dataset"])
        if key in tolerance:
            members = [key]
        else:  # "<group>_mean"
            group = row_1["dataset"].removesuffix("_mean")
            members = [k for k, g in group_of.items() if k[0] == key[0] and group in (g, "all")]
        for metric in METRICS:
            allowed = float(np.mean([tolerance[k][metric] for k in members])) + 1e-6
            assert abs(float(row_2[metric]) - float(row_1[metric])) <= allowed, (
                row_1,
                row_2,
                metric,
                allowed,
            )
        assert abs(float(row_2["id_accuracy"]) - float(row_1["id_accuracy"])) <= accuracy + 1e-6


def assert_same_run(single: Path, multi: Path, scratch: Path) -> None:
    """``multi`` computed what ``single`` did, within the float32 bounds above; see the module doc."""
    rows_1, rows_2 = read_rows(single / "results.csv"), read_rows(multi / "results.csv")
    assert [(r["detector"], r["dataset"]) for r in rows_1] == [(r["detector"], r["dataset"]) for r in rows_2]
    start = classifier_start()
    trained = weights(single, "classifier")
    travelled = sum(float(np.square(trained[k] - start[k]).sum()) for k in start)
    assert travelled < 0.01 * sum(float(np.square(v).sum()) for v in start.values()), "not stage 1's start"
    assert_weights_within(weights(multi, "classifier"), trained, start, END_TO_END_TERMS, "classifier")
    assert_masks_follow_the_cams(single, multi)
    dense_start, dense_trained, dense_loss = dense_reference(multi, scratch / f"{multi.name}-dfb.resume.pt")
    assert_weights_within(weights(multi, "dfb"), dense_trained, dense_start, END_TO_END_TERMS, "dfb")
    assert_outputs_in_dataset_order(multi)
    assert_metrics_agree(single, multi)
    # The logged loss is the global batch's (all-reduced), not rank 0's share.
    logged = json.loads((multi / "stages.json").read_text())["dense"]["final_loss"]
    assert logged == pytest.approx(dense_loss, rel=LOSS_RTOL)
    # Only rank 0 wrote, and nothing but what a single process writes (no stray resume files).
    assert files_under(multi) == files_under(single)


def test_two_processes_train_and_evaluate_like_one(tiny):
    """`--launcher torchrun --nproc 2` re-executes under torch.distributed.run: DDP with gloo on the CPU."""
    single, multi = tiny["root"] / "single", tiny["root"] / "multi"
    subprocess.run(harness_command(*bench_args(tiny, single)), check=True, env=run_env(), capture_output=True)
    launched = subprocess.run(
        harness_command(*bench_args(tiny, multi), "--json", "--launcher", "torchrun", "--nproc", "2"),
        env=run_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert_same_run(single, multi, tiny["root"])
    printed = json.loads(launched.stdout)  # one table, from rank 0 only
    assert [row["auroc"] for row in printed] == pytest.approx(
        [float(row["auroc"]) for row in read_rows(multi / "results.csv")]
    )
    record = json.loads((multi / "run.json").read_text())
    assert record["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert json.loads((single / "run.json").read_text())["distributed"] == {"world_size": 1, "backend": None}
    stages_1 = json.loads((single / "stages.json").read_text())
    stages_2 = json.loads((multi / "stages.json").read_text())
    assert {k: v["key"] for k, v in stages_1.items()} == {k: v["key"] for k, v in stages_2.items()}
    loss_1, loss_2 = stages_1["classifier"]["final_loss"], stages_2["classifier"]["final_loss"]
    assert loss_2 == pytest.approx(loss_1, rel=LOSS_RTOL)  # all-reduced, not rank 0's share


# Runs ``python -m dfb_ood`` as a torchrun worker with GATHER_CHUNK_BYTES small enough that every
# set's outputs and the masks are gathered in several pieces, logs each gather_rows_into call it
# makes, and records what stage 2 hands this rank's dense stage.
SMALL_PIECES = """
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from dfb_ood.harness import distributed
from dfb_ood.harness.cli import main
from dfb_ood.harness.run import Pipeline

distributed.GATHER_CHUNK_BYTES = {chunk}
gather = distributed.gather_rows_into
stage_masks = Pipeline.stage_masks


def logged(part, n, out, dst=0, chunk_rows=None):
    with open(Path({log!r}) / f"rank{{distributed.world().rank}}.gathers", "a") as handle:
        handle.write(f"{{n}} {{part.shape[0]}} {{part[:1].nbytes}}\\n")
    gather(part, n, out, dst, chunk_rows)


def recorded_masks(self, classifier):
    masks = stage_masks(self, classifier)
    digest = hashlib.sha256(np.ascontiguousarray(masks).tobytes()).hexdigest()
    line = [type(masks).__name__, getattr(masks, "mode", None), masks.flags.writeable, digest]
    with open(Path({log!r}) / f"rank{{distributed.world().rank}}.masks", "w") as handle:
        json.dump(line + [str(getattr(masks, "filename", None))], handle)
    return masks


distributed.gather_rows_into = logged
Pipeline.stage_masks = recorded_masks
sys.argv[0] = "harness"
main()
"""
PIECE_BYTES = 256  # 9 rows of logits (K + 1 = 7 float32) per piece, one row of features (128)


def test_resume_on_two_processes_from_a_one_process_checkpoint(tiny, monkeypatch):
    """A run killed mid-classifier resumes under torchrun: both ranks load rank 0's checkpoint.

    Its outputs and masks are gathered in pieces smaller than any set's (:data:`SMALL_PIECES`)
    and must still be the one-process run's, in dataset order. Neither rank holds the masks in
    memory: each trains on a read-only map of the ``masks.npy`` rank 0 wrote.
    """
    reference, resumed = tiny["root"] / "reference", tiny["root"] / "resumed"
    worker = tiny["root"] / "small_pieces.py"
    worker.write_text(SMALL_PIECES.format(chunk=PIECE_BYTES, log=str(tiny["root"])))
    env = run_env()
    subprocess.run(harness_command(*bench_args(tiny, reference)), check=True, env=env, capture_output=True)
    monkeypatch.setenv("HARNESS_FAIL_AT_STEP", "classifier:3")
    failed = runner.invoke(app, bench_args(tiny, resumed))
    assert failed.exit_code == 1 and "stopped on purpose" in failed.output
    assert (resumed / "classifier.resume.pt").is_file()
    monkeypatch.delenv("HARNESS_FAIL_AT_STEP")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(worker),
        *bench_args(tiny, resumed),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((resumed / "stages.json").read_text())["classifier"]["resumed_from"] == 3
    assert_same_run(reference, resumed, tiny["root"])
    gathers = [(tiny["root"] / f"rank{rank}.gathers").read_text().split("\n")[:-1] for rank in (0, 1)]
    passes = (resumed / "outputs" / "classifier").glob("*/logits.npy")
    sets = len([p for p in passes if not p.parent.name.startswith("perturbed-")])
    # the masks, then the logits and features of both networks
    assert len(gathers[0]) == len(gathers[1]) == 1 + 2 * 2 * sets
    for rank, calls in enumerate(gathers):
        for call in calls:
            n, rows, row_bytes = map(int, call.split())
            start, stop = shard_range(n, rank, 2)
            assert rows == stop - start  # this rank's shard
            assert rows * row_bytes > PIECE_BYTES, call  # several pieces
    saved = np.load(resumed / "masks.npy")
    digest = hashlib.sha256(saved.tobytes()).hexdigest()
    for rank in (0, 1):
        kind, mode, writeable, got, filename = json.loads((tiny["root"] / f"rank{rank}.masks").read_text())
        assert (kind, mode, writeable, got) == ("memmap", "r", False, digest), rank
        assert Path(filename).resolve() == (resumed / "masks.npy").resolve(), rank


# ---------------------------------------------------------------------------- helpers, one process
def test_shards_are_contiguous_balanced_and_cover_every_row():
    for n in (0, 1, 5, 7, 192):
        for size in (1, 2, 3, 4):
            ranges = [shard_range(n, rank, size) for rank in range(size)]
            assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
            lengths = [b - a for a, b in ranges]
            assert max(lengths) - min(lengths) <= 1
    assert gather_rows(np.arange(6), 6) is not None  # alone: the part is the whole
    with pytest.raises(ValueError, match="its shard of 6 is 6"):
        gather_rows(np.arange(5), 6)


def test_gather_into_alone_copies_in_pieces_and_leaves_its_own_rows(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    full = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    out = np.zeros_like(full)
    gather_rows_into(full, 7, out, chunk_rows=2)
    assert out.tobytes() == full.tobytes()
    written: list[slice] = []

    class Watched(np.ndarray):  # records every write: its own rows are not copied onto themselves
        def __setitem__(self, index, value):
            written.append(index)
            super().__setitem__(index, value)

    own = np.zeros_like(full).view(Watched)
    own[:] = full
    written.clear()
    gather_rows_into(own[0:7], 7, own, chunk_rows=2)
    assert written == [] and np.array_equal(own, full)
    with pytest.raises(ValueError, match="rank 0 needs float32 \\(7, 3\\)"):
        gather_rows_into(full, 7, None)


def test_unnamed_scratch_leaves_no_file_and_outlives_its_block(tmp_path, monkeypatch):
    """scratch_arrays(None): what a rank other than 0, or a read-only run, writes a pass into."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the system's temporary directory
    with scratch_arrays(None, {"logits": (5, 2), "masks": (5, 4, 4)}, dtype=np.uint8) as scratch:
        assert {name: (a.shape, a.dtype) for name, a in scratch.items()} == {
            "logits": ((5, 2), np.uint8),
            "masks": ((5, 4, 4), np.uint8),
        }
        assert all(isinstance(a, np.memmap) for a in scratch.values())
        assert list(tmp_path.iterdir()) == []  # unlinked from the start: a killed process leaves nothing
        scratch["masks"][:] = 7
        kept = scratch["masks"]
    assert int(kept.sum()) == 7 * 5 * 16 and list(tmp_path.iterdir()) == []
    with scratch_arrays(None, {"x": (0, 3)}) as scratch:  # an empty shard
        assert scratch["x"].shape == (0, 3) and scratch["x"].dtype == np.float32


def test_launcher_builds_the_torchrun_command_and_passes_its_exit_code(tiny, monkeypatch):
    argv = [
        "--debug",
        "bench",
        "--launcher",
        "torchrun",
        "--nproc=2",
        "--quiet",
        "--launcher=torchrun",
        "--nproc",
        "2",
    ]
    assert strip_launcher_options(argv) == ["--debug", "bench", "--quiet"]
    command = torchrun_command(argv, 3)
    assert command[:5] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=3",
    ]
    assert command[5:] == ["-m", "dfb_ood", "--debug", "bench", "--quiet"]

    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 7)
    args = [*bench_args(tiny, tiny["root"] / "out"), "--launcher", "torchrun", "--nproc", "2"]
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, args)
    assert result.exit_code == 7, result.output  # the launcher's exit code is the command's
    assert calls == [torchrun_command(bench_args(tiny, tiny["root"] / "out"), 2)]
    assert not (tiny["root"] / "out").exists()  # the launching process itself computes nothing

    bad = runner.invoke(app, [*bench_args(tiny, tiny["root"] / "out"), "--nproc", "2"])
    assert bad.exit_code == 2 and "--nproc only applies with --launcher torchrun" in bad.output
    if not torch.cuda.is_available():
        no_gpu = runner.invoke(app, [*bench_args(tiny, tiny["root"] / "out"), "--launcher", "torchrun"])
        assert no_gpu.exit_code == 2 and "pass --nproc N" in no_gpu.output


def test_device_per_local_rank_under_torchrun(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.device_for("cuda:1") == torch.device("cuda:1")  # alone: as asked
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launched()
    assert distributed.device_for("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="each process uses cuda:<LOCAL_RANK>"):
        distributed.device_for("cuda:1")
    assert distributed.world() == World()  # nothing is joined until init()


def test_global_batch_must_split_over_the_processes(tiny, monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: World(rank=0, size=3, backend="gloo"))
    recipe = load_recipe(tiny["recipe"])  # global batch 32
    net = create_network("rv2_tiny", 6)
    with pytest.raises(ValueError, match="global batch of 32 does not split evenly over 3 processes"):
        train_network(
            net,
            torch.zeros(40, 3, 16, 16, dtype=torch.uint8),
            torch.zeros(40, dtype=torch.int64),
            recipe,
            mode="classifier",
            mean=(0.5,) * 3,
            std=(0.5,) * 3,
            device=torch.device("cpu"),
            seed=0,
            checkpoint=tiny["root"] / "x.resume.pt",
        )
