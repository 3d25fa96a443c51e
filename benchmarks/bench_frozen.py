"""How much the cached-feature recipe (``trainable: head``) saves over full fine-tuning, in one run.

Why: the ``frozen`` recipe passes every training image (and its mirror) through the frozen
ImageNet backbone once and then trains only linear heads on the cached feature maps; the claim is
that this turns a schedule a CPU cannot afford into one it runs in minutes. This script measures,
on the same images, with the same network and batch size, and with the torch threads given:

(a) feature extraction (``harness.cached.extract_features``), plain and mirrored, in images/s;
(b) head training on cached features (``train_on_features``): the classifier (a linear head on
    pooled features) and the dense stage (a per-pixel (K+1) head on the cached maps, logits
    upsampled to the mask grid; masks from the cached CAMs of the head just trained);
(c) full fine-tuning (``harness.train.train_network``, every weight trainable, the recipe's flip
    and its evaluation size as the training size) for the classifier and the dense stage. A CPU
    manages only a few of these steps in a benchmark's time, so ``--full-steps`` steps are
    timed (after one warm-up step) and the recipe's schedule is extrapolated from them;
(d) the recipe's whole schedule both ways, for the benchmark's full ID train set of N images:
    cached = N / plain rate + N / mirrored rate + steps * batch / head rate (both stages);
    full = steps * batch / full rate (both stages). The masks stage is left out of both.

Rates are measured on ``--images`` ID train images (default 2048, or the whole train set when it
is smaller); (d) scales them to N. Any benchmark works (a shipped name or a YAML); the default is
the built-in real-image ``fmnist_mini`` (N = 2,000). The committed record was measured on
fmnist-ood (N = 10,000: ``--benchmark path/to/fmnist-ood/benchmark.yaml``), the small real-image
benchmark in OpenOOD layout that ``fmnist_mini`` is drawn from; its ``settings`` say which.
Writes ``docs/results/bench_frozen.json`` (``--json ''``: nowhere).

    python benchmarks/bench_frozen.py [--benchmark fmnist_mini] [--images 2048] [--threads 2]
"""

from __future__ import annotations

import os

# Sleeping OpenMP waits, set before torch loads its runtime (see harness/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from tiny_config import code_version, machine_environment  # benchmarks/ is the script's folder

