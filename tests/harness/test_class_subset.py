"""The class-subset study (paper Fig. 7): ``id_classes`` draws, relabelling, run records, the figure.

A tiny ImageNet-layout data root is built here (OpenOOD lists under ``benchmark_imglist/``, PNGs
under ``images_largescale/`` and ``images_classic/``, ten classes standing in for ImageNet's
1000), so that everything but the network is exercised as on the real data.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dfb_ood.harness.cli import app
from dfb_ood.harness.data import load_benchmark
from dfb_ood.harness.data.benchmark import draw_classes
from dfb_ood.harness.data.tables import file_table
from dfb_ood.harness.errors import EXIT_BAD_INPUT, EXIT_MISSING_INPUT, EXIT_RUN_FOLDER
from dfb_ood.harness.leaderboard import CSV_COLUMNS
from dfb_ood.harness.run import BenchSettings, Pipeline

from .test_pipeline import TINY_RECIPE

runner = CliRunner()
CLASSES = 10  # the fake "ImageNet": labels 0..9 in the lists
NAMES = [f"synset{i}" for i in range(CLASSES)]
PER_CLASS = {"train": 6, "val": 2, "test": 3}

SUBSET_BENCHMARK = f"""
name: tiny_subset
description: ten fake ImageNet classes, a few drawn
num_classes: {CLASSES}
class_names: [{", ".join(NAMES)}]
id_classes: {{count: 4, seed: 0}}
image_size: 16
channels: 3
normalization: {{mean: [0.5], std: [0.5]}}
root: "{{data_root}}"
images: images_largescale
transforms:
  test: {{resize: 16, crop: 16}}
id:
  train: benchmark_imglist/imagenet/train_imagenet.txt
  val: benchmark_imglist/imagenet/val_imagenet.txt
  test: benchmark_imglist/imagenet/test_imagenet.txt
ood:
  val: benchmark_imglist/imagenet/val_openimage_o.txt
  near:
    ssb_hard: benchmark_imglist/imagenet/test_ssb_hard.txt
  far:
    textures: {{type: imglist, list: benchmark_imglist/imagenet/test_textures.txt, images: images_classic}}
"""


def _png(path: Path, colour: tuple[int, int, int], rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def fake_imagenet(tmp_path: Path) -> dict[str, Path]:
    """An OpenOOD-layout data root with 10 ID classes and three OOD sets, and the subset YAML."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    lists = root / "benchmark_imglist" / "imagenet"
    lists.mkdir(parents=True)
    for split, count in PER_CLASS.items():
        lines = []
        for label in range(CLASSES):
            colour = (25 * label, 255 - 25 * label, 40 + 20 * (label % 3))
            for k in range(count):
                relative = f"imagenet_1k/{split}/c{label}/{k}.png"
                _png(root / "images_largescale" / relative, colour, rng)
                lines.append(f"{relative} {label}")
        (lists / f"{split}_imagenet.txt").write_text("\n".join(lines) + "\n")
    for name, folder, count in (
        ("val_openimage_o", "images_largescale/openimage_o", 6),
        ("test_ssb_hard", "images_largescale/ssb_hard", 8),
        ("test_textures", "images_classic/texture", 8),
    ):
        top, sub = folder.split("/")
        lines = []
        for k in range(count):
            _png(root / top / sub / f"{name}_{k}.png", tuple(int(v) for v in rng.integers(0, 255, 3)), rng)
            lines.append(f"{sub}/{name}_{k}.png -1")
        (lists / f"{name}.txt").write_text("\n".join(lines) + "\n")
    benchmark = tmp_path / "tiny_subset.yaml"
    benchmark.write_text(SUBSET_BENCHMARK)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(TINY_RECIPE)
    return {"root": root, "benchmark": benchmark, "recipe": recipe}


def _original_label(path: str) -> int:
    """The fake data's original label, from its folder name (``.../c<label>/<k>.png``)."""
    return int(Path(path).parent.name[1:])


