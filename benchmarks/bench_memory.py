"""Peak memory and images/s of the evaluation pass, streamed vs in memory, on growing file-backed sets.

Generates one synthetic set of small PNGs on disk (``--sizes``, default 10k, 50k and 200k images of
``--image-size`` px, random pixels, written by a process pool) with one image list per size, then
measures, for each size and each path, in a fresh subprocess:

- ``memory``: today's in-memory path: decode the whole set to uint8 (``load_arrays``, decoded cache
  off: every file decoded), then the forward pass;
- ``stream``: the set read by DataLoader workers (``StreamedImages``, ``--workers``), as the pipeline
  does for a set above ``in_memory_mb``.

Both passes then write the set's outputs as the pipeline does (memory-mapped scratch arrays, then the
``.npz`` cache). Memory is measured three ways: the kernel's peak resident set of the measuring
process (``VmHWM``, which also counts pages of the memory-mapped outputs and of the files read, i.e.
reclaimable page cache), and, sampled every 50 ms, the peak anonymous (not file-backed, so not
reclaimable) resident memory of that process, and of it plus its worker processes (proportional set
size, so pages a forked worker shares with its parent count once; shared memory included).
Targets (issue 14): streamed memory flat (within 10%) across sizes; streamed throughput at least
0.8x of the in-memory path on the 10k set.

    python benchmarks/bench_memory.py [--sizes 10000,50000,200000] [--image-size 16] [--workers N]
        [--network rv2_tiny] [--folder DIR] [--json docs/results/bench_memory.json]
"""

from __future__ import annotations

import os

# Sleeping OpenMP waits, set before torch loads its runtime (see harness/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "results" / "bench_memory.json"
BENCHMARK_YAML = """
name: bench_memory
num_classes: 10
image_size: {size}
channels: 3
normalization: {{mean: [0.5], std: [0.5]}}
transforms:
  test: {{resize: {size}, crop: {size}}}
id:
  train: {{type: imglist, list: list_{count}.txt}}
  val: {{type: imglist, list: list_{count}.txt}}
  test: {{type: imglist, list: list_{count}.txt}}
ood:
  val: {{type: imglist, list: list_{count}.txt}}
  far:
    same: {{type: imglist, list: list_{count}.txt}}
"""


# -- generation -------------------------------------------------------------------------------------


def _write_chunk(task: tuple[str, int, int, int]) -> None:
    """Write images ``start..stop-1`` (random pixels, seeded by index: the same set every time)."""
    from PIL import Image

    folder, start, stop, size = task
    for index in range(start, stop):
        path = Path(folder) / f"{index // 1000:04d}" / f"{index:07d}.png"
        if path.exists():
            continue
        pixels = np.random.default_rng(index).integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, compress_level=1)


def generate(folder: Path, count: int, size: int, sizes: list[int]) -> float:
    """``count`` PNGs under ``folder/images`` and a list per size; returns the seconds it took."""
    started = time.perf_counter()
    images = folder / "images"
    for block in range(0, count, 1000):
        (images / f"{block // 1000:04d}").mkdir(parents=True, exist_ok=True)
    tasks = [(str(images), start, min(start + 1000, count), size) for start in range(0, count, 1000)]
    with Pool(os.cpu_count() or 1) as pool:
        pool.map(_write_chunk, tasks, chunksize=4)
    for n in sizes:
        lines = "".join(f"images/{i // 1000:04d}/{i:07d}.png {i % 10}\n" for i in range(n))
        (folder / f"list_{n}.txt").write_text(lines)
        (folder / f"benchmark_{n}.yaml").write_text(BENCHMARK_YAML.format(size=size, count=n))
    return time.perf_counter() - started


def warm_files(folder: Path, count: int) -> None:
    """Read every file once so both paths start from the same (warm) page cache."""
    for index in range(count):
        (folder / "images" / f"{index // 1000:04d}" / f"{index:07d}.png").read_bytes()


# -- one measurement (in a fresh process) -----------------------------------------------------------


def _status(pid: int | str, key: str) -> int:
    """A ``/proc/<pid>/status`` field in bytes (0 when the process is gone)."""
    return _field(f"/proc/{pid}/status", key)


