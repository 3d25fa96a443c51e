"""CAM pseudo masks on a 4x4 feature map: normalisation and threshold, chosen on ID-val data only.

Why: the cached-feature recipe (``frozen``: a frozen EfficientNet-Lite0 at 64 px, output stride 16)
computes its CAMs from 4x4 feature maps. The release's procedure divides the summed, rectified
class map by its maximum ("max"); on so coarse a map the class logit is rarely zero anywhere, so
most pixels land above the threshold and the masks become almost all foreground. Per-image
min-max normalisation ("minmax") keeps the contrast. This script measures both, for thresholds
theta in a grid, so that the recipe's default rests on numbers rather than on a guess.

What it does, for one or more benchmarks:

1. trains the recipe's classifier with the harness itself (``Pipeline(...).run(until="classifier")``
   into a temporary folder, or into ``--out`` to keep or reuse it);
2. passes the ID **val** images (and their mirrors) through the frozen backbone and computes their
   CAMs for their labels from the 4x4 maps, as ``harness.cached.cached_cams`` does for the train
   images, with normalise "max" and "minmax"; thresholds them at every theta;
3. for each setting reports the mean background fraction, the shares of all-foreground and
   all-background masks, whether ``harness.masks`` calls the set degenerate (``FOREGROUND_BAND``,
   ``DEGENERATE_IMAGE_SHARE``), and the foreground IoU / precision / recall against object masks
   of the val images: the true masks where the benchmark generates them (``shapes``, regenerated
   from the benchmark's own set parameters and checked pixel for pixel against the loaded images),
   else proxy masks, the pixels brighter than ``--proxy-level`` (of 255), used only when the images
   have a dark background (at least 80% of their border pixels that dark, as in Fashion-MNIST); and
   the lift, precision over the object pixel share: 1 is a mask placed at random, below 1 a mask
   that prefers the background (the rule does not use it; it says whether a choice means much);
4. for reference, the image CAMs of ``class_activation_maps`` (one scale, and the release's four
   scales 1, 0.5, 1.5, 2; each with its mirror) on the first ``--image-cam-images`` val images:
   what ``trainable: all`` recipes use; a cached recipe cannot (each scale is a backbone pass).

Selection rule (ID-val only; no OOD set is loaded or looked at; see RULE). Candidates are the
cached CAM settings (the only ones a cached recipe uses by default). The normalisation is the one
whose masks at the paper's theta 0.5 are not degenerate; the threshold stays the paper's 0.5 unless
another one localises the objects better than chance on every benchmark with object masks. Why
not "the highest IoU": when the masks do not find the objects (lift below 1, as measured on 4x4
maps), IoU only grows as the masks approach all-foreground, so it would pick the edge of the
non-degenerate region rather than anything the data supports.

Any benchmark works (shipped names or YAMLs); the default is the built-in real-image
``fmnist_mini``. Writes ``docs/results/cam_normalisation.json``; a run replaces the entries of its
benchmarks (keyed by benchmark name) and keeps the others (each entry has its own date and
command), then re-applies the rule to all of them. The committed record holds ``shapes`` and
``fmnist`` (fmnist-ood, the small real-image benchmark in OpenOOD layout that ``fmnist_mini`` is
drawn from: ``--benchmark shapes path/to/fmnist-ood/benchmark.yaml``).

    python benchmarks/cam_normalisation.py [--benchmark shapes fmnist_mini]
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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tiny_config import code_version, machine_environment  # benchmarks/ is the script's folder

from dfb_ood.harness.augment import evaluation_batches
from dfb_ood.harness.cached import FeatureCache, cached_cams, cached_predictions, extract_features
from dfb_ood.harness.masks import (
    DEGENERATE_IMAGE_SHARE,
    FOREGROUND_BAND,
    mask_agreement,
    mask_stats,
    masks_from_cams,
)
from dfb_ood.harness.run import Pipeline
from dfb_ood.harness.settings import BenchSettings
from dfb_ood.networks import DEFAULT_SCALES, class_activation_maps, split_network
from dfb_ood.networks.layers import gaussian_blur

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "results" / "cam_normalisation.json"
THETAS = (0.3, 0.4, 0.5, 0.6, 0.7)
NORMALISE = ("max", "minmax")
DARK_BORDER_SHARE = 0.8  # proxy object masks only for images whose border is this dark
RULE = (
    "ID val only. Candidates: cached-feature CAMs (4x4 map + mirror), normalise in {max, minmax} x theta. "
    "Start from the paper's theta 0.5. Normalisation: the one whose masks at theta 0.5 are not degenerate "
    "(harness.masks) on any benchmark; if both qualify, the higher mean lift. Threshold: the paper's 0.5, "
    "unless other non-degenerate thresholds localise the objects better than chance (lift > 1 on every "
    "benchmark with object masks): then the one with the highest mean lift."
)


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """Each map rescaled to [0, 1]; a flat map becomes zero (as networks.cam does)."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-30), torch.zeros_like(maps))