# ------------------------------------------------------------------------------ the draw
def test_the_draw_is_reproducible_from_its_seed():
    first = draw_classes(1000, 300, seed=1)
    assert first == draw_classes(1000, 300, seed=1)
    assert len(first) == len(set(first)) == 300 and list(first) == sorted(first)
    assert 0 <= first[0] and first[-1] < 1000
    # Pinned: numpy's Generator stream is stable, so a recorded seed redraws these classes anywhere.
    assert first[:5] == (5, 14, 19, 20, 22)
    assert draw_classes(1000, 300, seed=2) != first
    assert draw_classes(1000, 200, seed=1) != first[:200]  # a count is a draw of its own
    assert draw_classes(1000, 1000, seed=7) == tuple(range(1000))


@pytest.mark.parametrize("count, seed", [(0, 0), (11, 0), (3, -1)])
def test_an_impossible_draw_names_the_range(count: int, seed: int):
    with pytest.raises(ValueError, match="count must be in 1..10|seed must be >= 0"):
        draw_classes(10, count, seed)


def test_the_shipped_subset_benchmark_draws_from_imagenet_1k(tmp_path: Path):
    default = load_benchmark("imagenet_subset", data_root=tmp_path)
    assert default.name == "imagenet_subset_c200_s0" and default.num_classes == 200
    assert default.class_subset is not None and default.class_subset.of == 1000
    assert default.class_subset.ids == draw_classes(1000, 200, 0)
    assert len(default.class_names) == 200
    for split in (default.train, default.val, default.test):
        assert split.params["class_ids"] == default.class_subset.ids
    # The OOD sets are the ImageNet-1k benchmark's, untouched by the draw.
    full = load_benchmark("imagenet", data_root=tmp_path)
    assert list(default.near) == list(full.near) and list(default.far) == list(full.far)
    for name, spec in default.ood_sets().items():
        assert "class_ids" not in spec.params
        assert spec.params["list"] == full.ood_sets()[name].params["list"]
    for count in (300, 500, 1000):
        chosen = load_benchmark("imagenet_subset", data_root=tmp_path, classes=count, class_seed=1)
        assert chosen.name == f"imagenet_subset_c{count}_s1" and chosen.num_classes == count
        assert chosen.class_subset.ids == draw_classes(1000, count, 1)


def test_classes_on_a_benchmark_without_a_subset_section_is_refused():
    with pytest.raises(ValueError, match=r"--classes only applies.*'imagenet'.*no id_classes section"):
        load_benchmark("imagenet", classes=300)
    with pytest.raises(ValueError, match=r"--classes and --class-seed only apply.*imagenet_subset"):
        load_benchmark("cifar10", classes=3, class_seed=1)
    with pytest.raises(ValueError, match=r"--classes 1001.*1\.\.1000"):
        load_benchmark("imagenet_subset", classes=1001)


@pytest.mark.parametrize(
    "section, message",
    [
        ("id_classes: {count: 11}", r":6: id_classes count 11 exceeds num_classes 10"),
        ("id_classes: {count: 3, seeds: 1}", r":6: unknown id_classes key 'seeds'"),
        ("id_classes: {seed: 1}", r":6: id_classes needs count"),
        ("id_classes: 3", r":6: id_classes must be a mapping"),
    ],
)
def test_a_bad_id_classes_section_names_its_line(fake_imagenet: dict[str, Path], section: str, message: str):
    path = fake_imagenet["benchmark"]
    path.write_text(SUBSET_BENCHMARK.replace("id_classes: {count: 4, seed: 0}", section))
    with pytest.raises(ValueError, match=message):
        load_benchmark(path)


