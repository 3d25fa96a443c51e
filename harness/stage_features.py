"""The features stage: the frozen part's output for every ID training image, computed once.

Recipes that train only the top of a network (``trainable`` other than ``all``) train both
networks on these cached features instead of passing the images on every step; the masks of
such recipes come from the cached maps too. Keyed and checksummed like any stage.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dfb_ood.harness import distributed
from dfb_ood.harness.cached import FeatureCache, extract_features
from dfb_ood.harness.io import content_hash, save_npy
from dfb_ood.harness.partial_pass import PartialPass
from dfb_ood.harness.stage_context import StageContext
from dfb_ood.networks import OODNet, Split


def feature_cache(ctx: StageContext, net: OODNet, split: Split) -> FeatureCache:
    """The frozen part's output for every ID training image (and its mirror), computed once.

    ``net`` is the network whose frozen part the recipe trains on (the classifier, which in
    these recipes shares it with the DFB net). A stage of its own, ``features``: keyed,
    checksummed, and reused by the classifier, masks and dense stages of this run.
    """
    if ctx.features is not None:
        return ctx.features
    key = ctx.keys.features()
    folder = ctx.ledger.own_folder("features")
    paths = [folder / "train.npy"] + ([folder / "train_flipped.npy"] if ctx.plan.recipe.flip else [])
    if ctx.ledger.done("features", key, *paths):
        arrays = [np.load(path, mmap_mode="r") for path in paths]
    else:
        arrays = _extract_features(ctx, net, split, key, paths)
    ctx.features = FeatureCache(arrays[0], arrays[1] if len(arrays) == 2 else None)
    return ctx.features


def _extract_features(
    ctx: StageContext, net: OODNet, split: Split, key: str, paths: list[Path]
) -> list[np.ndarray]:
    """Compute the features stage (plain, then mirrored when ``paths`` has two files) and record it."""
    ctx.ledger.compute("features")
    plan = ctx.plan
    started = time.perf_counter()
    images, _ = ctx.data.train_images()
    start, stop = distributed.shard_range(images.shape[0])
    # Partial passes are kept by a single process only: under torchrun each rank's shard would need
    # its own record, and a restart may change the world size; a distributed pass starts from row 0.
    resumable = ctx.main and not distributed.world().distributed
    if resumable:
        ctx.ledger.own_folder("features", create=True)
    arrays, partials = [], []
    for path, mirrored in zip(paths, (False, True)):
        batch_size = plan.settings.eval_batch_size
        partial = None
        if resumable:
            partial = PartialPass(
                path, content_hash("features pass", key, mirrored, batch_size, images.shape[0]), ctx.reporter
            )
            partials.append(partial)
        part = extract_features(
            split,
            net,
            images[start:stop],
            mean=plan.mean,
            std=plan.std,
            size=plan.eval_size,
            device=plan.device,
            mirrored=mirrored,
            batch_size=batch_size,
            reporter=ctx.reporter,
            description="features (mirrored)" if mirrored else "features",
            partial=partial,
        )
        arrays.append(distributed.gather_rows(part, images.shape[0]))
    seconds = time.perf_counter() - started
    if ctx.main:
        ctx.ledger.own_folder("features", create=True)
        for path, array in zip(paths, arrays):
            save_npy(path, array)
    for partial in partials:
        partial.remove()  # the pass is committed: the files above and the ledger's mark are what reruns trust
    ctx.ledger.mark(
        "features",
        key,
        files=paths,
        seconds=seconds,
        images_per_s=images.shape[0] * len(paths) / seconds if seconds > 0 else 0.0,
        shape=list(arrays[0].shape),
    )
    ctx.timings["features"] = seconds
    return arrays
