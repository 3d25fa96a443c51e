"""A changed data set, an altered cache entry or a planted link is never used as it was.

One finished tiny run whose far-OOD set ``files`` is an image list of 20 PNGs is made per
module; each test copies it (with its list and images), changes what a user might change, and
runs the same command again. The reference for "right" is a fresh run on the changed data.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dfb_ood.harness.cli import app
from dfb_ood.harness.data.benchmark import load_benchmark
from dfb_ood.harness.data.cache import CacheWarning, cache_root
from dfb_ood.harness.data.datasets import load_arrays

from .test_pipeline import TINY_BENCHMARK, TINY_RECIPE

runner = CliRunner()
DETECTORS = "msp,odin,bg"
# The tiny benchmark with its far-OOD "textures" set replaced by an image list.
BENCHMARK = TINY_BENCHMARK.replace(
    "textures: {type: shapes, set: textures, count: 40, size: 16}", "files: {type: imglist, list: far.txt}"
)


def write_images(folder: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (folder / "far").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "far" / f"{index:02d}.png")


def bench_args(root: Path, out: Path) -> list[str]:
    return [
        "bench",
        "--benchmark",
        str(root / "tiny.yaml"),
        "--recipe",
        str(root / "recipe.yaml"),
        "--out",
        str(out),
        "--post",
        DETECTORS,
        "--device",
        "cpu",
        "--no-report",
    ]


def rows_of(run: Path, dataset: str | None = None) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [row for row in rows if dataset is None or row["dataset"] == dataset]


def metrics(rows: list[dict[str, str]]) -> list[tuple[str, str, str, str]]:
    return [(row["detector"], row["dataset"], row["auroc"], row["fpr95"]) for row in rows]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stale")
    (root / "tiny.yaml").write_text(BENCHMARK)
    (root / "recipe.yaml").write_text(TINY_RECIPE)
    write_images(root, 20, seed=0)
    (root / "far.txt").write_text("".join(f"far/{i:02d}.png 0\n" for i in range(20)))
    result = runner.invoke(app, bench_args(root, root / "run"))
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    """The finished run with its own benchmark files (run, list and images copied)."""
    root = tmp_path / "copy"
    shutil.copytree(finished, root, symlinks=True)
    return root


def stage_files(run: Path) -> dict[str, dict[str, str]]:
    return {
        name: record.get("files", {})
        for name, record in json.loads((run / "stages.json").read_text()).items()
    }


def rerun_and_compare_with_fresh(root: Path) -> str:
    """Rerun in place, then a fresh run on the same data: the results must be equal."""
    before = stage_files(root / "run")
    again = runner.invoke(app, bench_args(root, root / "run"))
    assert again.exit_code == 0, again.output
    fresh = runner.invoke(app, [*bench_args(root, root / "fresh"), "--quiet"])
    assert fresh.exit_code == 0, fresh.output
    assert metrics(rows_of(root / "run")) == metrics(rows_of(root / "fresh"))
    after = stage_files(root / "run")
    # exactly the stages downstream of the far-OOD set: the networks and masks are kept
    for stage in ("classifier", "masks", "dense"):
        assert after[stage] == before[stage], stage
    for kind in ("classifier", "dfb"):
        changed = {
            name
            for name, digest in after[f"outputs_{kind}"].items()
            if before[f"outputs_{kind}"].get(name) != digest
        }
        # only files of the changed set's folder (its labels may be the same bytes)
        assert changed and {name.rpartition("/")[0] for name in changed} == {f"outputs/{kind}/files"}
        assert f"outputs/{kind}/files/logits.npy" in changed
    return again.output


def test_a_shortened_list_recomputes_that_set_and_says_so(copy):
    reference = rows_of(copy / "run", "files")
    lines = (copy / "far.txt").read_text().splitlines()
    (copy / "far.txt").write_text("\n".join(lines[:10]) + "\n")
    output = rerun_and_compare_with_fresh(copy)
    assert "far-OOD set 'files' changed" in output and "recomputing" in output
    assert metrics(rows_of(copy / "run", "files")) != metrics(reference)


def test_images_replaced_under_the_same_names_recompute_that_set(copy):
    reference = rows_of(copy / "run", "files")
    write_images(copy, 20, seed=1)  # other pixels, same names and sizes
    for path in (copy / "far").iterdir():  # a later write: step the time on, whatever the clock's grain
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    output = rerun_and_compare_with_fresh(copy)
    assert "far-OOD set 'files' changed" in output
    assert metrics(rows_of(copy / "run", "files")) != metrics(reference)


def test_an_unchanged_rerun_recomputes_nothing(copy):
    before = {p: p.stat().st_mtime_ns for p in (copy / "run" / "outputs").rglob("*.npy")}
    assert before
    again = runner.invoke(app, bench_args(copy, copy / "run"))
    assert again.exit_code == 0, again.output
    assert "recomputing" not in again.output and "set 'files' changed" not in again.output
    assert {p: p.stat().st_mtime_ns for p in (copy / "run" / "outputs").rglob("*.npy")} == before


def test_rows_of_detectors_not_rerun_are_dropped_when_their_data_changed(copy):
    (copy / "far.txt").write_text("".join(f"far/{i:02d}.png 0\n" for i in range(12)))
    args = bench_args(copy, copy / "run")
    args[args.index(DETECTORS)] = "msp"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "dropped 2 detector(s)" in result.output and "bg, odin" in result.output
    assert {row["detector"] for row in rows_of(copy / "run")} == {"msp"}


def test_an_altered_decoded_cache_entry_is_decoded_again(finished, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    benchmark = load_benchmark(finished / "tiny.yaml")
    spec = benchmark.far["files"]
    images, labels = load_arrays(spec, benchmark)  # decoded and stored
    reference = np.array(images)
    (entry,) = [p for p in (cache_root() or Path()).iterdir() if not p.name.startswith(".")]
    stored = entry / "images.npy"
    data = bytearray(stored.read_bytes())
    data[-64:] = bytes(255 - b for b in data[-64:])  # same size, other pixels
    stored.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again, _ = load_arrays(spec, benchmark)
    assert np.array_equal(np.array(again), reference)
    messages = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(messages) == 1 and "checksum" in messages[0] and str(entry) in messages[0]


def test_a_symlinked_array_of_a_set_is_refused_and_its_target_untouched(copy, tmp_path):
    """Under outputs/ a link is refused, never followed: numpy maps an array by its name."""
    reference = metrics(rows_of(copy / "run"))
    artifact = copy / "run" / "outputs" / "classifier" / "test" / "logits.npy"
    users_file = tmp_path / "users_file.npy"
    shutil.copyfile(artifact, users_file)  # same bytes: only the link itself betrays it
    original = users_file.read_bytes()
    artifact.unlink()
    artifact.symlink_to(users_file)
    verified = runner.invoke(app, ["verify", str(copy / "run")])
    assert verified.exit_code == 4 and "symbolic link" in verified.output
    result = runner.invoke(app, bench_args(copy, copy / "run"))
    assert result.exit_code == 4 and "symbolic link" in result.output and "logits.npy" in result.output
    assert artifact.is_symlink() and users_file.read_bytes() == original
    artifact.unlink()  # as the message says: then the set's outputs are recomputed
    result = runner.invoke(app, bench_args(copy, copy / "run"))
    assert result.exit_code == 0, result.output
    assert "logits.npy is missing" in result.output and "recomputing" in result.output
    assert artifact.is_file() and metrics(rows_of(copy / "run")) == reference


def test_a_symlinked_artifact_is_replaced_and_its_target_untouched(copy, tmp_path):
    reference = metrics(rows_of(copy / "run"))
    artifact = copy / "run" / "masks.npy"
    users_file = tmp_path / "users_file.npy"
    shutil.copyfile(artifact, users_file)  # same bytes: only the link itself betrays it
    original = users_file.read_bytes()
    artifact.unlink()
    artifact.symlink_to(users_file)
    verified = runner.invoke(app, ["verify", str(copy / "run")])
    assert verified.exit_code == 4 and "symbolic link" in verified.output
    result = runner.invoke(app, bench_args(copy, copy / "run"))
    assert result.exit_code == 0, result.output
    assert "symbolic link" in result.output and "recomputing" in result.output
    assert not artifact.is_symlink() and users_file.read_bytes() == original
    assert metrics(rows_of(copy / "run")) == reference


def test_verify_sorts_artifacts_into_intact_stale_and_damaged(copy):
    # run.json names the benchmark file it ran with: a no-op rerun makes that the copy's
    assert runner.invoke(app, [*bench_args(copy, copy / "run"), "--quiet"]).exit_code == 0
    ok = runner.invoke(app, ["verify", str(copy / "run"), "--json"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert report["summary"] == {"intact": len(report["checks"]), "stale": 0, "damaged": 0}
    (copy / "far.txt").write_text("".join(f"far/{i:02d}.png 0\n" for i in range(15)))
    damaged = copy / "run" / "masks.npy"
    damaged.write_bytes(damaged.read_bytes()[:-8])
    result = runner.invoke(app, ["verify", str(copy / "run"), "--json"])
    assert result.exit_code == 4
    checks = {(c["stage"], c["file"]): c for c in json.loads(result.stdout)["checks"]}
    assert checks[("masks", "masks.npy")]["status"] == "damaged"
    for array in ("logits", "features", "labels"):
        assert checks[("outputs_classifier", f"outputs/classifier/files/{array}.npy")]["status"] == "stale"
        assert checks[("outputs_classifier", f"outputs/classifier/test/{array}.npy")]["status"] == "intact"
    assert checks[("classifier", "classifier.safetensors")]["status"] == "intact"
    assert checks[("results", "results.json: msp")]["status"] == "stale"
    perturbed = [c for (stage, _), c in checks.items() if stage.endswith("/files")]
    assert perturbed and all(c["status"] == "stale" for c in perturbed)
    assert stage_files(copy / "run")["masks"]  # verify wrote nothing: the record is as it was


def test_an_edited_train_list_retrains_and_says_which_set_changed(tmp_path):
    """The stages made from the ID training images (classifier, masks) name the set that changed."""
    write_images(tmp_path, 30, seed=2)
    labels = np.random.default_rng(0).integers(0, 6, 30)
    (tmp_path / "train.txt").write_text("".join(f"far/{i:02d}.png {labels[i]}\n" for i in range(30)))
    (tmp_path / "far.txt").write_text("".join(f"far/{i:02d}.png 0\n" for i in range(20)))
    (tmp_path / "tiny.yaml").write_text(
        BENCHMARK.replace("train: {type: shapes, set: train, count: 192, size: 16}", "train: train.txt")
    )
    (tmp_path / "recipe.yaml").write_text(TINY_RECIPE)
    args = ["masks", *bench_args(tmp_path, tmp_path / "run")[1:], "--batch-size", "16"]
    args.remove("--no-report")
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    (tmp_path / "train.txt").write_text("".join(f"far/{i:02d}.png {labels[i]}\n" for i in range(25)))
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    for stage in ("classifier", "masks"):
        assert f"ID set 'train' changed (its list or image files): recomputing the {stage} stage" in text
    assert len(np.load(tmp_path / "run" / "masks.npy")) == 25


def test_a_run_folder_of_the_npz_layout_recomputes_its_outputs_and_never_reads_them(copy):
    """Outputs cached by an older version (one ``outputs/<net>/<set>.npz`` per set) are recomputed.

    The outputs stage's key holds a format version, so the old records no longer match; the
    ``.npz`` files here hold other logits, so results equal to the reference show they were not read.
    """
    from dfb_ood.harness.io import file_checksum

    run = copy / "run"
    reference = (run / "results.csv").read_bytes()
    stages = json.loads((run / "stages.json").read_text())
    old = []
    for folder in sorted({p.parent for p in (run / "outputs").rglob("*.npy")}):
        arrays = {p.stem: np.load(p) for p in folder.glob("*.npy")}
        arrays["logits"] = arrays["logits"] + 1000.0  # not what the networks give
        path = folder.parent / f"{folder.name}.npz"
        np.savez(path, **arrays)
        shutil.rmtree(folder)
        old.append(path)
    for name, record in stages.items():
        if name.startswith("outputs_"):  # a network's passes: outputs/<net>/<set>.npz
            files = sorted((run / "outputs" / name.removeprefix("outputs_")).glob("*.npz"))
        elif name.count("/") == 2:  # a detector's own pass: outputs/<net>/perturbed-<tag>/<set>.npz
            files = [run / "outputs" / f"{name}.npz"]
        else:
            continue
        record["key"] = "the key an older version recorded"
        record["files"] = {path.relative_to(run).as_posix(): file_checksum(path) for path in files}
    (run / "stages.json").write_text(json.dumps(stages))
    before = {p: p.read_bytes() for p in old}
    result = runner.invoke(app, bench_args(copy, run))
    assert result.exit_code == 0, result.output
    assert (run / "results.csv").read_bytes() == reference
    for path in old:
        assert {"labels.npy", "logits.npy"} <= {q.name for q in path.with_name(path.stem).iterdir()}
        assert path.read_bytes() == before[path]  # left as it was
    records = json.loads((run / "stages.json").read_text()).values()
    assert not any(name.endswith(".npz") for record in records for name in record.get("files", {}))
