"""Stages 1 and 3: the K-class classifier, and the (K+1)-class DFB network trained on the masks.

Both are trained on the ID train set with the recipe (on cached features for recipes with a
frozen part, :mod:`harness.stage_features`), resume from ``*.resume.pt`` checkpoints, and are
saved with the normalisation and input size they expect.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfb_ood.harness.cached import train_on_features
from dfb_ood.harness.stage_context import StageContext
from dfb_ood.harness.stage_features import feature_cache
from dfb_ood.harness.train import TrainResult, train_network
from dfb_ood.networks import (
    OODNet,
    create_network,
    dfb_from_pretrained,
    from_classifier,
    load_checkpoint,
    save_checkpoint,
    sidecar_path,
    split_network,
)


def net_path(ctx: StageContext, kind: str) -> Path:
    """Where the network ``kind`` (``classifier`` or ``dfb``) is saved in the run folder."""
    return ctx.plan.run_dir / f"{kind}.safetensors"


def _save_net(ctx: StageContext, net: OODNet, kind: str, key: str) -> None:
    if not ctx.main:
        return
    plan = ctx.plan
    save_checkpoint(
        net,
        net_path(ctx, kind),
        input_size=plan.eval_size,
        normalization={"mean": list(plan.mean), "std": list(plan.std)},
        settings_hash=key,
        extra={"benchmark": plan.benchmark.name, "recipe": plan.recipe.name, "seed": plan.settings.seed},
    )


def stage_classifier(ctx: StageContext) -> OODNet:
    """Stage 1: load the user's K-class classifier, or train one with the recipe."""
    plan, settings = ctx.plan, ctx.plan.settings
    key = ctx.keys.classifier()
    path = net_path(ctx, "classifier")
    k = plan.benchmark.num_classes
    if ctx.ledger.done("classifier", key, path, sidecar_path(path)):
        return load_checkpoint(path, num_classes=k, background=False, device=plan.device)
    ctx.ledger.compute("classifier")
    started = time.perf_counter()
    if settings.checkpoint:
        ctx.reporter.message(f"stage 1: loading the classifier from {settings.checkpoint}")
        net = create_network(
            plan.network,
            k,
            weights=settings.checkpoint,
            load_head="require",
            **plan.recipe.network_options,
        )
        info: dict[str, Any] = {"source": str(settings.checkpoint)}
    else:
        ctx.reporter.message(f"stage 1: training the {plan.network} classifier ({plan.recipe.name})")
        torch.manual_seed(settings.seed)
        options = plan.recipe.network_options
        net = create_network(plan.network, k, pretrained=plan.recipe.pretrained, **options)
        _, labels = ctx.data.train_images()
        result = _train(ctx, net, torch.from_numpy(labels), mode="classifier", seed=settings.seed, source=net)
        info = {
            "images_per_s": result.images_per_s,
            "resumed_from": result.resumed_from,
            "final_loss": float(np.mean(result.losses[-20:])) if result.losses else None,
        }
    _save_net(ctx, net, "classifier", key)
    if ctx.main:
        (plan.run_dir / "classifier.resume.pt").unlink(missing_ok=True)
    # the features stage, when it ran inside this one, is timed on its own
    ctx.timings["classifier"] = time.perf_counter() - started - ctx.timings.get("features", 0.0)
    files = [path, sidecar_path(path)]
    ctx.ledger.mark("classifier", key, files=files, seconds=ctx.timings["classifier"], **info)
    return net.to(plan.device).eval()


def stage_dense(ctx: StageContext, classifier: OODNet, masks: np.ndarray) -> OODNet:
    """Stage 3: the (K+1)-class DFB network, trained per pixel against the pseudo masks."""
    plan, settings = ctx.plan, ctx.plan.settings
    key = ctx.keys.dense()
    path = net_path(ctx, "dfb")
    k = plan.benchmark.num_classes
    if ctx.ledger.done("dense", key, path, sidecar_path(path)):
        return load_checkpoint(path, num_classes=k, background=True, device=plan.device)
    ctx.ledger.compute("dense")
    ctx.reporter.message("stage 3: training the (K+1)-class DFB network on the pseudo masks")
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    if plan.recipe.dense_init == "pretrained":  # the paper: the pretrained backbone, a fresh K+1 head
        net = dfb_from_pretrained(plan.network, k, pretrained=True, **plan.recipe.network_options)
    else:  # the trained classifier's backbone and K head rows, background row zero
        net = from_classifier(classifier.to("cpu"))
    result = _train(ctx, net, masks, mode="dense", seed=settings.seed + 1, source=classifier)
    _save_net(ctx, net, "dfb", key)
    if ctx.main:
        (plan.run_dir / "dfb.resume.pt").unlink(missing_ok=True)
    ctx.timings["dense"] = time.perf_counter() - started
    ctx.ledger.mark(
        "dense",
        key,
        files=[path, sidecar_path(path)],
        seconds=ctx.timings["dense"],
        images_per_s=result.images_per_s,
        resumed_from=result.resumed_from,
        final_loss=float(np.mean(result.losses[-20:])) if result.losses else None,
    )
    return net.to(plan.device).eval()


def _train(
    ctx: StageContext,
    net: OODNet,
    targets: torch.Tensor | np.ndarray,
    *,
    mode: str,
    seed: int,
    source: OODNet,
) -> TrainResult:
    """Train ``net`` in place on the ID train set: on the cached features of ``source``'s frozen
    part (cached recipes; the classifier, whose frozen part the DFB net shares), else on the images.

    ``targets`` are labels or masks; masks may be memory-mapped (``masks.npy``): the image
    loop reads a batch of rows at a time, the cached loop (features in memory) reads them whole.
    """
    plan = ctx.plan
    checkpoint = plan.run_dir / ("classifier.resume.pt" if mode == "classifier" else "dfb.resume.pt")
    if plan.cached:
        cache = feature_cache(ctx, source, split_network(source, plan.recipe.trainable))
        return train_on_features(
            net,
            split_network(net, plan.recipe.trainable),
            cache,
            targets if isinstance(targets, torch.Tensor) else torch.from_numpy(np.array(targets)),
            plan.recipe,
            mode=mode,  # type: ignore[arg-type]
            device=plan.device,
            seed=seed,
            checkpoint=checkpoint,
            reporter=ctx.reporter,
        )
    images, _ = ctx.data.train_images()
    return train_network(
        net,
        images,
        targets,
        plan.recipe,
        mode=mode,  # type: ignore[arg-type]
        mean=plan.mean,
        std=plan.std,
        device=plan.device,
        seed=seed,
        checkpoint=checkpoint,
        reporter=ctx.reporter,
    )