def test_id_classes_needs_image_list_id_sets(tmp_path: Path):
    path = tmp_path / "b.yaml"
    path.write_text(
        "num_classes: 6\nid_classes: {count: 3}\nimage_size: 16\nnormalization: {mean: 0.5, std: 0.5}\n"
        "id:\n  train: {type: shapes, set: train, count: 8}\n  val: v.txt\n  test: t.txt\n"
        "ood:\n  far:\n    noise: n.txt\n"
    )
    with pytest.raises(ValueError, match=r"b.yaml:6: id_classes keeps .* train is a shapes set"):
        load_benchmark(path)


# ------------------------------------------------------------------------------ the data
def test_id_sets_keep_the_drawn_classes_relabelled_and_ood_sets_are_untouched(fake_imagenet):
    root = fake_imagenet["root"]
    subset = load_benchmark(fake_imagenet["benchmark"], data_root=root, classes=3, class_seed=1)
    ids = draw_classes(CLASSES, 3, 1)
    assert subset.class_subset.ids == ids and subset.num_classes == 3
    assert subset.class_names == tuple(NAMES[i] for i in ids)
    for split, per_class in PER_CLASS.items():
        table = file_table(subset.get_set(split), subset)
        assert len(table) == 3 * per_class
        originals = [_original_label(path) for path in table.paths]
        assert set(originals) == set(ids)
        # Original class ids[i] is label i: in sorted order of the original ids, whatever the list order.
        assert [ids.index(o) for o in originals] == table.labels.tolist()
        assert set(table.labels.tolist()) == {0, 1, 2}
    full_path = fake_imagenet["benchmark"].with_name("full.yaml")
    full_path.write_text(SUBSET_BENCHMARK.replace("id_classes: {count: 4, seed: 0}\n", ""))
    full = load_benchmark(full_path, data_root=root)
    for name in ("ood_val", "ssb_hard", "textures"):
        ours, theirs = file_table(subset.get_set(name), subset), file_table(full.get_set(name), full)
        assert ours.paths == theirs.paths and (ours.labels == -1).all() and (theirs.labels == -1).all()


def test_a_list_in_another_order_gives_the_same_labels(fake_imagenet):
    root = fake_imagenet["root"]
    listing = root / "benchmark_imglist" / "imagenet" / "test_imagenet.txt"
    before = file_table(
        load_benchmark(fake_imagenet["benchmark"], data_root=root).test,
        load_benchmark(fake_imagenet["benchmark"], data_root=root),
    )
    mapping = dict(zip(before.paths, before.labels.tolist()))
    listing.write_text("\n".join(reversed(listing.read_text().splitlines())) + "\n")
    bench = load_benchmark(fake_imagenet["benchmark"], data_root=root)
    after = file_table(bench.test, bench)
    assert dict(zip(after.paths, after.labels.tolist())) == mapping


def test_data_check_counts_the_drawn_classes_and_flags_no_label(fake_imagenet):
    from dfb_ood.harness.data.check import check_benchmark

    bench = load_benchmark(fake_imagenet["benchmark"], data_root=fake_imagenet["root"], classes=2)
    reports = {report.name: report for report in check_benchmark(bench)}
    assert reports["train"].count == 2 * PER_CLASS["train"] and reports["train"].status == "ok"
    assert reports["textures"].count == 8 and all(r.bad_lines == 0 for r in reports.values())


def test_list_benchmarks_shows_the_subset_benchmark():
    result = runner.invoke(app, ["list", "benchmarks"], env={"COLUMNS": "240"})
    assert result.exit_code == 0 and "imagenet_subset" in result.stdout and "--classes C" in result.stdout


# ------------------------------------------------------------------------------ run record, identity
def _settings(tiny: dict[str, Path], out: Path, **extra: object) -> BenchSettings:
    return BenchSettings(
        benchmark=str(tiny["benchmark"]),
        recipe=str(tiny["recipe"]),
        data_root=tiny["root"],
        out=out,
        device="cpu",
        quiet=True,
        **extra,  # type: ignore[arg-type]
    )


