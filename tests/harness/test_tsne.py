"""``harness figure tsne``: a bounded, stratified, seeded sample; the embedding; the figure; the errors.

The run folders here are synthetic: a benchmark YAML, ``run.json``, and cached outputs written
with the pipeline's own writers (``save_outputs``, ``write_json``, the checksums of
``stages.json``), in the layout ``harness bench`` leaves. No network is trained: the figure reads
cached outputs only. The report's t-SNE section is checked on a real tiny run in test_report.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dfb_ood.harness import plots, tsne
from dfb_ood.harness.cli import app
from dfb_ood.harness.errors import EXIT_BAD_INPUT, EXIT_MISSING_INPUT, EXIT_RUN_FOLDER
from dfb_ood.harness.io import write_json
from dfb_ood.harness.outputs import save_outputs
from dfb_ood.harness.runfolder import checksums
from tests.harness.test_pipeline import TINY_BENCHMARK

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The tiny benchmark's test sets and sizes (TINY_BENCHMARK); near: unseen, far: textures and noise.
SIZES = {"test": 60, "unseen": 40, "textures": 40, "noise": 40}


def _fake_run(root: Path, *, networks: tuple[str, ...] = ("classifier", "dfb"), dim: int = 16) -> Path:
    """A run folder holding what stage 4 writes, features with some class structure."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tiny.yaml").write_text(TINY_BENCHMARK)
    run = root / "run"
    rng = np.random.default_rng(0)
    test_labels = np.arange(SIZES["test"]) % 6
    centres = rng.normal(0, 3, (8, dim))
    stages = {}
    for network, outputs in (("classifier", 6), ("dfb", 7)):
        if network not in networks:
            continue
        paths = []
        for index, (name, count) in enumerate(SIZES.items()):
            labels = test_labels if name == "test" else np.full(count, -1)
            centre = centres[labels] if name == "test" else centres[5 + index % 3][None]
            features = (centre + rng.normal(0, 1, (count, dim))).astype(np.float32)
            path = run / "outputs" / network / name  # the set's folder of .npy files
            save_outputs(path, rng.normal(size=(count, outputs)).astype(np.float32), features, labels)
            paths.append(path)
        stages[f"outputs_{network}"] = {"key": "k", "files": checksums(run, paths)}
    write_json(run / "stages.json", stages)
    settings = {"benchmark": str(root / "tiny.yaml"), "data_root": None, "seed": 0}
    benchmark = {"name": "tiny_shapes", "num_classes": 6}
    write_json(run / "run.json", {"settings": settings, "network": "rv2_tiny", "benchmark": benchmark})
    return run


# ------------------------------------------------------------------------------------------ sample
def test_the_sample_is_stratified_bounded_and_seeded():
    labels = np.repeat([0, 1, 2], [100, 5, 50])
    rng = np.random.default_rng(0)
    rows = tsne.stratified_sample(labels, 30, rng)
    assert rows.size == 30 and np.all(np.diff(rows) > 0)  # sorted, no repeats
    counts = np.bincount(labels[rows], minlength=3)
    assert counts[1] == 5 and sorted(counts[[0, 2]]) == [12, 13]  # the small class whole, the rest even
    assert np.array_equal(tsne.stratified_sample(labels, 30, np.random.default_rng(0)), rows)
    assert not np.array_equal(tsne.stratified_sample(labels, 30, np.random.default_rng(1)), rows)
    assert np.array_equal(tsne.stratified_sample(labels, 500, rng), np.arange(labels.size))  # all of them


def test_draw_sample_takes_id_classes_and_ood_sets_evenly_and_the_same_rows_for_a_seed():
    labels = np.arange(600) % 10
    sizes = {"ssb": 500, "ninco": 30, "textures": 1000, "inat": 1000}
    groups = {"ssb": "near", "ninco": "near", "textures": "far", "inat": "far"}
    drawn = tsne.draw_sample(labels, sizes, groups, size=100, seed=3)
    assert drawn.test.size == 100 and set(np.bincount(labels[drawn.test])) == {10}
    assert drawn.ood["ninco"].size == 30 and drawn.ood["ssb"].size == 70  # ninco has only 30
    assert drawn.ood["textures"].size == drawn.ood["inat"].size == 50
    for name, rows in drawn.ood.items():
        assert rows.min() >= 0 and rows.max() < sizes[name] and np.unique(rows).size == rows.size
    again = tsne.draw_sample(labels, sizes, groups, size=100, seed=3)
    other = tsne.draw_sample(labels, sizes, groups, size=100, seed=4)
    assert np.array_equal(again.test, drawn.test)
    assert all(np.array_equal(again.ood[n], drawn.ood[n]) for n in sizes)
    assert not np.array_equal(other.test, drawn.test)
    assert not all(np.array_equal(other.ood[n], drawn.ood[n]) for n in sizes)
    for bad in (1, 0, -5):
        with pytest.raises(ValueError, match=f"--sample {bad}: .* at least 2"):
            tsne.draw_sample(labels, sizes, groups, size=bad)