def _field(path: str, key: str) -> int:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _anon(pid: int) -> int:
    """Proportional anonymous + shared-memory resident bytes of a process (``smaps_rollup``).

    Proportional: a page shared by the parent and its forked workers is counted once in all, not
    once per process; shared memory carries the batches from the workers to the parent.
    """
    rollup = f"/proc/{pid}/smaps_rollup"
    return _field(rollup, "Pss_Anon") + _field(rollup, "Pss_Shmem")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


class AnonSampler:
    """Peaks of anonymous memory (PSS) of this process and of its workers, sampled every ``period`` s.

    Kept apart because they behave differently: a forked worker keeps the pre-fork copy of every
    page the parent writes after the fork, an amount set by the parent's own working set (the
    forward pass's buffers), not by the size of the set, and it varies with timing.
    """

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.main = 0
        self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int]:
        pid = os.getpid()
        main = _anon(pid)
        return main, main + sum(_anon(child) for child in _children(pid))

    def _update(self) -> None:
        main, total = self.sample()
        self.main, self.total = max(self.main, main), max(self.total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._update()
            time.sleep(self.period)

    def __enter__(self) -> AnonSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update()


def measure(benchmark_path: Path, mode: str, network: str, batch: int, workers: int, out: Path) -> dict:
    """One evaluation pass of the set's test split by ``mode``; its time and memory."""
    import torch

    from harness.data.benchmark import load_benchmark
    from harness.data.datasets import ImageFileDataset, file_table, load_arrays
    from harness.data.streaming import StreamedImages
    from harness.outputs import forward_outputs, save_outputs, scratch_arrays
    from networks import create_network

    os.environ["HARNESS_CACHE"] = "off"  # the in-memory path decodes every file, as on a first run
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    benchmark = load_benchmark(benchmark_path)
    spec = benchmark.test
    torch.manual_seed(0)
    net = create_network(network, benchmark.num_classes).to(device).eval()
    size = benchmark.test_crop
    options = dict(mean=benchmark.mean, std=benchmark.std, size=size, device=device, batch_size=batch)
    forward_outputs(net, torch.zeros(batch, 3, size, size, dtype=torch.uint8), **options)  # warm-up
    sampler = AnonSampler()
    before, _ = sampler.sample()
    with sampler:
        started = time.perf_counter()
        if mode == "memory":
            arrays, labels = load_arrays(spec, benchmark)
            images = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
            del arrays
        else:
            table = file_table(spec, benchmark)
            dataset = ImageFileDataset(table, benchmark.test_resize, size)
            images = StreamedImages(dataset, workers=workers, pin_memory=device.type == "cuda")
            labels = table.labels
        n = images.shape[0]
        shapes = {"logits": (n, net.num_outputs), "features": (n, net.feature_dim)}
        with scratch_arrays(out.parent, shapes) as scratch:
            logits, features = forward_outputs(
                net, images, **options, into=(scratch["logits"], scratch["features"])
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            save_outputs(out, logits, features, labels)
        del images
    return {
        "mode": mode,
        "images": n,
        "seconds": round(seconds, 3),
        "images_per_s": round(n / seconds, 1),
        "peak_rss_mb": round(_status("self", "VmHWM") / 2**20, 1),
        "peak_anon_mb": round(sampler.main / 2**20, 1),
        "peak_anon_with_workers_mb": round(sampler.total / 2**20, 1),
        "anon_before_mb": round(before / 2**20, 1),
        "pass_anon_mb": round((sampler.main - before) / 2**20, 1),
        "device": str(device),
        "workers": workers if mode == "stream" else 0,
    }


# -- driver ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,200000", help="set sizes, comma-separated")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--network", default="rv2_tiny")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--folder", type=Path, help="where the images go (kept; default: a temp folder)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path on the smallest set")
    parser.add_argument("--child", nargs=2, metavar=("BENCHMARK", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as scratch:
            result = measure(
                Path(args.child[0]), args.child[1], args.network, args.batch, args.workers,
                Path(scratch) / "outputs.npz",
            )  # fmt: skip
        print(json.dumps(result))
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as temp:
        folder = args.folder or Path(temp)
        generation_s = generate(folder, max(sizes), args.image_size, sizes)
        print(f"{max(sizes):,} PNGs of {args.image_size}px in {folder} ({generation_s:.0f} s)", flush=True)
        runs = []
        for n in sizes:
            warm_files(folder, n)
            repeats = args.repeats if n == sizes[0] else 1  # the throughput ratio: best of alternating runs
            for mode in ("memory", "stream") * repeats:
                command = [
                    *(sys.executable, __file__, "--child", str(folder / f"benchmark_{n}.yaml"), mode),
                    *("--network", args.network, "--batch", str(args.batch), "--workers", str(args.workers)),
                ]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode:
                    raise SystemExit(f"{mode} pass on {n} images failed:\n{done.stderr}")
                run = json.loads(done.stdout.strip().splitlines()[-1])
                runs.append(run)
                print(
                    f"{n:>8,} {mode:>6}: {run['images_per_s']:>9,.0f} images/s  "
                    f"peak RSS {run['peak_rss_mb']:>6.1f} MB, anon {run['peak_anon_mb']:>6.1f} MB "
                    f"(+{run['pass_anon_mb']:.1f} in the pass), "
                    f"with workers {run['peak_anon_with_workers_mb']:>6.1f} MB",
                    flush=True,
                )
    summary = summarise(runs, sizes)
    for line in summary["lines"]:
        print(line)
    record = {
        "sizes": sizes,
        "image_size": args.image_size,
        "network": args.network,
        "batch": args.batch,
        "workers": args.workers,
        "repeats_smallest": args.repeats,
        "generation_s": round(generation_s, 1),
        "runs": runs,
        "summary": {k: v for k, v in summary.items() if k != "lines"},
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from harness.io import write_json

    write_json(args.json, record)
    print(f"wrote {args.json}")


def summarise(runs: list[dict], sizes: list[int]) -> dict:
    """Streamed memory at the largest size over the smallest; streamed/in-memory throughput.

    Sizes measured several times count by their median run. The throughput ratio is the median of
    the ratios of back-to-back (in-memory, streamed) pairs, which share the machine's load of the
    moment; the ratio of the best runs of each path is recorded too.
    """

    def of(n: int, mode: str) -> list[dict]:
        return [r for r in runs if r["images"] == n and r["mode"] == mode]

    def median(n: int, mode: str, key: str) -> float:
        return float(np.median([r[key] for r in of(n, mode)]))

    def growth(mode: str, key: str) -> float:
        return round(median(sizes[-1], mode, key) / median(sizes[0], mode, key), 3)

    small = sizes[0]
    pairs = [s["images_per_s"] / m["images_per_s"] for m, s in zip(of(small, "memory"), of(small, "stream"))]
    speed = float(np.median(pairs))
    best = max(r["images_per_s"] for r in of(small, "stream")) / max(
        r["images_per_s"] for r in of(small, "memory")
    )
    summary = {
        "stream_anon_growth": growth("stream", "peak_anon_mb"),
        "stream_anon_with_workers_growth": growth("stream", "peak_anon_with_workers_mb"),
        "stream_rss_growth": growth("stream", "peak_rss_mb"),
        "memory_anon_growth": growth("memory", "peak_anon_mb"),
        "memory_rss_growth": growth("memory", "peak_rss_mb"),
        "throughput_ratio_smallest": round(speed, 3),
        "throughput_ratio_pairs": [round(r, 3) for r in pairs],
        "throughput_ratio_best_of": round(best, 3),
    }
    summary["memory_flat"] = summary["stream_anon_growth"] <= 1.10
    summary["throughput_ok"] = speed >= 0.8
    largest = f"{sizes[-1]:,} over {small:,} images"
    summary["lines"] = [
        f"streamed, peak anon memory of the process, {largest}: {summary['stream_anon_growth']:.3f}x "
        "(target <= 1.10)",
        f"streamed, with its workers: {summary['stream_anon_with_workers_growth']:.3f}x; peak RSS (VmHWM, "
        f"counts the mapped outputs' pages): {summary['stream_rss_growth']:.3f}x",
        f"in memory, peak anon: {summary['memory_anon_growth']:.3f}x; "
        f"peak RSS: {summary['memory_rss_growth']:.3f}x",
        f"streamed / in-memory images/s on {small:,} images: {speed:.2f}x, median of back-to-back pairs "
        f"{', '.join(f'{r:.2f}' for r in pairs)} (target >= 0.8); best of each: {best:.2f}x",
    ]
    return summary


def machine() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_config import code_version, machine_environment

    return {**machine_environment(), **code_version()}


if __name__ == "__main__":
    main()
