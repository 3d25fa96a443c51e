"""Streamed evaluation sets: the same pixels and the same outputs as the in-memory path, and resume.

A file-backed set decoded larger than ``in_memory_mb`` is read through DataLoader workers on every
pass instead of held in memory (harness.data.streaming). Outputs are cached as a folder of .npy
files per set, written from memory maps and mapped back read-only (harness.array_folder). The reference for
"right" is always the in-memory path, compared bit for bit.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dfb_ood.harness.array_folder import map_arrays, save_arrays
from dfb_ood.harness.cli import app
from dfb_ood.harness.data import streaming
from dfb_ood.harness.data.benchmark import load_benchmark
from dfb_ood.harness.data.datasets import ImageFileDataset, load_arrays
from dfb_ood.harness.data.images import ImageDecodeError, decode_rgb
from dfb_ood.harness.data.streaming import StreamedImages, in_memory_limit_mb, stream_set
from dfb_ood.harness.data.tables import file_table
from dfb_ood.harness.outputs import (
    count_nonfinite,
    forward_outputs,
    head_arrays,
    load_outputs,
    save_outputs,
)
from dfb_ood.networks import create_network

from .test_pipeline import TINY_BENCHMARK, TINY_RECIPE
from .test_stale_data import bench_args, metrics, rows_of

runner = CliRunner()
COUNT = 37  # not a multiple of any batch size used here
BENCHMARK = TINY_BENCHMARK.replace(
    "textures: {type: shapes, set: textures, count: 40, size: 16}", "files: {type: imglist, list: far.txt}"
)


def write_set(root: Path) -> None:
    """37 PNGs of mixed sizes (resized and centre-cropped to 16) and a list naming them."""
    rng = np.random.default_rng(3)
    (root / "far").mkdir(parents=True, exist_ok=True)
    for index in range(COUNT):
        height, width = (16, 16) if index % 3 == 0 else (int(rng.integers(12, 30)), int(rng.integers(12, 30)))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "far" / f"{index:02d}.png")
    (root / "far.txt").write_text("".join(f"far/{i:02d}.png 0\n" for i in range(COUNT)))
    (root / "tiny.yaml").write_text(BENCHMARK)
    (root / "recipe.yaml").write_text(TINY_RECIPE)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("streaming")
    write_set(root)
    return root


def streamed(root: Path, workers: int) -> tuple[StreamedImages, np.ndarray, np.ndarray]:
    """The far-OOD list set streamed, with the in-memory path's images (N, 3, S, S) and labels."""
    benchmark = load_benchmark(root / "tiny.yaml")
    spec = benchmark.far["files"]
    images, labels = load_arrays(spec, benchmark)
    dataset = ImageFileDataset(file_table(spec, benchmark), benchmark.test_resize, benchmark.test_crop)
    held = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous()
    return StreamedImages(dataset, workers=workers), held.numpy(), labels


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_pixels_are_the_in_memory_pixels_in_order(data, workers):
    stream, held, _ = streamed(data, workers)
    assert stream.shape == held.shape == (COUNT, 3, 16, 16)
    batches = list(stream.batches(8))
    assert [len(batch) for batch in batches] == [8, 8, 8, 8, 5]
    assert all(batch.dtype == torch.uint8 for batch in batches)
    assert np.array_equal(torch.cat(batches).numpy(), held)
    shard = stream[10:29]  # a DDP rank's contiguous shard
    assert shard.shape[0] == 19
    assert np.array_equal(torch.cat(list(shard.batches(6))).numpy(), held[10:29])
    assert len(stream[40:50]) == 0 and list(stream[40:50].batches(4)) == []


def receivers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "StreamedImages-receive"]


def test_worker_batches_are_received_by_a_helper_thread_that_stops_with_the_pass(data):
    """Received off the main thread (its heap grew over a pass otherwise); stopping early or
    finishing leaves no thread and no worker process behind."""
    stream, held, _ = streamed(data, workers=2)
    passing = stream.batches(4)
    first = next(passing)
    assert np.array_equal(first.numpy(), held[:4])
    assert len(receivers()) == 1 and len(multiprocessing.active_children()) == 2
    passing.close()  # the caller stops part-way (an error in its loop, a break)
    assert receivers() == [] and multiprocessing.active_children() == []
    assert np.array_equal(torch.cat(list(stream.batches(5))).numpy(), held)
    assert receivers() == [] and multiprocessing.active_children() == []
    # without workers nothing is received: no thread
    single = StreamedImages(stream.dataset, workers=0).batches(4)
    next(single)
    assert receivers() == []
    single.close()


