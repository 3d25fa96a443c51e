"""Peak memory and images/s of the evaluation pass, streamed vs in memory, on growing file-backed sets.

Measured per configuration (``--config NAME=NETWORK:PX:SIZES:REPEATS``, repeatable; default two):

- ``decode=rv2_tiny:16:10000,50000,200000:3``: a tiny network on 16 px images, so the pass is
  bound by decoding the files (issue 14's set sizes);
- ``network=resnet18_32x32:32:1000,4000:2``: OpenOOD's ResNet-18 on 32 px images, so the pass is
  bound by the network.

For each image size it generates one synthetic set of PNGs on disk (random pixels, written by a
process pool; the largest size of the configurations that use it) with one image list per size,
then measures, for each size and each path, in a fresh subprocess:

- ``memory``: today's in-memory path: decode the whole set to uint8 (``load_arrays``, decoded cache
  off: every file decoded), then the forward pass;
- ``stream``: the set read by DataLoader workers (``StreamedImages``, ``--workers``), as the pipeline
  does for a set above ``in_memory_mb``.

The smallest size of a configuration is measured REPEATS times, alternating the paths. Both passes
then write the set's outputs as the pipeline does (memory-mapped scratch arrays, then the set's
folder of ``.npy`` files). Memory is measured four ways: the kernel's peak resident set of the
measuring process (``VmHWM``, which also counts pages of the memory-mapped outputs and of the files read, i.e.
reclaimable page cache), and, sampled every 50 ms, the peak anonymous (not file-backed, so not
reclaimable) resident memory of that process as a proportional set size (pages a forked worker
shares with its parent count once; shared memory included), of it plus its worker processes, and of
that process alone counted in full (``RssAnon + RssShmem``: unlike the proportional size it does not
drop while workers share its pages). Targets (issue 14), computed per configuration, never assumed:
streamed memory flat (within 10%) across sizes; streamed throughput at least 0.8x of the in-memory
path on the smallest size.

    python benchmarks/bench_memory.py [--config NAME=NETWORK:PX:SIZES:REPEATS ...] [--workers N]
        [--batch 256] [--folder DIR] [--json docs/results/bench_memory.json]
    python benchmarks/bench_memory.py --config quick=rv2_tiny:16:2000,8000:1 --json /tmp/quick.json
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
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "results" / "bench_memory.json"
DEFAULT_CONFIGS = (
    "decode=rv2_tiny:16:10000,50000,200000:3",  # decode-bound: a tiny network, issue 14's sizes
    "network=resnet18_32x32:32:1000,4000:2",  # network-bound: OpenOOD's ResNet-18
)
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


@dataclass(frozen=True)
class Config:
    """One measured configuration: a network, an image size, set sizes, runs on the smallest set."""

    name: str
    network: str
    image_size: int
    sizes: tuple[int, ...]
    repeats: int


def parse_config(text: str) -> Config:
    """``NAME=NETWORK:PX:SIZES:REPEATS``, e.g. ``decode=rv2_tiny:16:10000,50000,200000:3``.

    The network may itself contain colons (``timm:<model>``): the last three fields are split off.
    """
    usage = f"--config {text!r}: give NAME=NETWORK:PX:SIZES:REPEATS, e.g. {DEFAULT_CONFIGS[0]}"
    name, equals, rest = text.partition("=")
    fields = rest.rsplit(":", 3)
    if not equals or not name.strip() or len(fields) != 4 or not fields[0]:
        raise argparse.ArgumentTypeError(usage)
    network, px, sizes, repeats = fields
    try:
        config = Config(
            name=name.strip(),
            network=network,
            image_size=int(px),
            sizes=tuple(sorted({int(size) for size in sizes.split(",")})),
            repeats=int(repeats),
        )
    except ValueError:
        raise argparse.ArgumentTypeError(f"{usage} (PX, SIZES and REPEATS are whole numbers)") from None
    if config.image_size < 1 or config.sizes[0] < 1 or config.repeats < 1:
        raise argparse.ArgumentTypeError(f"{usage} (PX, SIZES and REPEATS are at least 1)")
    from dfb_ood.networks.registry import network_spec

    try:
        network_spec(network)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--config {text!r}: {error}") from None
    return config


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
    """Child processes of every thread of ``pid`` (a worker is the child of the thread that forked it)."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children += [int(p) for p in handle.read().split()]
        except OSError:
            pass
    return children


def _rss_anon(pid: int) -> int:
    """Anonymous + shared-memory resident bytes of a process, counted in full (not proportionally)."""
    return _status(pid, "RssAnon") + _status(pid, "RssShmem")


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
        self.main_full = 0  # RssAnon + RssShmem of this process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int]:
        pid = os.getpid()
        main = _anon(pid)
        return main, main + sum(_anon(child) for child in _children(pid))

    def _update(self) -> None:
        main, total = self.sample()
        self.main, self.total = max(self.main, main), max(self.total, total)
        self.main_full = max(self.main_full, _rss_anon(os.getpid()))

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

    from dfb_ood.harness.data.benchmark import load_benchmark
    from dfb_ood.harness.data.datasets import ImageFileDataset, load_arrays
    from dfb_ood.harness.data.streaming import StreamedImages
    from dfb_ood.harness.data.tables import file_table
    from dfb_ood.harness.outputs import forward_outputs, save_outputs, scratch_arrays
    from dfb_ood.networks import create_network

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
    before_full = _rss_anon(os.getpid())
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
        "peak_rss_anon_mb": round(sampler.main_full / 2**20, 1),
        "pass_rss_anon_mb": round((sampler.main_full - before_full) / 2**20, 1),
        "device": str(device),
        "workers": workers if mode == "stream" else 0,
    }