# ------------------------------------------------------------------------------------------ embedding
def test_the_embedding_is_two_dimensional_deterministic_and_takes_tiny_samples():
    features = np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32)
    first = tsne.embed(features, seed=0)
    assert first.shape == (40, 2) and np.isfinite(first).all()
    assert np.array_equal(first, tsne.embed(features, seed=0))
    # Scale does not matter: rows are L2-normalised first.
    assert np.array_equal(tsne.embed(features * 1024, seed=0), first)  # exact in binary floating point
    assert np.allclose(np.linalg.norm(tsne.l2_normalise(features), axis=1), 1.0)
    assert tsne.perplexity_for(900) == 30.0 and tsne.perplexity_for(4) == 1.0
    assert tsne.embed(features[:4], seed=0).shape == (4, 2)  # --sample 2: 2 ID + 2 OOD points


def test_draw_tsne_embeds_the_same_images_for_both_networks(tmp_path: Path):
    features = tsne.read_features(_fake_run(tmp_path))
    assert features.class_names == ("circle", "square", "triangle", "plus", "ring", "star")
    assert features.groups == {"unseen": "near", "textures": "far", "noise": "far"}
    drawn = tsne.draw_tsne(features, tmp_path / "a.png", sample=12, seed=0)
    assert drawn.counts == {"ID test": 12, "near": 12, "far": 12}
    assert drawn.sample.ood["textures"].size == drawn.sample.ood["noise"].size == 6
    assert set(drawn.embeddings) == {"classifier", "dfb"}
    assert all(points.shape == (36, 2) for points in drawn.embeddings.values())
    assert drawn.perplexity == pytest.approx(35 / 3)
    again = tsne.draw_tsne(features, tmp_path / "b.png", sample=12, seed=0)
    assert all(np.array_equal(again.embeddings[n], drawn.embeddings[n]) for n in drawn.embeddings)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    other = tsne.draw_tsne(features, tmp_path / "c.png", sample=12, seed=1)
    assert not np.array_equal(other.sample.test, drawn.sample.test)


def test_a_shared_frozen_backbone_is_shown_in_logit_space(tmp_path: Path):
    """With one frozen backbone (recipe frozen) both networks' pooled features are the same arrays and
    the two panels would be one picture twice: "auto" then embeds the logits, the DFB net's K+1 of
    them; "features" still embeds the (identical) features when asked."""
    import dataclasses

    features = tsne.read_features(_fake_run(tmp_path))
    assert not features.shared_features() and features.space("auto") == "features"
    shared = dataclasses.replace(
        features,
        test={n: features.test["classifier"] for n in features.test},
        ood={n: features.ood["classifier"] for n in features.ood},
    )
    assert shared.shared_features() and shared.space("auto") == "logits"
    drawn = tsne.draw_tsne(shared, tmp_path / "a.png", sample=12, seed=0)
    assert not np.array_equal(drawn.embeddings["classifier"], drawn.embeddings["dfb"])
    forced = tsne.draw_tsne(shared, tmp_path / "b.png", sample=12, seed=0, space="features")
    assert np.array_equal(forced.embeddings["classifier"], forced.embeddings["dfb"])
    with pytest.raises(ValueError, match="--space 'pixels': choose one of auto, features, logits"):
        shared.space("pixels")


def test_many_classes_share_one_legend_entry(tmp_path: Path):
    rng = np.random.default_rng(0)
    classes = np.concatenate([np.arange(60) % 30, np.full(10, -1)])
    kinds = np.array(["id"] * 60 + ["near"] * 5 + ["far"] * 5)
    names = [f"class{i}" for i in range(30)]
    fig = plots.tsne_panels(
        {"a": rng.normal(size=(70, 2)), "b": rng.normal(size=(70, 2))},
        classes,
        kinds,
        names,
        {"near": "near-OOD: x (n=5)", "far": "far-OOD: y (n=5)"},
        tmp_path / "t.png",
        title="t",
        footnote="f",
    )
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["ID test: colour = class\n(30 of 30 classes)", "near-OOD: x (n=5)", "far-OOD: y (n=5)"]
    assert len(set(plots.class_colours(30))) == 30 and len(plots.class_colours(6)) == 6


