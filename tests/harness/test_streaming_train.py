"""The training stages on a streamed train set: the same pixels, steps, masks, weights and results.

A file-backed ID train set decoded larger than ``in_memory_mb`` is never decoded whole: classifier
and dense training read each step's rows through DataLoader workers (``StreamedImages.step_batches``),
CAM masks are made chunk by chunk into a memory map, and previews decode the few rows they show.
The reference for "right" is the in-memory path on the same files, compared bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file
from typer.testing import CliRunner

from dfb_ood.harness import rundata as run_module
from dfb_ood.harness.cli import app
from dfb_ood.harness.data.benchmark import load_benchmark
from dfb_ood.harness.data.datasets import ImageFileDataset, load_arrays
from dfb_ood.harness.data.shapes import generate_set
from dfb_ood.harness.data.streaming import StreamedImages
from dfb_ood.harness.data.tables import file_table
from dfb_ood.harness.masks import mask_stats
from dfb_ood.harness.train import StepRows, batch_indices

from .test_pipeline import TINY_BENCHMARK, TINY_RECIPE
from .test_stale_data import bench_args, metrics, rows_of

runner = CliRunner()
TRAIN = 101  # not a multiple of the batch size: epochs drop a partial batch
BENCHMARK = TINY_BENCHMARK.replace(
    "train: {type: shapes, set: train, count: 192, size: 16}", "train: {type: imglist, list: train.txt}"
)
RECIPE = TINY_RECIPE.replace("steps: 24", "steps: 8")  # 3 steps per epoch: epochs 0-2 are drawn
# A cached-feature recipe: the frozen part's features of the (streamed) images and of their mirror
# images are extracted once, CAMs come from the cached maps (cam.scales [1.0]).
CACHED_RECIPE = (
    RECIPE.replace("train_transform: {pad: 2, crop: 16, flip: true}", "train_transform: {flip: true}")
    .replace("dense: {scale: [0.75, 1.5], flip: true}", "dense: {scale: [1.0, 1.0], flip: true}")
    .replace("cam: {scales: [1.0, 2.0]", "cam: {scales: [1.0]")
    + "trainable: head\n"
)


def write_train_set(root: Path) -> None:
    """The shapes train images saved as PNGs (lossless) with their labels in an OpenOOD list."""
    images, labels = generate_set("train", TRAIN, 0, 16)
    (root / "train").mkdir(parents=True, exist_ok=True)
    for index, pixels in enumerate(images):
        Image.fromarray(pixels).save(root / "train" / f"{index:03d}.png")
    (root / "train.txt").write_text("".join(f"train/{i:03d}.png {int(c)}\n" for i, c in enumerate(labels)))
    (root / "tiny.yaml").write_text(BENCHMARK)
    (root / "recipe.yaml").write_text(RECIPE)
    (root / "cached.yaml").write_text(CACHED_RECIPE)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("streaming_train")
    write_train_set(root)
    return root


def streamed_train(root: Path, workers: int) -> tuple[StreamedImages, torch.Tensor]:
    benchmark = load_benchmark(root / "tiny.yaml")
    spec = benchmark.train
    images, _ = load_arrays(spec, benchmark)
    dataset = ImageFileDataset(file_table(spec, benchmark), benchmark.test_resize, benchmark.test_crop)
    held = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous()
    return StreamedImages(dataset, workers=workers), held


@pytest.mark.parametrize("workers", [0, 2])
def test_step_batches_are_the_rows_each_step_draws(data, workers):
    stream, held = streamed_train(data, workers)
    rows = StepRows(seed=5, n=TRAIN, batch_size=32)
    steps = range(2, 9)  # a resumed loop starts part-way, across epoch ends
    got = list(stream.step_batches(rows, steps))
    assert len(got) == len(steps)
    for step, batch in zip(steps, got):
        index = batch_indices(5, step, TRAIN, 32)
        assert torch.equal(rows(step), index)
        assert batch.dtype == torch.uint8 and torch.equal(batch, held[index])
    with pytest.raises(ValueError, match="unsliced set"):
        next(stream[1:].step_batches(rows, steps))


def test_chosen_rows_and_the_mirror_match_the_tensor(data):
    stream, held = streamed_train(data, workers=2)
    for rows in ([3, 0, 3, 100], np.array([-1, 7]), torch.tensor([50, 2]), []):
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        assert torch.equal(stream[rows], held[index])
    assert torch.equal(stream[10:40][torch.tensor([0, 29])], held[[10, 39]])
    mirror = stream.flip(-1)
    assert torch.equal(torch.cat(list(mirror.batches(16))), held.flip(-1))
    assert torch.equal(torch.cat(list(mirror[5:20].batches(4))), held[5:20].flip(-1))
    assert torch.equal(mirror[[4, 9]], held[[4, 9]].flip(-1))
    assert torch.equal(torch.cat(list(mirror.flip(-1).batches(50))), held)
    with pytest.raises(IndexError, match="outside the 101 images"):
        stream[[101]]
    with pytest.raises(TypeError, match="1-D array of row numbers"):
        stream[np.zeros((2, 2), dtype=np.int64)]
    with pytest.raises(ValueError, match="left-right only"):
        stream.flip(2)


def test_mask_stats_in_chunks_equal_one_pass():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 7, (23, 5, 4)).astype(np.uint8)
    masks[3] = 6  # all background
    masks[8] = 1  # all foreground
    whole = mask_stats(masks, 6, rows=1000)
    assert mask_stats(masks, 6, rows=4) == whole
    assert (whole.all_background, whole.all_foreground, whole.count) == (1, 1, 23)
    fraction = (masks != 6).reshape(23, -1).mean(axis=1)
    assert whole.mean_foreground == pytest.approx(float(fraction.mean()), abs=1e-12)


def weights(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path))


FILES = ("train", "train.txt", "tiny.yaml", "recipe.yaml", "cached.yaml")


def copy_data(source: Path, root: Path, recipe: str) -> None:
    """The data files, with ``recipe`` as recipe.yaml (what bench_args passes)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (shutil.copytree if (source / name).is_dir() else shutil.copy)(source / name, root / name)
    shutil.copy(source / recipe, root / "recipe.yaml")