@torch.no_grad()
def image_cams(
    pipeline: Pipeline, net: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, scales: tuple
) -> dict[str, torch.Tensor]:
    """``harness.masks.compute_cams`` for normalise "max" and "minmax" from one set of network passes.

    Dividing by the maximum is a positive scaling, so min-max normalising the "max" map gives the
    "minmax" map; the recipe's blur (if any) and the resize to the stored grid follow, as there.
    """
    sigma = pipeline.recipe.cam.sigma
    height, width = images.shape[-2:]
    out = {name: torch.empty(images.shape[0], height, width) for name in NORMALISE}
    batches = evaluation_batches(
        images, mean=pipeline.mean, std=pipeline.std, size=pipeline.eval_size, device=pipeline.device,
        batch_size=256,
    )  # fmt: skip
    for start, batch in batches:
        by_max = class_activation_maps(
            net, batch, targets[start : start + batch.shape[0]].to(pipeline.device), scales=scales,
            flip=pipeline.recipe.cam.flip, normalise="max",
        )  # fmt: skip
        for name in NORMALISE:
            maps = by_max if name == "max" else _min_max(by_max)
            if sigma:
                maps = _min_max(gaussian_blur(maps, float(sigma)))
            if maps.shape[-2:] != (height, width):
                maps = F.interpolate(
                    maps[:, None], size=(height, width), mode="bilinear", align_corners=False
                )
                maps = maps[:, 0]
            out[name][start : start + batch.shape[0]] = maps.float().cpu()
    return out


def object_masks(pipeline: Pipeline, images: torch.Tensor, proxy_level: int) -> tuple[np.ndarray | None, str]:
    """Object masks of the ID val images and where they come from (``None``: none to be had)."""
    spec = pipeline.benchmark.val
    if spec.type == "shapes":
        from dfb_ood.harness.data.shapes import generate_set

        params = spec.params
        generated, _, truth = generate_set(
            params["set"], params["count"], params["seed"], params["size"], return_masks=True
        )
        subset = params.get("subset")
        if subset is not None:
            generated, truth = generated[subset[0] : subset[1]], truth[subset[0] : subset[1]]
        if not np.array_equal(generated, images.permute(0, 2, 3, 1).numpy()):
            raise SystemExit(
                f"regenerated shapes set {params['set']!r} (count {params['count']}, seed {params['seed']}, "
                f"size {params['size']}) differs from the val images the pipeline loaded"
            )
        return truth, f"true object masks (shapes set {params['set']!r}, regenerated and checked)"
    gray = images.float().mean(dim=1)
    border = torch.cat([gray[:, 0], gray[:, -1], gray[:, :, 0], gray[:, :, -1]], dim=1)
    dark = float((border <= proxy_level).float().mean())
    if dark < DARK_BORDER_SHARE:
        return None, f"none (only {dark:.0%} of border pixels are dark: no proxy)"
    truth = (gray > proxy_level).numpy()
    return truth, f"proxy: pixels brighter than {proxy_level}/255 ({dark:.0%} of border pixels dark)"


def score_rows(
    source: str, cams: dict[str, torch.Tensor], targets: torch.Tensor, k: int, truth: np.ndarray | None
) -> list[dict[str, Any]]:
    rows = []
    for normalise, maps in cams.items():
        for theta in THETAS:
            masks = masks_from_cams(maps, targets[: maps.shape[0]], theta, k)
            stats = mask_stats(masks, k)
            row: dict[str, Any] = {
                "source": source,
                "normalise": normalise,
                "theta": theta,
                "images": stats.count,
                "mean_background": round(1.0 - stats.mean_foreground, 4),
                "all_foreground_share": round(stats.all_foreground / stats.count, 4),
                "all_background_share": round(stats.all_background / stats.count, 4),
                "degenerate": stats.degenerate,
            }
            if truth is not None:
                agreement = mask_agreement(masks, truth[: maps.shape[0]], k)
                row.update({name: round(value, 4) for name, value in agreement.items()})
                # a mask placed at random is as precise as the object pixel share: lift 1
                share = max(float(truth[: maps.shape[0]].mean()), 1e-9)
                row["lift"] = round(agreement["precision"] / share, 3)
            rows.append(row)
    return rows


