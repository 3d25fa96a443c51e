"""Evaluation images/s end to end (read the image list, decode, forward) vs the raw forward pass.

Needs a benchmark whose set is read from image files (an image list or an image folder): an
OpenOOD-layout benchmark YAML such as fmnist-ood's benchmark.yaml (Fashion-MNIST, 28x28 PNGs; the
numbers in docs/performance.md were measured on its test list). The built-in ``fmnist_mini`` will
not do: its images are arrays, with no files to decode or cache. Three numbers, measured in one
run: the network's forward pass on images already in memory; the same set from its files with an
empty decoded cache (decode every image); and again with the cache filled (``harness.data.cache``).
Target on a GPU: end to end >= 0.9x the raw forward with the cache.

    python benchmarks/bench_eval.py --benchmark PATH [--set test] [--network rv2_tiny] [--device cpu]
"""

from __future__ import annotations

import os

# Sleeping OpenMP waits, set before torch loads its runtime (see harness/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dfb_ood.harness.data import load_benchmark
from dfb_ood.harness.data.datasets import load_arrays
from dfb_ood.harness.outputs import forward_outputs
from dfb_ood.networks import create_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--benchmark", type=Path, required=True,
        help="a benchmark YAML whose set is read from image files (e.g. fmnist-ood's benchmark.yaml)",
    )  # fmt: skip
    parser.add_argument("--set", default="test")
    parser.add_argument("--network", default="rv2_tiny")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if not args.benchmark.is_file():
        raise SystemExit(f"no benchmark YAML at {args.benchmark}; pass --benchmark PATH")
    device = torch.device(args.device)
    benchmark = load_benchmark(args.benchmark)
    spec = benchmark.get_set(args.set)
    if spec.type not in ("imglist", "folder"):
        raise SystemExit(
            f"set {benchmark.name}/{spec.name} has type {spec.type}; this measures decoding and caching "
            "image files, so it needs an image-list or folder set (e.g. fmnist-ood's benchmark.yaml)"
        )
    net = create_network(args.network, benchmark.num_classes).to(device).eval()
    size = benchmark.image_size

    def forward(images: np.ndarray) -> None:
        tensor = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous()
        forward_outputs(net, tensor, mean=benchmark.mean, std=benchmark.std, size=size, device=device,
                        batch_size=args.batch)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with tempfile.TemporaryDirectory() as cache:
        os.environ["HARNESS_CACHE"] = cache
        images, _ = load_arrays(spec, benchmark)  # warm the file system and the cache once

        def empty_cache() -> None:
            for folder in Path(cache, "decoded").iterdir():
                for file in folder.iterdir():
                    file.unlink()

        def best_of(run, before=lambda: None, repeats: int = 3) -> float:  # robust to a busy machine
            times = []
            for _ in range(repeats):
                before()
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            return min(times)

        forward(images[: args.batch])  # warm-up
        raw = best_of(lambda: forward(images))
        cold = best_of(lambda: forward(load_arrays(spec, benchmark)[0]), before=empty_cache)
        warm = best_of(lambda: forward(np.array(load_arrays(spec, benchmark)[0])))
    n = len(images)
    print(
        f"device {device}, {args.network}, {benchmark.name}/{args.set}: {n:,} images at {size}px, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"raw forward (images in memory):     {n / raw:>10,.0f} images/s")
    print(f"end to end, decoding every file:     {n / cold:>10,.0f} images/s  ({raw / cold:.2f}x of raw)")
    print(f"end to end, decoded cache:           {n / warm:>10,.0f} images/s  ({raw / warm:.2f}x of raw)")


if __name__ == "__main__":
    main()