def test_different_draws_never_share_a_run_identity_or_folder(fake_imagenet, tmp_path: Path):
    three = Pipeline(_settings(fake_imagenet, tmp_path / "a", classes=3, class_seed=1))
    four = Pipeline(_settings(fake_imagenet, tmp_path / "a", classes=4, class_seed=1))
    other_seed = Pipeline(_settings(fake_imagenet, tmp_path / "a", classes=3, class_seed=2))
    identities = [p.identity() for p in (three, four, other_seed)]
    assert identities[0]["classes"] == {"count": 3, "seed": 1}
    assert len({json.dumps(i, sort_keys=True) for i in identities}) == 3
    assert len({i["benchmark_definition"] for i in identities}) == 3
    # Without --out, each draw gets its own folder under runs/<benchmark>_c<C>_s<seed>/.
    defaults = [
        Pipeline(_settings(fake_imagenet, None, classes=c, class_seed=s)).run_dir for c, s in ((3, 1), (4, 1))
    ]
    assert defaults[0].parts[:2] == ("runs", "tiny_subset_c3_s1") and defaults[0] != defaults[1]
    # A benchmark without id_classes keeps its identity (no "classes" key, same definition key).
    assert (
        "classes"
        not in Pipeline(
            BenchSettings(benchmark="shapes", recipe=str(fake_imagenet["recipe"]), device="cpu", quiet=True)
        ).identity()
    )