@pytest.fixture(scope="module", params=["recipe.yaml", "cached.yaml"])
def held_run(request, tmp_path_factory, data) -> tuple[Path, str]:
    """The reference: the same files, the train set decoded into memory (the default threshold)."""
    root = tmp_path_factory.mktemp("held")
    copy_data(data, root, request.param)
    result = runner.invoke(app, bench_args(root, root / "run"), env={"HARNESS_IN_MEMORY_MB": None})
    assert result.exit_code == 0, result.output
    record = json.loads((root / "run" / "run.json").read_text())
    assert record["data_path"]["streamed_sets"] == []
    return root, request.param


def test_a_streamed_train_set_trains_the_same_networks_bit_for_bit(held_run, tmp_path, monkeypatch):
    """Image recipe: both trainings read their steps through the workers; cached recipe: the
    features are extracted from the streamed images and their mirror images."""
    held, recipe = held_run
    root = tmp_path / "streamed"
    copy_data(held, root, recipe)
    original = run_module.load_arrays

    def no_whole_train_set(spec, benchmark, **options):
        assert spec.name != "train", "the streamed train set was decoded whole"
        return original(spec, benchmark, **options)

    steps: list[int] = []
    original_steps = StreamedImages.step_batches

    def counted(self, rows_of_step, step_range):
        steps.append(len(step_range))
        return original_steps(self, rows_of_step, step_range)

    monkeypatch.setattr(run_module, "load_arrays", no_whole_train_set)
    monkeypatch.setattr(StreamedImages, "step_batches", counted)
    monkeypatch.setenv("HARNESS_IN_MEMORY_MB", "0")
    monkeypatch.setenv("HARNESS_DATA_WORKERS", "2")
    result = runner.invoke(app, bench_args(root, root / "run"))
    assert result.exit_code == 0, result.output
    assert steps == ([8, 8] if recipe == "recipe.yaml" else [])
    record = json.loads((root / "run" / "run.json").read_text())
    assert record["data_path"]["streamed_sets"] == ["train"]
    want, got = held / "run", root / "run"
    for name in ("classifier.safetensors", "dfb.safetensors"):
        a, b = weights(want / name), weights(got / name)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[key], b[key]) for key in a), name
    assert np.array_equal(np.load(want / "masks.npy"), np.load(got / "masks.npy"))
    assert metrics(rows_of(got)) == metrics(rows_of(want))
    assert not list(got.rglob("*.tmp*"))