from dfb_ood.harness.cached import FeatureCache, cached_cams, extract_features, train_on_features
from dfb_ood.harness.masks import mask_stats, masks_from_cams
from dfb_ood.harness.run import Pipeline
from dfb_ood.harness.settings import BenchSettings
from dfb_ood.harness.train import train_network
from dfb_ood.networks import create_network, from_classifier, split_network

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "results" / "bench_frozen.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="fmnist_mini", help="name or YAML (default: fmnist_mini)")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--recipe", default="frozen", help="a cached-feature recipe (trainable: head)")
    parser.add_argument("--images", type=int, default=2048, help="ID train images the rates are measured on")
    parser.add_argument("--head-steps", type=int, default=300, help="timed steps of each head training")
    parser.add_argument("--full-steps", type=int, default=3, help="timed full fine-tuning steps per stage")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the record ('' = nowhere)")
    args = parser.parse_args()
    if args.images < 1 or args.head_steps < 1 or args.full_steps < 1:
        parser.error("--images, --head-steps and --full-steps must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_frozen_"))
    try:
        settings = BenchSettings(
            benchmark=args.benchmark,
            recipe=args.recipe,
            data_root=args.data_root,
            device=args.device,
            out=work / "run",
            quiet=True,
        )
        pipeline = Pipeline(settings)  # loads the benchmark and the recipe; nothing runs or is written
        recipe = pipeline.recipe
        if recipe.trainable != "head":
            parser.error(f"recipe {recipe.name!r} has trainable: {recipe.trainable}; this compares 'head'")
        all_images, all_labels = pipeline.arrays("train")
        n_train = int(all_images.shape[0])
        count = min(args.images, n_train)
        if count < recipe.batch_size:
            parser.error(f"--images {count} is less than one batch of {recipe.batch_size}")
        images = all_images[:count]
        labels = torch.from_numpy(all_labels[:count])
        k = pipeline.benchmark.num_classes
        size = pipeline.eval_size
        batch = recipe.batch_size
        print(
            f"{pipeline.benchmark.name}: {count} of {n_train} ID train images "
            f"({images.shape[-1]} px stored, {size} px to the network); {recipe.name}: {recipe.network} "
            f"{recipe.network_options}, batch {batch}, {recipe.steps} steps per stage; device {device}, "
            f"torch threads {torch.get_num_threads()}",
            flush=True,
        )

        # (a) feature extraction, plain and mirrored (after a warm-up call on one batch)
        torch.manual_seed(0)
        net = create_network(recipe.network, k, pretrained=recipe.pretrained, **recipe.network_options)
        split = split_network(net, recipe.trainable)
        norm = {"mean": pipeline.mean, "std": pipeline.std, "size": size, "device": device}
        extract_features(split, net, images[:256], batch_size=256, **norm)
        extract_s = {}
        arrays = {}
        for mirrored in (False, True):
            tick = time.perf_counter()
            arrays[mirrored] = extract_features(split, net, images, mirrored=mirrored, batch_size=256, **norm)
            extract_s[mirrored] = time.perf_counter() - tick
        cache = FeatureCache(arrays[False], arrays[True] if recipe.flip else None)
        print(f"features {tuple(arrays[False].shape[1:])} per image (float16)", flush=True)

        # (b) head training on the cached features: classifier, then the dense stage on CAM masks
        head_recipe = recipe.with_overrides(steps=args.head_steps, checkpoint_every_s=1e9)
        cls = train_on_features(
            net, split, cache, labels, head_recipe, mode="classifier", device=device, seed=0,
            checkpoint=work / "classifier.resume.pt",
        )  # fmt: skip
        cams = cached_cams(
            net, split, cache, labels, size=tuple(images.shape[-2:]), normalise=recipe.cam.normalise,
            sigma=recipe.cam.sigma, device=device,
        )  # fmt: skip
        masks = masks_from_cams(cams, labels, recipe.cam.theta, k)
        stats = mask_stats(masks, k)
        dense_net = from_classifier(net.to("cpu"))
        dense = train_on_features(
            dense_net, split_network(dense_net, recipe.trainable), cache, torch.from_numpy(masks),
            head_recipe, mode="dense", device=device, seed=1, checkpoint=work / "dfb.resume.pt",
        )  # fmt: skip

        # (c) full fine-tuning of the same network: one warm-up step, then --full-steps timed steps
        full_recipe = recipe.with_overrides(trainable="all", resize=size, crop=size, checkpoint_every_s=1e9)
        full_rate = {}
        for mode, targets in (("classifier", labels), ("dense", torch.from_numpy(masks))):
            torch.manual_seed(0)
            full = create_network(recipe.network, k, pretrained=recipe.pretrained, **recipe.network_options)
            if mode == "dense":
                full = from_classifier(full)
            for steps, tag in ((1, "warm-up"), (args.full_steps, "timed")):
                result = train_network(
                    full, images, targets, full_recipe.with_overrides(steps=steps), mode=mode,
                    mean=pipeline.mean, std=pipeline.std, device=device, seed=0,
                    checkpoint=work / f"full-{mode}-{tag}.resume.pt",
                )  # fmt: skip
            full_rate[mode] = result.images_per_s
            print(f"full fine-tuning, {mode}: {result.seconds / args.full_steps:.2f} s per step", flush=True)

        # (d) the recipe's schedule on the full train set, both ways
        rates = {
            "extract_plain": count / extract_s[False],
            "extract_mirrored": count / extract_s[True],
            "head_classifier": cls.images_per_s,
            "head_dense": dense.images_per_s,
            "full_classifier": full_rate["classifier"],
            "full_dense": full_rate["dense"],
        }
        images_per_stage = recipe.steps * batch
        cached_parts = {
            "extract_plain": n_train / rates["extract_plain"],
            "extract_mirrored": n_train / rates["extract_mirrored"] if recipe.flip else 0.0,
            "head_classifier": images_per_stage / rates["head_classifier"],
            "head_dense": images_per_stage / rates["head_dense"],
        }
        full_parts = {
            "full_classifier": images_per_stage / rates["full_classifier"],
            "full_dense": images_per_stage / rates["full_dense"],
        }
        cached_total = sum(cached_parts.values())
        full_total = sum(full_parts.values())
        speedup = full_total / cached_total

        print()
        rows = [
            ("extract features (plain)", "extract_plain", f"{count} images"),
            ("extract features (mirrored)", "extract_mirrored", f"{count} images"),
            ("head: classifier (cached)", "head_classifier", f"{args.head_steps} steps"),
            ("head: dense (cached)", "head_dense", f"{args.head_steps} steps"),
            ("full: classifier", "full_classifier", f"{args.full_steps} steps"),
            ("full: dense", "full_dense", f"{args.full_steps} steps"),
        ]
        print(f"{'stage':<30}{'images/s':>10}{'measured on':>15}{'schedule s':>12}")
        parts = {**cached_parts, **full_parts}
        for name, key, measured in rows:
            print(f"{name:<30}{rates[key]:>10,.0f}{measured:>15}{parts[key]:>12,.1f}")
        extraction = cached_parts["extract_plain"] + cached_parts["extract_mirrored"]
        print()
        print(
            f"schedule ({recipe.steps} steps x {batch} per stage, N = {n_train}): cached recipe "
            f"{cached_total:,.0f} s (extraction {extraction:,.0f} s), "
            f"full fine-tuning {full_total:,.0f} s ({full_total / 3600:.1f} h, extrapolated from "
            f"{args.full_steps} timed steps per stage)"
        )
        print(f"speed-up of the cached recipe: {speedup:,.0f}x")
        print(
            f"(dense masks: {stats.describe()}; head loss classifier {cls.losses[-1]:.3f}, "
            f"dense {dense.losses[-1]:.3f})"
        )
        runtime = time.perf_counter() - started
        print(f"runtime {runtime:.0f} s")
        if args.json:
            record = {
                "generated_by": "benchmarks/bench_frozen.py",
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(["python benchmarks/bench_frozen.py", *sys.argv[1:]]),
                "environment": machine_environment(),
                "code": code_version(),
                "settings": {
                    "benchmark": pipeline.benchmark.name,
                    "recipe": recipe.name,
                    "network": recipe.network,
                    "network_options": recipe.network_options,
                    "device": str(device),
                    "images": count,
                    "train_images": n_train,
                    "stored_size": int(images.shape[-1]),
                    "eval_size": size,
                    "batch_size": batch,
                    "recipe_steps": recipe.steps,
                    "head_steps": args.head_steps,
                    "full_steps": args.full_steps,
                    "flip": recipe.flip,
                },
                "images_per_s": {key: round(value, 2) for key, value in rates.items()},
                "schedule_s": {
                    "cached": {key: round(value, 2) for key, value in cached_parts.items()},
                    "full": {key: round(value, 2) for key, value in full_parts.items()},
                    "cached_total": round(cached_total, 1),
                    "full_total": round(full_total, 1),
                    "full_extrapolated_from_steps": args.full_steps,
                },
                "speedup": round(speedup, 1),
                "runtime_s": round(runtime, 1),
            }
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2) + "\n")
            print(f"wrote {path}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