# -- driver ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        dest="configs",
        action="append",
        type=parse_config,
        metavar="NAME=NETWORK:PX:SIZES:REPEATS",
        help=f"a configuration to measure (repeatable); default: {' '.join(DEFAULT_CONFIGS)}",
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--folder", type=Path, help="where the images go (kept; default: a temp folder)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--child", nargs=3, metavar=("BENCHMARK", "MODE", "NETWORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as scratch:
            benchmark, mode, network = args.child
            outputs = Path(scratch) / "outputs"  # the set's folder of .npy files
            result = measure(Path(benchmark), mode, network, args.batch, args.workers, outputs)
        print(json.dumps(result))
        return
    configs: list[Config] = args.configs or [parse_config(text) for text in DEFAULT_CONFIGS]
    names = [config.name for config in configs]
    if len(set(names)) != len(names):
        parser.error(f"configuration names repeat: {', '.join(names)}")
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as temp:
        root = args.folder or Path(temp)
        generation_s = {}
        for px in sorted({config.image_size for config in configs}):
            sizes = sorted({n for config in configs if config.image_size == px for n in config.sizes})
            folder = root / f"{px}px"
            generation_s[px] = generate(folder, sizes[-1], px, sizes)
            print(f"{sizes[-1]:,} PNGs of {px}px in {folder} ({generation_s[px]:.0f} s)", flush=True)
        records = []
        for config in configs:
            print(f"{config.name}: {config.network}, {config.image_size} px", flush=True)
            runs = measure_config(config, root / f"{config.image_size}px", args.batch, args.workers)
            summary = summarise(runs, list(config.sizes))
            for line in summary["lines"]:
                print(f"  {config.name}: {line}")
            records.append(
                {
                    **asdict(config),
                    "generation_s": round(generation_s[config.image_size], 1),
                    "runs": runs,
                    "summary": {k: v for k, v in summary.items() if k != "lines"},
                }
            )
    record = {
        "batch": args.batch,
        "workers": args.workers,
        "configurations": records,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from dfb_ood.harness.io import write_json

    write_json(args.json, record)
    print(f"wrote {args.json}")


def measure_config(config: Config, folder: Path, batch: int, workers: int) -> list[dict]:
    """Every run of one configuration, each in a fresh subprocess: both paths, alternating."""
    runs = []
    for n in config.sizes:
        warm_files(folder, n)
        repeats = config.repeats if n == config.sizes[0] else 1  # the throughput ratio: alternating runs
        for mode in ("memory", "stream") * repeats:
            benchmark = str(folder / f"benchmark_{n}.yaml")
            command = [
                *(sys.executable, __file__, "--child", benchmark, mode, config.network),
                *("--batch", str(batch), "--workers", str(workers)),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{config.name}: {mode} pass on {n} images failed:\n{done.stderr}")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(run)
            print(
                f"{n:>8,} {mode:>6}: {run['images_per_s']:>9,.0f} images/s  "
                f"peak RSS {run['peak_rss_mb']:>6.1f} MB, anon {run['peak_anon_mb']:>6.1f} MB "
                f"(+{run['pass_anon_mb']:.1f} in the pass; in full +{run['pass_rss_anon_mb']:.1f}), "
                f"with workers {run['peak_anon_with_workers_mb']:>6.1f} MB",
                flush=True,
            )
    return runs


def summarise(runs: list[dict], sizes: list[int]) -> dict:
    """Streamed memory at the largest size over the smallest; streamed/in-memory throughput.

    Sizes measured several times count by their median run. The throughput ratio is the median of
    the ratios of back-to-back (in-memory, streamed) pairs, which share the machine's load of the
    moment; the ratio of the best runs of each path is recorded too. With a single size there is
    no growth to measure: ``memory_flat`` is then None, not True.
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
        "stream_rss_anon_growth": growth("stream", "peak_rss_anon_mb"),
        "stream_anon_with_workers_growth": growth("stream", "peak_anon_with_workers_mb"),
        "stream_rss_growth": growth("stream", "peak_rss_mb"),
        "memory_anon_growth": growth("memory", "peak_anon_mb"),
        "memory_rss_growth": growth("memory", "peak_rss_mb"),
        "throughput_size": small,
        "throughput_ratio_smallest": round(speed, 3),
        "throughput_ratio_pairs": [round(r, 3) for r in pairs],
        "throughput_ratio_best_of": round(best, 3),
    }
    summary["memory_flat"] = summary["stream_anon_growth"] <= 1.10 if len(sizes) > 1 else None
    summary["throughput_ok"] = speed >= 0.8
    largest = f"{sizes[-1]:,} over {small:,} images"
    summary["lines"] = [
        f"streamed, peak anon memory of the process, {largest}: {summary['stream_anon_growth']:.3f}x "
        "(target <= 1.10)",
        f"streamed, with its workers: {summary['stream_anon_with_workers_growth']:.3f}x; the process's anon "
        f"counted in full: {summary['stream_rss_anon_growth']:.3f}x; peak RSS (VmHWM, counts the mapped "
        f"outputs' pages): {summary['stream_rss_growth']:.3f}x",
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