def choose(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The rule applied to one benchmark's rows (see RULE)."""
    return joint_choice({"benchmark": {"rows": rows}})


def joint_choice(entries: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The recipe default over every benchmark entry (see RULE); None when nothing qualifies."""
    by_setting: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for entry in entries.values():
        for row in entry["rows"]:
            if row["source"] == "cached":
                by_setting.setdefault((row["normalise"], row["theta"]), []).append(row)
    fine = {
        setting: rows
        for setting, rows in by_setting.items()
        if len(rows) == len(entries) and not any(r["degenerate"] for r in rows)
    }

    def mean_lift(rows: list[dict[str, Any]]) -> float:
        lifts = [r["lift"] for r in rows if r.get("lift") is not None]
        return float(np.mean(lifts)) if lifts else 0.0

    at_paper = [setting for setting in fine if setting[1] == 0.5]
    if not at_paper:
        return None
    normalise = max(at_paper, key=lambda setting: mean_lift(fine[setting]))[0]
    better = {
        setting: rows
        for setting, rows in fine.items()
        if setting[0] == normalise
        and all(r.get("lift", 0.0) > 1.0 for r in rows if "lift" in r)
        and any("lift" in r for r in rows)
    }
    setting = max(better, key=lambda s: mean_lift(better[s])) if better else (normalise, 0.5)
    rows = fine[setting]
    return {
        "normalise": setting[0],
        "theta": setting[1],
        "benchmarks": list(entries),
        "iou": {name: row.get("iou") for name, row in zip(entries, rows)},
        "lift": {name: row.get("lift") for name, row in zip(entries, rows)},
    }


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'source':<22}{'norm':<8}{'theta':>6}{'images':>7}{'backgr':>8}{'all-fg':>8}{'all-bg':>8}"
        f"{'degen':>7}{'IoU':>7}{'prec':>7}{'recall':>7}{'lift':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        agreement = "".join(
            f"{r[k]:>7.2f}" if k in r else f"{'-':>7}" for k in ("iou", "precision", "recall", "lift")
        )
        lines.append(
            f"{r['source']:<22}{r['normalise']:<8}{r['theta']:>6.1f}{r['images']:>7}{r['mean_background']:>8.1%}"
            f"{r['all_foreground_share']:>8.1%}{r['all_background_share']:>8.1%}"
            f"{'yes' if r['degenerate'] else 'no':>7}{agreement}"
        )
    return "\n".join(lines)


def study(benchmark: str, args: argparse.Namespace, work: Path) -> tuple[str, dict[str, Any]]:
    started = time.perf_counter()
    folder = Path(args.out) if args.out else work
    out = folder / Path(benchmark).parent.name if benchmark.endswith(".yaml") else folder / benchmark
    settings = BenchSettings(
        benchmark=benchmark, recipe=args.recipe, data_root=args.data_root, device=args.device, out=out,
        quiet=True, seed=args.seed, steps=args.steps,
    )  # fmt: skip
    pipeline = Pipeline(settings)
    recipe = pipeline.recipe
    name = pipeline.benchmark.name
    if recipe.trainable == "all":
        raise SystemExit(f"recipe {recipe.name!r} does not train on cached features (trainable: all)")
    print(f"== {name}: training the {recipe.name} classifier into {out} ...", flush=True)
    pipeline.run(until="classifier")
    net = pipeline.stage_classifier()  # done: loaded back from the run folder
    train_s = time.perf_counter() - started
    k = pipeline.benchmark.num_classes
    images, labels = pipeline.arrays("val")
    labels_t = torch.from_numpy(labels)
    split = split_network(net, recipe.trainable)
    features = [
        extract_features(
            split,
            net,
            images,
            mean=pipeline.mean,
            std=pipeline.std,
            size=pipeline.eval_size,
            device=pipeline.device,
            mirrored=mirrored,
        )
        for mirrored in (False, True)[: 1 + recipe.cam.flip]
    ]
    cache = FeatureCache(*features)
    predicted = cached_predictions(net, split, cache, pipeline.device)
    accuracy = float((predicted == labels_t).float().mean())
    targets = predicted if recipe.cam.target == "prediction" else labels_t
    grid = tuple(images.shape[-2:])
    feature_map = tuple(features[0].shape[-2:])
    truth, truth_source = object_masks(pipeline, images, args.proxy_level)
    cams = {
        normalise: cached_cams(
            net,
            split,
            cache,
            targets,
            size=grid,
            normalise=normalise,
            sigma=recipe.cam.sigma,
            device=pipeline.device,
        )
        for normalise in NORMALISE
    }
    rows = score_rows("cached", cams, targets, k, truth)
    count = min(args.image_cam_images, images.shape[0])
    if count:
        for label, scales in (("image, scale 1", (1.0,)), ("image, 4 scales", tuple(DEFAULT_SCALES))):
            maps = image_cams(pipeline, net, images[:count], targets[:count], scales)
            rows += score_rows(label, maps, targets, k, truth)
    chosen = choose(rows)
    runtime = time.perf_counter() - started
    current = next(
        r for r in rows if r["source"] == "cached" and r["normalise"] == "max" and r["theta"] == 0.5
    )
    print(
        f"{name}: {images.shape[0]} ID val images, {grid[0]}x{grid[1]} px stored, {pipeline.eval_size} px to "
        f"the network, {feature_map[0]}x{feature_map[1]} feature map; classifier ID-val accuracy "
        f"{accuracy:.1%}; object masks: {truth_source}"
    )
    print(table(rows))
    print(
        f"current procedure (max, theta 0.5) on the {feature_map[0]}x{feature_map[1]} map: "
        f"{current['mean_background']:.1%} background, {current['all_foreground_share']:.1%} of masks all "
        f"foreground; degenerate: {'yes' if current['degenerate'] else 'no'}"
    )
    if truth is not None:
        print(
            f"object pixels: {float(truth.mean()):.1%} of the val pixels; lift = precision / that share "
            "(1: no better than a mask placed at random)"
        )
    if chosen is None:
        print(f"{name}: every cached setting is degenerate; nothing to choose")
    else:
        print(f"{name}: chosen by the rule: normalise {chosen['normalise']}, theta {chosen['theta']}")
        lift = chosen["lift"]["benchmark"]
        if lift is not None and lift <= 1.0:
            print(
                f"{name}: note: its masks are no more precise than chance (lift {lift:.2f}): "
                f"the {feature_map[0]}x{feature_map[1]} CAMs do not find the objects here"
            )
    print(f"{name}: runtime {runtime:.0f} s (classifier stage {train_s:.0f} s)", flush=True)
    return name, {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/cam_normalisation.py", *sys.argv[1:]]),
        "benchmark": benchmark,
        "recipe": recipe.name,
        "seed": args.seed,
        "classifier_steps": recipe.steps,
        "val_images": int(images.shape[0]),
        "stored_size": list(grid),
        "eval_size": pipeline.eval_size,
        "feature_map": list(feature_map),
        "classifier_val_accuracy": round(accuracy, 4),
        "cam_target": recipe.cam.target,
        "cam_sigma": recipe.cam.sigma,
        "object_masks": truth_source,
        "object_pixel_share": None if truth is None else round(float(truth.mean()), 4),
        "image_cam_images": count,
        "rows": rows,
        "chosen": None if chosen is None else {"normalise": chosen["normalise"], "theta": chosen["theta"]},
        "runtime_s": round(runtime, 1),
        "classifier_stage_s": round(train_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--benchmark", nargs="+", default=["fmnist_mini"], help="names or YAMLs (default: fmnist_mini)"
    )
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--recipe", default="frozen", help="a cached-feature recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="classifier steps (default: the recipe's)")
    parser.add_argument("--out", default=None, help="folder for the run folders (kept; reused when done)")
    parser.add_argument(
        "--image-cam-images", type=int, default=200, help="val images for image CAMs (0: none)"
    )
    parser.add_argument("--proxy-level", type=int, default=13, help="proxy object masks: gray level (of 255)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the record ('' = nowhere)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"degenerate (harness.masks): mean foreground outside {FOREGROUND_BAND} or more than "
        f"{DEGENERATE_IMAGE_SHARE:.0%} of masks one label; torch threads {torch.get_num_threads()}"
    )
    print(f"rule: {RULE}")
    work = Path(tempfile.mkdtemp(prefix="cam_normalisation_"))
    try:
        entries = {}
        for benchmark in args.benchmark:
            name, entry = study(benchmark, args, work)
            entries[name] = entry
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record: dict[str, Any] = {}
    path = Path(args.json) if args.json else None
    if path is not None and path.is_file():
        record = json.loads(path.read_text())
    benchmarks = {**record.get("benchmarks", {}), **entries}  # this run's entries replace earlier ones
    default = joint_choice(benchmarks)
    print()
    if default is None:
        print(f"recipe default over {list(benchmarks)}: none (no setting is non-degenerate on all)")
    else:
        scores = ", ".join(
            f"{b} IoU {v:.2f} lift {default['lift'][b]:.2f}" if v is not None else f"{b} -"
            for b, v in default["iou"].items()
        )
        print(
            f"recipe default over {list(benchmarks)}: normalise {default['normalise']}, theta "
            f"{default['theta']} (ID val: {scores})"
        )
    if path is not None:
        record = {
            "generated_by": "benchmarks/cam_normalisation.py",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "environment": machine_environment(),
            "code": code_version(),
            "rule": RULE,
            "thetas": list(THETAS),
            "degenerate_definition": {
                "foreground_band": list(FOREGROUND_BAND),
                "degenerate_image_share": DEGENERATE_IMAGE_SHARE,
            },
            "benchmarks": benchmarks,
            "default": default,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