def test_a_worker_error_is_raised_in_the_callers_thread(data, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(data, root)
    png = root / "far" / "20.png"
    png.write_bytes(png.read_bytes()[:60])  # the header reads, the pixels do not
    benchmark = load_benchmark(root / "tiny.yaml")
    spec = benchmark.far["files"]
    dataset = ImageFileDataset(file_table(spec, benchmark), benchmark.test_resize, benchmark.test_crop)
    stream = StreamedImages(dataset, workers=2)
    with pytest.raises(ImageDecodeError, match=r"far\.txt:21: cannot decode image"):
        list(stream.batches(4))
    gc.collect()  # the error's traceback holds the loader (its frames), as a plain DataLoader's does
    assert receivers() == [] and multiprocessing.active_children() == []


def test_streamed_and_in_memory_outputs_are_bit_identical(data, tmp_path):
    stream, held, labels = streamed(data, workers=2)
    torch.manual_seed(0)
    net = create_network("rv2_tiny", num_classes=6)
    options = dict(mean=(0.5,) * 3, std=(0.5,) * 3, size=16, device=torch.device("cpu"), batch_size=8)
    logits, features = forward_outputs(net, torch.from_numpy(held), **options)
    out = (
        np.lib.format.open_memmap(tmp_path / "l.npy", "w+", np.float32, logits.shape),
        np.lib.format.open_memmap(tmp_path / "f.npy", "w+", np.float32, features.shape),
    )
    logits_s, features_s = forward_outputs(net, stream, **options, into=out)
    assert logits_s is out[0] and features_s is out[1]
    assert logits.shape == (COUNT, net.num_outputs) and np.abs(logits).sum() > 0
    assert np.array_equal(logits, logits_s) and np.array_equal(features, features_s)
    # cached and mapped back: the same bits, read-only, not held in memory
    save_outputs(tmp_path / "o", logits_s, features_s, labels)
    loaded = load_outputs(tmp_path / "o", head_arrays(net), background=net.background)
    assert not loaded.logits.flags.writeable and not loaded.logits.flags.owndata  # a view of the map
    assert np.array_equal(loaded.logits, logits) and np.array_equal(loaded.features, features)
    assert np.array_equal(loaded.labels, labels)


def test_map_arrays_reads_what_np_load_reads(tmp_path):
    arrays = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "empty": np.zeros((0, 5), dtype=np.float32),
    }
    save_arrays(tmp_path / "set", arrays)
    mapped = map_arrays(tmp_path / "set")
    assert set(mapped) == set(arrays)
    for key, value in arrays.items():
        loaded = np.load(tmp_path / "set" / f"{key}.npy")
        assert np.array_equal(mapped[key], value) and mapped[key].shape == value.shape
        assert np.array_equal(mapped[key], loaded) and mapped[key].dtype == loaded.dtype
    assert isinstance(mapped["a"], np.memmap) and mapped["f"].flags.f_contiguous


def test_threshold_setting_env_and_errors(monkeypatch):
    monkeypatch.delenv("HARNESS_IN_MEMORY_MB", raising=False)
    assert in_memory_limit_mb() == 4096.0
    assert in_memory_limit_mb(0) == 0.0
    monkeypatch.setenv("HARNESS_IN_MEMORY_MB", "12.5")
    assert in_memory_limit_mb() == 12.5 and in_memory_limit_mb(3) == 3
    monkeypatch.setenv("HARNESS_IN_MEMORY_MB", "lots")
    with pytest.raises(ValueError, match=r"HARNESS_IN_MEMORY_MB='lots'"):
        in_memory_limit_mb()
    with pytest.raises(ValueError, match="in_memory_mb=-1"):
        in_memory_limit_mb(-1)
    # ImageNet-1k's train set at 224 px (1,281,167 images) is about 193 GB: streamed by default
    assert stream_set(1_281_167, 224, 4096.0) and not stream_set(50_000, 32, 4096.0)
    assert stream_set(1, 16, 0.0)


def test_count_nonfinite_in_chunks():
    values = np.zeros((10, 3), dtype=np.float32)
    values[1, 2], values[9, 0], values[4, 1] = np.nan, np.inf, -np.inf
    assert count_nonfinite(values, rows=3) == 3 and count_nonfinite(values[:0]) == 0


