"""Stage 4: one forward pass per (network, dataset), cached, and the detectors' own passes.

Detectors read cached outputs (logits, features, the head) instead of the networks, so a new
detector costs no pass. Each set's pass is keyed on what that set holds, so an edited list or a
replaced image recomputes that set alone; ODIN-like detectors' perturbed passes are cached the
same way, one folder per (detector settings, network).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.harness import distributed
from dfb_ood.harness.detector_spec import CLASSIFIER
from dfb_ood.harness.errors import RunFolderError
from dfb_ood.harness.evaluate import SetOutputs
from dfb_ood.harness.io import content_hash
from dfb_ood.harness.names import join_inside
from dfb_ood.harness.outputs import (
    count_nonfinite,
    forward_outputs,
    head_arrays,
    load_outputs,
    perturbed_logits,
    save_outputs,
)
from dfb_ood.harness.partial_pass import PartialPass
from dfb_ood.harness.rundata import ROLE_LABELS
from dfb_ood.harness.stage_context import StageContext
from dfb_ood.harness.stage_train import net_path
from dfb_ood.networks import OODNet
from dfb_ood.postprocessors.base import Outputs, Postprocessor

PERTURBED_BATCH = 128  # images per batch of a detector's own pass (ODIN's gradients, RankFeat's SVDs)
PerturbedFn = Callable[[Postprocessor, str, str], Outputs]


def stale_sets(ctx: StageContext, kind: str, key: str, paths: Mapping[str, Path]) -> list[str]:
    """The sets whose cached pass of ``kind`` must be (re)computed, each with its reason said.

    All of them when the network or the benchmark definition changed (or nothing is cached);
    otherwise exactly the sets whose data changed, whose file is damaged, or that are new.
    Rank 0 decides for every rank. A re-opened (read-only) run cannot recompute: it stops,
    naming the sets.
    """
    stale: list[str] | None = None
    if ctx.main:
        record = ctx.ledger.records().get(f"outputs_{kind}") or {}
        recorded = record.get("sets") if record.get("key") == key else None
        if not isinstance(recorded, dict):
            stale = list(paths)
            reasons = []
        else:
            stale, reasons = [], []
            roles = ctx.data.specs
            for name, path in paths.items():
                if name not in recorded:
                    why = f"set {name!r} has no cached {kind} outputs"
                elif recorded[name] != ctx.keys.outputs_set(kind, name):
                    why = f"{ROLE_LABELS[roles[name][0]]} set {name!r} changed (its list or image files)"
                else:
                    problems = ctx.ledger.damaged(record.get("files"), [path])
                    why = "; ".join(problems) if problems else ""
                if why:
                    stale.append(name)
                    reasons.append(why)
        if stale and ctx.read_only and record:
            raise RunFolderError(
                f"{ctx.plan.run_dir}: the cached {kind} outputs are out of date or damaged "
                f"({'; '.join(reasons) or 'made for other networks or another benchmark definition'}); "
                "re-run the `harness bench` command that made this run (its options are in run.json)"
            )
        for why in reasons:
            ctx.reporter.message(f"{why}: recomputing its {kind} outputs", label="warning:")
    return list(distributed.from_main(stale))


def stage_outputs(ctx: StageContext, nets: dict[str, OODNet]) -> dict[str, SetOutputs]:
    """Stage 4: one forward pass per (network, dataset), cached; loaded back as Outputs.

    Each set's pass is keyed on its own (:meth:`StageKeys.outputs_set`), so an edited list or a
    replaced image recomputes that set's pass alone. Each rank passes its contiguous shard of
    every set into memory maps; rank 0 gathers the shards into its maps of the whole set a
    bounded piece at a time (:func:`harness.distributed.gather_rows_into`), so no rank holds a
    set's outputs in memory, then writes and loads them (the other ranks get an empty dict:
    they do not evaluate).
    """
    started = time.perf_counter()
    result: dict[str, SetOutputs] = {}
    specs = ctx.data.specs
    for kind, net in nets.items():
        key = ctx.keys.outputs(kind)
        folder = ctx.ledger.own_folder(f"outputs/{kind}")
        paths = {name: join_inside(folder, name, what="set folder") for name in specs}
        stale = stale_sets(ctx, kind, key, paths)
        if stale:
            ctx.ledger.compute(f"outputs ({kind})")
            for name in stale:
                _pass_set(ctx, kind, net, name, folder, paths[name])
            sets = {name: ctx.keys.outputs_set(kind, name) for name in paths}
            ctx.ledger.mark(f"outputs_{kind}", key, files=list(paths.values()), sets=sets)
        if not ctx.main:
            continue
        head = head_arrays(net)
        loaded = {name: load_outputs(path, head, background=net.background) for name, path in paths.items()}
        result[kind] = SetOutputs(
            train=loaded["train"],
            test=loaded["test"],
            val=loaded.get("val"),
            ood_val=loaded.get("ood_val"),
            ood={n: o for n, o in loaded.items() if specs[n][0] in ("near", "far")},
            groups={n: specs[n][0] for n in loaded if specs[n][0] in ("near", "far")},
        )
    ctx.timings["outputs"] = time.perf_counter() - started
    return result


def _pass_set(ctx: StageContext, kind: str, net: OODNet, name: str, folder: Path, path: Path) -> None:
    """One set's sharded pass of ``net``, gathered on rank 0, checked finite and saved at ``path``."""
    if _resumable(ctx):
        _resumable_pass(ctx, kind, net, name, path)
        return
    plan = ctx.plan
    images, labels = ctx.data.eval_images(name)
    n = len(labels)
    start, stop = distributed.shard_range(n)
    rows = ctx.data.scratch_rows(n)
    shapes = {"logits": (rows, net.num_outputs), "features": (rows, net.feature_dim)}
    with ctx.data.pass_arrays(folder, shapes) as scratch:
        logits, features = forward_outputs(
            net,
            images[start:stop],
            mean=plan.mean,
            std=plan.std,
            size=plan.eval_size,
            device=plan.device,
            batch_size=plan.settings.eval_batch_size,
            reporter=ctx.reporter,
            description=f"{kind} pass: {name}",
            into=(scratch["logits"][: stop - start], scratch["features"][: stop - start]),
        )
        for part, array in ((logits, "logits"), (features, "features")):
            whole = scratch[array] if ctx.main else None
            distributed.gather_rows_into(part, n, whole, dst=0)
        if ctx.main:
            check_finite(ctx, kind, name, scratch["logits"], scratch["features"])
            save_outputs(path, scratch["logits"], scratch["features"], labels)