def test_bench_writes_the_drawn_classes_into_run_json(fake_imagenet, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "bench",
            "--id",
            str(fake_imagenet["benchmark"]),
            "--data-root",
            str(fake_imagenet["root"]),
            "--recipe",
            str(fake_imagenet["recipe"]),
            "--classes",
            "3",
            "--class-seed",
            "1",
            "--post",
            "msp,msp_dfb",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "8",
            "--steps",
            "4",
            "--no-report",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    ids = list(draw_classes(CLASSES, 3, 1))
    assert record["benchmark"]["classes"] == {
        "count": 3,
        "seed": 1,
        "of": CLASSES,
        "ids": ids,
        "names": [NAMES[i] for i in ids],
    }
    assert record["benchmark"]["num_classes"] == 3 and record["benchmark"]["name"] == "tiny_subset_c3_s1"
    assert record["settings"]["classes"] == 3 and record["settings"]["class_seed"] == 1
    assert record["identity"]["classes"] == {"count": 3, "seed": 1}
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["benchmark"] for row in rows} == {"tiny_subset_c3_s1"}
    # Re-opened from its record, the run has the same draw (the settings carry --classes).
    reopened = Pipeline.from_run_dir(out)
    assert reopened.benchmark.class_subset.ids == tuple(ids)
    for key in ("classes", "benchmark", "benchmark_definition"):
        assert reopened.identity()[key] == record["identity"][key]
    # Another draw into the same folder is refused, not mixed in.
    again = runner.invoke(
        app,
        [
            "eval",
            "--id",
            str(fake_imagenet["benchmark"]),
            "--data-root",
            str(fake_imagenet["root"]),
            "--recipe",
            str(fake_imagenet["recipe"]),
            "--classes",
            "4",
            "--class-seed",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert again.exit_code == EXIT_RUN_FOLDER and "classes.count: 3 -> 4" in again.stderr


def test_the_cli_refuses_classes_without_a_subset_section(tmp_path: Path):
    result = runner.invoke(
        app, ["bench", "--benchmark", "shapes", "--classes", "3", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--classes only applies to a class-subset benchmark" in result.stderr
    assert not (tmp_path / "r").exists()
    # --seed is not an abbreviation of --seeds (or of --class-seed): click names both instead.
    result = runner.invoke(app, ["bench", "--id", "imagenet_subset", "--classes", "300", "--seed", "1"])
    assert result.exit_code == EXIT_BAD_INPUT and "No such option: --seed" in result.stderr


# ------------------------------------------------------------------------------ the figure
def _fake_run(folder: Path, count: int, seed: int, aurocs: dict[str, tuple[float, float]]) -> Path:
    """A finished run folder as far as the figure reads it: run.json and results.csv."""
    folder.mkdir(parents=True)
    ids = list(draw_classes(10, count, 0))
    record = {
        "benchmark": {
            "name": f"tiny_subset_c{count}_s0",
            "num_classes": count,
            "classes": {"count": count, "seed": 0, "of": 10, "ids": ids, "names": [str(i) for i in ids]},
        }
    }
    (folder / "run.json").write_text(json.dumps(record))
    with open(folder / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for detector, (near, far) in aurocs.items():
            for dataset, group, auroc in (
                ("near_mean", "near", near),
                ("far_mean", "far", far),
                ("x", "far", 0.1),
            ):
                row = dict.fromkeys(CSV_COLUMNS, "")
                row.update(benchmark=record["benchmark"]["name"], network="rv2_tiny", seed=seed)
                row.update(detector=detector, detector_network="classifier", dataset=dataset, group=group)
                row.update(auroc=auroc, aupr_in=0.5, aupr_out=0.5, fpr95=0.5, fpr_convention="paper")
                row.update(id_accuracy=0.9)
                writer.writerow(row)
    return folder


def test_the_classes_figure_plots_auroc_against_the_class_count(tmp_path: Path, monkeypatch):
    from dfb_ood.harness import class_study, plots

    runs = [
        _fake_run(
            tmp_path / f"c{count}s{seed}",
            count,
            seed,
            {"msp": (0.6 + count / 100 + seed / 100, 0.9), "msp_dfb": (0.7, 0.95)},
        )
        for count in (2, 3, 4)
        for seed in (0, 1)
    ]
    drawn: dict[str, object] = {}
    original = plots.auroc_vs_classes

    def spy(counts, curves, path, **kwargs):  # noqa: ANN001, ANN202
        drawn.update(counts=counts, curves=curves)
        return original(counts, curves, path, **kwargs)

    monkeypatch.setattr(plots, "auroc_vs_classes", spy)
    out = tmp_path / "fig" / "classes.svg"
    result = runner.invoke(app, ["figure", "classes", *map(str, runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.read_text().lstrip().startswith("<?xml")
    assert drawn["counts"] == [2, 3, 4]
    near = drawn["curves"]["msp"]["near"]
    for (mean, std), count in zip(near, (2, 3, 4)):
        assert mean == pytest.approx(0.6 + count / 100 + 0.005) and std == pytest.approx(0.00707, abs=1e-4)
    assert drawn["curves"]["msp_dfb"]["far"] == [(0.95, 0.0)] * 3
    # --post chooses the curves; a detector the runs lack is named with the ones they have.
    only = class_study.collect(runs).curves(["msp_dfb"])
    assert list(only) == ["msp_dfb"]
    result = runner.invoke(app, ["figure", "classes", *map(str, runs), "--out", str(out), "--post", "energy"])
    assert result.exit_code == EXIT_BAD_INPUT and "energy" in result.stderr and "msp_dfb" in result.stderr


def test_the_classes_figure_needs_two_class_counts_and_finished_runs(tmp_path: Path):
    runs = [_fake_run(tmp_path / f"s{seed}", 3, seed, {"msp": (0.6, 0.9)}) for seed in (0, 1)]
    out = tmp_path / "classes.png"
    result = runner.invoke(app, ["figure", "classes", *map(str, runs), "--out", str(out)])
    assert result.exit_code == EXIT_BAD_INPUT and "at least two class counts" in result.stderr
    result = runner.invoke(
        app, ["figure", "classes", str(runs[0]), str(tmp_path / "gone"), "--out", str(out)]
    )
    assert result.exit_code == EXIT_MISSING_INPUT and "gone" in result.stderr
    result = runner.invoke(app, ["figure", "classes", *map(str, runs), "--out", str(tmp_path / "f.jpg")])
    assert result.exit_code == EXIT_BAD_INPUT and ".png" in result.stderr
    assert not out.exists() and not os.path.exists(tmp_path / "f.jpg")
