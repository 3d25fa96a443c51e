"""Will decoding bound evaluation? Images/s of the imglist loader versus the same images in memory.

Needs a benchmark whose set is an image list of image files: an OpenOOD-layout benchmark YAML
such as fmnist-ood's benchmark.yaml (28x28 PNGs; the numbers in docs/performance.md were measured
on it). The built-in ``fmnist_mini`` will not do: its images are arrays, with no files to decode.
Reads the set through the image-list dataset (decode + fit per item, and in a DataLoader), through
``load_arrays`` (decode the whole set once), and from memory (``ArrayDataset`` and plain tensor
slicing), with and without the test transform's normalisation, on one intra-op thread.
``--size 128`` fits the images to 128x128 as the DFB protocol does, which adds Pillow resizing to
every decode.

    python benchmarks/bench_data.py --yaml PATH [--set test] [--size 28] [--workers 2] [--batch 256]
"""

from __future__ import annotations

import os

# Sleeping OpenMP waits, set before torch loads its runtime (see harness/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dfb_ood.harness.data import ArrayDataset, build_dataset, load_arrays, load_benchmark, test_transform
from dfb_ood.harness.data.transforms import normalize


def rate(label: str, count: int, seconds: float) -> float:
    per_second = count / seconds
    print(f"  {label:<58} {per_second:>10,.0f} img/s  ({seconds * 1000:7.1f} ms)")
    return per_second


def best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def resized_yaml(source: Path, size: int, folder: Path) -> Path:
    """A copy of the benchmark YAML fitted to ``size`` (image paths stay relative to the original)."""
    text = source.read_text()
    text = text.replace("image_size: 28", f"image_size: {size}")
    text += f'root: "{source.parent}"\ntransforms: {{test: {{resize: [{size}, {size}], crop: {size}}}}}\n'
    path = folder / "resized.yaml"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--yaml", type=Path, required=True,
        help="a benchmark YAML whose set is an image list (OpenOOD layout, e.g. fmnist-ood's benchmark.yaml)",
    )  # fmt: skip
    parser.add_argument("--set", default="test")
    parser.add_argument("--size", type=int, default=0, help="fit images to this size (0: the benchmark's)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.yaml.is_file():
        raise SystemExit(f"benchmark YAML not found: {args.yaml}")
    # One intra-op thread, as in DataLoader workers: per-image tensors are too small to split, and
    # on a shared machine OpenMP's spinning threads turn contention into 100x slowdowns.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        yaml_path = resized_yaml(args.yaml, args.size, Path(tmp)) if args.size else args.yaml
        bench = load_benchmark(yaml_path)
    spec = bench.get_set(args.set)
    if spec.type != "imglist":
        raise SystemExit(
            f"set {bench.name}/{spec.name} has type {spec.type}; this measures decoding image files, so it "
            "needs an image-list set (an OpenOOD-layout benchmark, e.g. fmnist-ood's benchmark.yaml)"
        )
    transform = test_transform(bench)
    size = bench.test_crop
    dataset = build_dataset(spec, bench)
    n = len(dataset)
    print(
        f"{bench.name}/{spec.name}: {n} images, stored 28x28 -> test size {size}x{size}; "
        f"DataLoader workers {args.workers}, batch {args.batch}, 1 intra-op thread, best of {args.repeats}"
    )

    print("from files (decode every time):")
    file_item = rate(
        "imglist Dataset, item by item (decode + fit)",
        n,
        best_of(args.repeats, lambda: [dataset[i] for i in range(n)]),
    )
    normalised = build_dataset(spec, bench, transform=transform)
    rate(
        "imglist Dataset + test_transform, item by item",
        n,
        best_of(args.repeats, lambda: [normalised[i] for i in range(n)]),
    )
    loader = DataLoader(dataset, batch_size=args.batch, num_workers=args.workers)
    file_loader = rate(
        f"imglist DataLoader ({args.workers} workers), uint8 batches",
        n,
        best_of(args.repeats, lambda: [b for b in loader]),
    )
    decode_once = rate(
        "load_arrays: decode the whole set once (sequential)",
        n,
        best_of(args.repeats, lambda: load_arrays(spec, bench)),
    )

    images, labels = load_arrays(spec, bench)
    memory = ArrayDataset(images, labels)
    print("from memory (decoded once):")
    memory_item = rate(
        "ArrayDataset, item by item", n, best_of(args.repeats, lambda: [memory[i] for i in range(n)])
    )
    memory_transformed = ArrayDataset(images, labels, transform)
    rate(
        "ArrayDataset + test_transform, item by item",
        n,
        best_of(args.repeats, lambda: [memory_transformed[i] for i in range(n)]),
    )
    memory_loader = DataLoader(memory, batch_size=args.batch)
    rate(
        "ArrayDataset DataLoader (main process), uint8 batches",
        n,
        best_of(args.repeats, lambda: [b for b in memory_loader]),
    )
    tensor = memory.images

    def slices() -> None:
        for start in range(0, n, args.batch):
            normalize(tensor[start : start + args.batch], bench.mean, bench.std)

    memory_batch = rate("uint8 tensor slices + batched normalise", n, best_of(args.repeats, slices))
    print("ratios:")
    print(f"  memory items / file items            {memory_item / file_item:8.1f}x")
    print(f"  batched memory / file DataLoader     {memory_batch / file_loader:8.1f}x")
    print(f"  load_arrays (once) / one file pass   {file_loader / decode_once:8.2f} of the time")


if __name__ == "__main__":
    main()