# -- the pipeline: a streamed rerun gives the in-memory run's bits; a failed streamed pass resumes ----


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data) -> Path:
    """A finished tiny run whose far-OOD list set was held in memory (the default threshold)."""
    root = tmp_path_factory.mktemp("finished")
    for name in ("far", "far.txt", "tiny.yaml", "recipe.yaml"):
        (shutil.copytree if (data / name).is_dir() else shutil.copy)(data / name, root / name)
    result = runner.invoke(app, bench_args(root, root / "run"), env={"HARNESS_IN_MEMORY_MB": None})
    assert result.exit_code == 0, result.output
    return root


def list_set_outputs(run: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every cached pass of the list set (plain and detector passes), by path, read into memory."""
    return {
        str(path.relative_to(run)): {key: np.array(value) for key, value in map_arrays(path).items()}
        for path in sorted((run / "outputs").rglob("files"))
    }


def assert_same(got: dict[str, dict[str, np.ndarray]], want: dict[str, dict[str, np.ndarray]]) -> None:
    assert set(got) == set(want) and len(want) >= 3  # classifier, dfb and at least one ODIN pass
    for path, arrays in want.items():
        assert set(got[path]) == set(arrays), path
        for key, value in arrays.items():
            assert np.array_equal(got[path][key], value), (path, key)


def test_a_streamed_rerun_gives_the_in_memory_outputs_bit_for_bit(finished, tmp_path, monkeypatch):
    root = tmp_path / "copy"
    shutil.copytree(finished, root)
    want = list_set_outputs(root / "run")
    for path in want:
        shutil.rmtree(root / "run" / path)
    calls: list[int] = []
    original = StreamedImages.batches

    def counted(self, batch_size):
        calls.append(len(self))
        return original(self, batch_size)

    monkeypatch.setattr(StreamedImages, "batches", counted)
    monkeypatch.setenv("HARNESS_IN_MEMORY_MB", "0")
    monkeypatch.setenv("HARNESS_DATA_WORKERS", "2")
    result = runner.invoke(app, bench_args(root, root / "run"))
    assert result.exit_code == 0, result.output
    assert calls and set(calls) == {COUNT}  # the list set was streamed, by every pass
    record = json.loads((root / "run" / "run.json").read_text())
    assert record["data_path"] == {"in_memory_mb": 0.0, "workers": 2, "streamed_sets": ["files"]}
    assert_same(list_set_outputs(root / "run"), want)
    assert metrics(rows_of(root / "run")) == metrics(rows_of(finished / "run"))
    assert not list((root / "run").rglob("*.scratch.npy"))


def test_a_streamed_pass_that_fails_midway_resumes_to_identical_results(finished, tmp_path, monkeypatch):
    root = tmp_path / "copy"
    shutil.copytree(finished, root)
    want = list_set_outputs(root / "run")
    for path in {p.parent for p in (root / "run" / "outputs").rglob("*.npy")}:
        shutil.rmtree(path)  # every set's pass is recomputed; the list set's fails part-way
    monkeypatch.setenv("HARNESS_IN_MEMORY_MB", "0")
    monkeypatch.setenv("HARNESS_DATA_WORKERS", "0")  # the failure below happens in this process
    served = [0]

    def failing(path, origin=""):
        served[0] += 1
        if served[0] > 20:
            raise RuntimeError("stands in for a kill part-way through the pass")
        return decode_rgb(path, origin)

    monkeypatch.setattr(streaming, "decode_rgb", failing)
    result = runner.invoke(app, bench_args(root, root / "run"))
    assert result.exit_code != 0 and served[0] == 21
    assert not (root / "run" / "outputs" / "classifier" / "files").exists()
    monkeypatch.setattr(streaming, "decode_rgb", decode_rgb)
    # A process killed outright (SIGKILL) runs no finally block: its scratch maps stay behind.
    for kind in ("classifier", "dfb"):
        leftover = root / "run" / "outputs" / kind / ".features.k1ll3d.tmp.scratch.npy"
        np.save(leftover, np.full((COUNT, 4), np.nan, dtype=np.float32))
    result = runner.invoke(app, bench_args(root, root / "run"))
    assert result.exit_code == 0, result.output
    assert_same(list_set_outputs(root / "run"), want)
    assert metrics(rows_of(root / "run")) == metrics(rows_of(finished / "run"))
    assert not list((root / "run").rglob("*.tmp*"))


def test_a_bad_threshold_or_worker_count_stops_the_pipeline_before_any_work():
    from dfb_ood.harness.run import BenchSettings, Pipeline

    with pytest.raises(ValueError, match="in_memory_mb=-5"):
        Pipeline(BenchSettings(in_memory_mb=-5, device="cpu"))
    with pytest.raises(ValueError, match="data workers -1"):
        Pipeline(BenchSettings(data_workers=-1, device="cpu"))