def _resumable(ctx: StageContext) -> bool:
    """Whether this process keeps partial passes: one that writes its run folder, not under torchrun.

    Under torchrun each rank's shard would need its own record and a restart may change the world
    size, so a distributed pass (and a re-opened, read-only run's) starts from row 0 as before.
    """
    return ctx.main and not ctx.read_only and not distributed.world().distributed


def _resumable_pass(ctx: StageContext, kind: str, net: OODNet, name: str, path: Path) -> None:
    """One set's pass into partial arrays beside ``path``, resumed at the last chunk a killed run kept."""
    plan = ctx.plan
    images, labels = ctx.data.eval_images(name)
    n = len(labels)
    batch_size = plan.settings.eval_batch_size
    source = (ctx.keys.outputs(kind), ctx.keys.outputs_set(kind, name))
    key = content_hash("outputs pass", *source, batch_size, n)
    parts = {
        array: PartialPass(path.with_name(f"{path.name}.{array}.npy"), key, ctx.reporter)
        for array in ("logits", "features")
    }
    shapes = {"logits": (n, net.num_outputs), "features": (n, net.feature_dim)}
    resume = min(parts[array].start(shapes[array], np.float32) for array in parts)
    logits, features = forward_outputs(
        net,
        images,
        mean=plan.mean,
        std=plan.std,
        size=plan.eval_size,
        device=plan.device,
        batch_size=batch_size,
        reporter=ctx.reporter,
        description=f"{kind} pass: {name}",
        into=(parts["logits"].array, parts["features"].array),  # type: ignore[arg-type]
        resume=resume,
        rows_done=lambda rows: _chunk_done(list(parts.values()), rows),
    )
    check_finite(ctx, kind, name, logits, features)
    save_outputs(path, logits, features, labels)
    del logits, features
    for part in parts.values():
        part.remove()


def _chunk_done(parts: list[PartialPass], rows: int) -> None:
    """Rows ``[0, rows)`` of every array are filled: each records them once the first's chunk is full."""
    first = parts[0]
    first.done(rows)
    for part in parts[1:]:
        part.done(rows, force=first.rows_done == rows)