# ------------------------------------------------------------------------------------------ CLI
def test_the_cli_writes_a_png_into_the_report_folder(tmp_path: Path):
    run = _fake_run(tmp_path)
    result = runner.invoke(app, ["figure", "tsne", str(run), "--sample", "10"])
    assert result.exit_code == 0, result.output
    path = run / "report" / "tsne.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 10_000
    assert f"wrote {path}" in result.stderr.replace("\n", "")
    assert "10 ID test, 10 near, 10 far" in " ".join(result.stderr.split())
    assert result.stdout == ""
    # --out, another format; --sets keeps the sets named (repeated or comma-separated).
    out = tmp_path / "figs" / "near.svg"
    result = runner.invoke(
        app, ["figure", "tsne", str(run), "--out", str(out), "--sample", "6", "--sets", "unseen", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "<svg" in out.read_text(encoding="utf-8") and result.stderr == ""
    result = runner.invoke(app, ["figure", "tsne", str(run), "--out", str(out), "--sets", "noise,unseen"])
    assert result.exit_code == 0 and "near, 10 far" not in result.stderr and "far" in result.stderr
    # A report written as SVG: the default figure follows its format.
    (run / "report" / "report.md").write_text("Figure format: `svg` (vector, embedded below).\n")
    assert runner.invoke(app, ["figure", "tsne", str(run), "--sample", "4", "-q"]).exit_code == 0
    assert (run / "report" / "tsne.svg").is_file()


def test_a_link_at_the_figure_is_replaced_not_written_through(tmp_path: Path):
    run = _fake_run(tmp_path)
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"mine")
    (run / "report").mkdir()
    (run / "report" / "tsne.png").symlink_to(victim)
    assert runner.invoke(app, ["figure", "tsne", str(run), "--sample", "4", "-q"]).exit_code == 0
    assert victim.read_bytes() == b"mine" and not (run / "report" / "tsne.png").is_symlink()


def _fails(args: list[str], code: int, *needles: str) -> str:
    result = runner.invoke(app, ["figure", "tsne", *args])
    assert result.exit_code == code, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_errors_name_the_path_or_value_and_the_fix(tmp_path: Path):
    run = _fake_run(tmp_path / "ok")
    _fails([str(tmp_path / "nowhere")], EXIT_MISSING_INPUT, "nowhere does not exist", "harness bench")
    (tmp_path / "file").write_text("x")
    _fails([str(tmp_path / "file")], EXIT_RUN_FOLDER, "is a file, not a run folder")
    (tmp_path / "empty").mkdir()
    _fails([str(tmp_path / "empty")], EXIT_MISSING_INPUT, "has no run.json", "harness bench --out")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text(json.dumps({"name": "not a run"}))
    _fails([str(tmp_path / "other")], EXIT_RUN_FOLDER, "not a harness run record")
    _fails([str(run), "--sample", "1"], EXIT_BAD_INPUT, "--sample 1", "at least 2")
    _fails([str(run), "--sets", "nope"], EXIT_BAD_INPUT, "--sets nope", "unseen, textures, noise")
    _fails([str(run), "--sets", ","], EXIT_BAD_INPUT, "--sets: give OOD test set names")
    _fails([str(run), "--out", str(tmp_path / "f.jpg")], EXIT_BAD_INPUT, "f.jpg", ".png, .pdf, .svg")
    (tmp_path / "dir.png").mkdir()
    _fails([str(run), "--out", str(tmp_path / "dir.png")], EXIT_BAD_INPUT, "dir.png is a folder")
    plain = _fake_run(tmp_path / "plain", networks=("classifier",))
    _fails([str(plain)], EXIT_MISSING_INPUT, "outputs/dfb/test is missing", "--post energy_dfb")
    damaged = run / "outputs" / "dfb" / "noise" / "features.npy"
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"12345678")
    _fails([str(run)], EXIT_RUN_FOLDER, "noise/features.npy does not match the checksum", "harness bench")
    # Nothing was written by any failing call.
    assert not (run / "report").exists() and not (plain / "report").exists()
    assert not (tmp_path / "f.jpg").exists() and not (tmp_path / "empty" / "report").exists()


def test_a_report_folder_that_is_a_link_is_refused(tmp_path: Path):
    run = _fake_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "report").symlink_to(elsewhere, target_is_directory=True)
    _fails([str(run)], EXIT_RUN_FOLDER, "symbolic link", "--out")
    assert not list(elsewhere.iterdir())


def test_an_edited_benchmark_definition_is_refused(tmp_path: Path):
    run = _fake_run(tmp_path)
    text = (tmp_path / "tiny.yaml").read_text()
    (tmp_path / "tiny.yaml").write_text(
        text.replace("num_classes: 6", "num_classes: 5").replace(", star]", "]")
    )
    _fails([str(run)], EXIT_RUN_FOLDER, "the run has 6 ID classes", "now has 5")
    (tmp_path / "tiny.yaml").unlink()
    _fails([str(run)], EXIT_MISSING_INPUT, "cannot read the run's benchmark definition", "tiny.yaml")
