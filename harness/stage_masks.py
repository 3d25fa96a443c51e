"""Stage 2: CAM pseudo masks of the ID training images, what the DFB network learns background from.

Masks come from class activation maps of the trained classifier: of the images at the recipe's
``cam.scales``, or of the cached feature maps (cached recipes at scale 1). They are written chunk
by chunk into memory maps, so neither the CAMs nor the masks of a large train set are held whole.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfb_ood.harness import distributed
from dfb_ood.harness.cached import cached_cams, cached_predictions
from dfb_ood.harness.io import save_npy, write_json
from dfb_ood.harness.masks import (
    compute_cams,
    mask_agreement,
    mask_stats,
    masks_from_cams,
    warn_if_degenerate,
)
from dfb_ood.harness.outputs import forward_outputs
from dfb_ood.harness.plots import mask_preview
from dfb_ood.harness.stage_context import StageContext
from dfb_ood.harness.stage_features import feature_cache
from dfb_ood.networks import OODNet, split_network

# Training images whose CAMs are held at once while masks are made (float32 at the stored size);
# a multiple of compute_cams' batch of 256, so the batches, and so the masks, are those of one pass.
MASK_CHUNK = 4096


def stage_masks(ctx: StageContext, classifier: OODNet) -> np.ndarray:
    """Stage 2: CAM pseudo masks for every ID training image, one uint8 array, memory-mapped.

    The masks of image CAMs are written chunk by chunk into a memory map, so neither the CAMs
    nor the masks of a streamed train set are ever held whole: at ImageNet scale (1.28M images
    at 224 px) the masks alone are 64 GB. Under DDP each rank writes the masks of its
    contiguous shard into a map of its own (an unnamed temporary; rank 0's is its map of the
    whole set, beside ``masks.npy``), and rank 0 gathers the others' shards into it a bounded
    piece at a time (:func:`harness.distributed.gather_rows_into`), then writes ``masks.npy``
    with its statistics. The dense stage trains on all the masks on every rank, each reading
    its batches' rows: so after a barrier the other ranks map rank 0's ``masks.npy`` from the
    run folder they share (the module doc of :mod:`harness.distributed`), and no rank holds
    the masks in memory. Every rank returns the same read-only map of that file.

    Masks of the cached feature maps (:func:`_cached_masks`) are computed by rank 0 alone and
    reach the other ranks the same way; those ranks only take part in the features stage,
    which is collective and which their dense stage reads anyway (cached training reads the
    features and the masks whole, on every rank).
    """
    plan = ctx.plan
    key = ctx.keys.masks()
    path = plan.run_dir / "masks.npy"
    if ctx.ledger.done("masks", key, path):
        return np.load(path, mmap_mode="r")
    ctx.ledger.compute("masks")
    ctx.reporter.message("stage 2: pseudo masks from class activation maps")
    started = time.perf_counter()
    images, labels = ctx.data.train_images()
    show = np.linspace(0, len(labels) - 1, num=min(12, len(labels))).astype(int)
    if plan.cams_from_cache:
        feature_cache(ctx, classifier, split_network(classifier, plan.recipe.trainable))
        if ctx.main:
            masks, cams = _cached_masks(ctx, classifier)
            show_cams = cams[show]
            del cams
            _finish_masks(ctx, key, path, masks, show, show_cams, started)
            del masks
    else:
        shape = (ctx.data.scratch_rows(len(labels)), *images.shape[-2:])
        with ctx.data.pass_arrays(plan.run_dir, {"masks": shape}, dtype=np.uint8) as scratch:
            _image_masks(ctx, classifier, scratch["masks"])
            if ctx.main:
                show_cams = _cams_of(ctx, classifier, show)
                _finish_masks(ctx, key, path, scratch["masks"], show, show_cams, started)
    # Rank 0 has written masks.npy. Had it failed, the others wait here (as they otherwise
    # would in the dense stage's first collective) until torchrun stops them or the timeout.
    distributed.barrier()
    return np.load(path, mmap_mode="r")


def _image_masks(ctx: StageContext, classifier: OODNet, into: np.ndarray) -> None:
    """Masks from multi-scale CAMs of this rank's shard of the images, written into ``into``.

    CAMs are computed :data:`MASK_CHUNK` images at a time and turned into masks at once, so
    the float CAMs of the whole set never exist. ``into`` is a memory map: rank 0's (and a
    single process's) holds every image's row, this rank's shard first; another rank's holds
    its shard alone. Under DDP the shards are then gathered into rank 0's map a bounded piece
    at a time (:func:`harness.distributed.gather_rows_into`), so that no rank holds all the
    masks in memory, as :func:`harness.distributed.gather_rows` would have every rank do.
    """
    plan = ctx.plan
    cam = plan.recipe.cam
    images, labels = ctx.data.train_images()
    start, stop = distributed.shard_range(len(labels))
    part = into[: stop - start]
    k = plan.benchmark.num_classes
    with ctx.reporter.task("CAM masks", total=stop - start) as bar:
        for first in range(start, stop, MASK_CHUNK):
            last = min(first + MASK_CHUNK, stop)
            cams = compute_cams(
                classifier,
                images[first:last],
                torch.from_numpy(labels[first:last]),
                cam,
                mean=plan.mean,
                std=plan.std,
                size=plan.eval_size,
                device=plan.device,
            )
            targets = torch.from_numpy(labels[first:last])
            if cam.target == "prediction":
                targets = torch.from_numpy(
                    # the release's choice: predicted class
                    _predict(ctx, classifier, images[first:last]).astype(np.int64)
                )
            part[first - start : last - start] = masks_from_cams(cams, targets, cam.theta, k)
            bar.advance(last - first)
    distributed.gather_rows_into(part, len(labels), into if ctx.main else None, dst=0)


def _cached_masks(ctx: StageContext, classifier: OODNet) -> tuple[np.ndarray, torch.Tensor]:
    """Masks from CAMs of the cached feature maps (one scale and the mirror), all in memory (rank 0)."""
    plan = ctx.plan
    cam = plan.recipe.cam
    images, labels = ctx.data.train_images()
    split = split_network(classifier, plan.recipe.trainable)
    cache = feature_cache(ctx, classifier, split)
    targets = torch.from_numpy(labels)
    if cam.target == "prediction":
        targets = cached_predictions(classifier, split, cache, plan.device)
    cams = cached_cams(
        classifier,
        split,
        cache,
        targets,
        size=tuple(images.shape[-2:]),
        normalise=cam.normalise,
        sigma=cam.sigma,
        device=plan.device,
        reporter=ctx.reporter,
    )
    k = plan.benchmark.num_classes
    return masks_from_cams(cams, targets, cam.theta, k), cams


def _finish_masks(
    ctx: StageContext,
    key: str,
    path: Path,
    masks: np.ndarray,
    show: np.ndarray,
    show_cams: torch.Tensor,
    started: float,
) -> None:
    """Write ``masks.npy``, its statistics, the preview, the agreement with true objects (where
    known) and the stage record (rank 0 alone)."""
    plan = ctx.plan
    cam = plan.recipe.cam
    save_npy(path, masks)
    k = plan.benchmark.num_classes
    stats = mask_stats(masks, k)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_degenerate(stats, cam.theta)
    for warning in caught:
        ctx.reporter.message(str(warning.message), label="warning:")
    images, labels = ctx.data.train_images()
    mask_preview(
        images[show].permute(0, 2, 3, 1).numpy(),
        show_cams.numpy(),
        masks[show],
        labels[show],
        plan.benchmark.class_names,
        k,
        plan.run_dir / "masks_preview.png",
        title=f"{plan.benchmark.name}: ID train images, CAMs and pseudo masks (theta {cam.theta})",
    )
    info: dict[str, Any] = {
        **asdict(stats),
        "mean_background": 1.0 - stats.mean_foreground,
        "degenerate": stats.degenerate,
        "normalise": cam.normalise,
        "theta": cam.theta,
        "source": "cached feature maps" if plan.cams_from_cache else "image CAMs at cam.scales",
    }
    truth = _true_object_masks(ctx)
    if truth is not None and truth.shape == masks.shape:
        info["vs_true_objects"] = mask_agreement(masks, truth, k)
        ctx.reporter.message(
            "pseudo masks vs true objects: "
            + ", ".join(f"{name} {value:.2f}" for name, value in info["vs_true_objects"].items())
        )
    ctx.timings["masks"] = time.perf_counter() - started
    write_json(plan.run_dir / "masks.json", {"key": key, **info})
    ctx.ledger.mark("masks", key, files=[path], seconds=ctx.timings["masks"], **info)


def _cams_of(ctx: StageContext, classifier: OODNet, rows: np.ndarray) -> torch.Tensor:
    """CAMs of a few training images (the preview's), computed on this rank alone."""
    plan = ctx.plan
    images, labels = ctx.data.train_images()
    return compute_cams(
        classifier,
        images[torch.from_numpy(rows)],
        torch.from_numpy(labels[rows]),
        plan.recipe.cam,
        mean=plan.mean,
        std=plan.std,
        size=plan.eval_size,
        device=plan.device,
    )


def _true_object_masks(ctx: StageContext) -> np.ndarray | None:
    """Ground-truth object masks of the ID train set, where the benchmark generates them (shapes)."""
    spec = ctx.plan.benchmark.train
    if spec.type != "shapes" or spec.params.get("subset"):
        return None
    from dfb_ood.harness.data.shapes import generate_set

    params = spec.params
    return generate_set(params["set"], params["count"], params["seed"], params["size"], return_masks=True)[2]


def _predict(ctx: StageContext, net: OODNet, images: torch.Tensor) -> np.ndarray:
    plan = ctx.plan
    logits, _ = forward_outputs(
        net,
        images,
        mean=plan.mean,
        std=plan.std,
        size=plan.eval_size,
        device=plan.device,
        batch_size=plan.settings.eval_batch_size,
    )
    return logits[:, : net.num_classes].argmax(axis=1)