def perturbed_outputs(ctx: StageContext, nets: dict[str, OODNet]) -> PerturbedFn:
    """The callback that serves (and caches) detectors' own passes (ODIN, RankFeat) to evaluate."""
    plan = ctx.plan

    def fetch(detector: Postprocessor, kind: str, set_name: str) -> Outputs:
        base = getattr(detector, "base", detector)
        if hasattr(base, "input_std"):  # ODIN's perturbation is divided by the normalisation std
            base.input_std = tuple(plan.std)
        # one folder per (detector settings, network); each set's file keyed on what that set holds
        tag = content_hash(type(base).__name__, base.params(), ctx.keys.outputs(kind))
        source = ctx.keys.outputs_set(kind, set_name)
        key = content_hash(tag, source)
        folder = ctx.ledger.own_folder(f"outputs/{kind}/perturbed-{tag}")
        path = join_inside(folder, set_name, what="set folder")
        net = nets[kind]
        stage = f"{kind}/{path.parent.name}/{set_name}"
        if not ctx.ledger.done(stage, key, path, collective=False):  # rank 0 alone evaluates
            images, labels = ctx.data.eval_images(set_name)
            if _resumable(ctx):
                description = f"{base.name} pass ({kind}): {set_name}"
                _resumable_perturbed(ctx, base, net, description, (images, labels), path, key)
                ctx.ledger.mark(stage, key, files=[path], source=source)
                return load_outputs(path, head_arrays(net), background=net.background)
            with ctx.data.pass_arrays(path.parent, {"logits": (len(labels), net.num_outputs)}) as scratch:
                logits = perturbed_logits(
                    base,
                    net,
                    images,
                    mean=plan.mean,
                    std=plan.std,
                    size=plan.eval_size,
                    device=plan.device,
                    reporter=ctx.reporter,
                    description=f"{base.name} pass ({kind}): {set_name}",
                    into=scratch["logits"],
                )
                if ctx.read_only:  # a re-opened run is only read: the pass is used, not cached
                    weight, bias = head_arrays(net)
                    return Outputs(logits, None, labels, weight, bias, background=net.background)
                save_outputs(path, logits, None, labels)
            ctx.ledger.mark(stage, key, files=[path], source=source)
        return load_outputs(path, head_arrays(net), background=net.background)

    return fetch


def _resumable_perturbed(
    ctx: StageContext,
    base: Postprocessor,
    net: OODNet,
    description: str,
    data: tuple[Any, np.ndarray],
    path: Path,
    key: str,
) -> None:
    """A detector's own pass of one set into a partial array beside ``path``, resumed after a kill.

    ``description`` names the pass on its progress line, ``data`` is the set's (images, labels).
    """
    plan = ctx.plan
    images, labels = data
    n = len(labels)
    part_key = content_hash("perturbed pass", key, PERTURBED_BATCH, n)
    part = PartialPass(path.with_name(f"{path.name}.logits.npy"), part_key, ctx.reporter)
    resume = part.start((n, net.num_outputs), np.float32)
    logits = perturbed_logits(
        base,
        net,
        images,
        mean=plan.mean,
        std=plan.std,
        size=plan.eval_size,
        device=plan.device,
        batch_size=PERTURBED_BATCH,
        reporter=ctx.reporter,
        description=description,
        into=part.array,
        resume=resume,
        rows_done=part.done,
    )
    save_outputs(path, logits, None, labels)
    del logits
    part.remove()


def check_finite(
    ctx: StageContext, kind: str, set_name: str, logits: np.ndarray, features: np.ndarray
) -> None:
    """Refuse NaN / inf outputs before they are cached, naming the network that produced them."""
    bad = count_nonfinite(logits)  # in chunks: the outputs may be memory maps larger than memory
    bad_features = count_nonfinite(features)
    if not bad and not bad_features:
        return
    stage = "classifier" if kind == CLASSIFIER else "dense"
    checkpoint = ctx.plan.settings.checkpoint
    if kind == CLASSIFIER and checkpoint:
        source = f"the classifier loaded from --checkpoint {checkpoint}"
        advice = "check that checkpoint (it may hold NaN weights or belong to another network)"
    else:
        loss = ctx.ledger.records().get(stage, {}).get("final_loss")
        source = f"the {kind} network {net_path(ctx, kind)} (final training loss {loss})"
        advice = "its training diverged: lower the recipe's lr (or use fewer steps) and run into a new --out"
        if isinstance(loss, (int, float)) and np.isfinite(loss):  # trained fine: the file is what broke
            advice = (
                "its training ended with a finite loss, so the weights file itself is not the network "
                "trained (damaged or replaced): delete it and run the same command again to retrain it"
            )
    raise InputError(
        f"{source} gives {bad} non-finite logit(s) and {bad_features} non-finite feature value(s) on set "
        f"{set_name!r}; {advice}"
    )
