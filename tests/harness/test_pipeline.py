"""End to end: every stage through the CLI on a tiny configuration, resume, skip, lock, merge."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dfb_ood.harness.cli import app
from dfb_ood.harness.io import RunLockedError, run_lock
from dfb_ood.harness.outputs import forward_outputs, head_arrays
from dfb_ood.harness.run import BenchSettings, Pipeline
from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.registry import create

TINY_BENCHMARK = """
name: tiny_shapes
num_classes: 6
class_names: [circle, square, triangle, plus, ring, star]
image_size: 16
channels: 3
normalization: {mean: [0.5], std: [0.5]}
transforms:
  test: {resize: 16, crop: 16}
id:
  train: {type: shapes, set: train, count: 192, size: 16}
  val: {type: shapes, set: val, count: 48, size: 16}
  test: {type: shapes, set: test, count: 60, size: 16}
ood:
  val: {type: shapes, set: ood_val, count: 30, size: 16}
  near:
    unseen: {type: shapes, set: near_unseen_shapes, count: 40, size: 16}
  far:
    textures: {type: shapes, set: textures, count: 40, size: 16}
    noise: {type: shapes, set: noise, count: 40, size: 16}
"""

TINY_RECIPE = """
name: tiny
description: a few steps of the smallest network, for tests
network: rv2_tiny
optimizer: {lr: 0.05, momentum: 0.9, weight_decay: 0.0005}
batch_size: 32
steps: 24
warmup_steps: 2
lr_drops: [0.7]
train_transform: {pad: 2, crop: 16, flip: true}
eval_size: 16
dense: {scale: [0.75, 1.5], flip: true}
cam: {scales: [1.0, 2.0], flip: true, sigma: 0.0, theta: 0.5, target: label}
checkpoint_every_s: 600
"""

DETECTORS = "msp,odin,energy_dfbz,vim_dfb,odin_dfb,bg"
runner = CliRunner()


def bench_args(tiny: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "bench",
        "--benchmark",
        str(tiny["benchmark"]),
        "--recipe",
        str(tiny["recipe"]),
        "--out",
        str(out),
        "--post",
        DETECTORS,
        "--device",
        "cpu",
        "--no-report",
        "--quiet",
        *extra,
    ]


def without_report_flag(args: list[str]) -> list[str]:
    return [arg for arg in args if arg != "--no-report"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_bench_runs_every_stage_and_writes_artifacts(tiny):
    out = tiny["root"] / "run"
    result = runner.invoke(
        app, without_report_flag(bench_args(tiny, out, "--csv", str(tiny["root"] / "copy.csv")))
    )
    assert result.exit_code == 0, result.output
    report = (out / "report" / "report.md").read_text()  # bench writes the report by default
    assert "temperature_sweep.png" in report and (out / "report" / "temperature_sweep.png").is_file()
    for name in (
        "classifier.safetensors",
        "dfb.safetensors",
        "masks.npy",
        "masks_preview.png",
        "run.json",
        "results.csv",
        "results.json",
        "stages.json",
    ):
        assert (out / name).is_file(), name
    masks = np.load(out / "masks.npy")
    assert masks.shape == (192, 16, 16) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= set(range(7))
    agreement = json.loads((out / "masks.json").read_text())["vs_true_objects"]
    assert 0.0 <= agreement["iou"] <= 1.0 and set(agreement) == {"iou", "precision", "recall"}
    for net in ("classifier", "dfb"):
        for set_name in ("train", "val", "test", "ood_val", "unseen", "textures", "noise"):
            assert sorted(p.name for p in (out / "outputs" / net / set_name).iterdir()) == [
                "features.npy",
                "labels.npy",
                "logits.npy",
            ]
    rows = read_rows(out / "results.csv")
    detectors = DETECTORS.split(",")
    # per detector: 3 OOD sets + near_mean + far_mean + all_mean
    assert len(rows) == len(detectors) * 6
    assert [r["detector"] for r in rows[::6]] == detectors
    assert {r["fpr_convention"] for r in rows} == {"paper"}
    for row in rows:
        for key in ("auroc", "aupr_in", "aupr_out", "fpr95", "id_accuracy"):
            assert 0.0 <= float(row[key]) <= 1.0
    assert read_rows(tiny["root"] / "copy.csv") == rows
    run = json.loads((out / "run.json").read_text())
    assert run["device"] == "cpu" and run["recipe"]["steps"] == 24
    assert {"classifier", "masks", "dense", "outputs", "evaluate"} <= set(run["timings_s"])
    assert "torch" in run["versions"]
    # when it ran, UTC, ISO 8601 (provenance the page and exports show; in no key or result)
    assert run["started_utc"].endswith("Z") and run["started_utc"] <= run["finished_utc"]
    assert run["git_dirty"] in (True, False, None)
    by = {(r["detector"], r["dataset"]): r for r in rows}
    assert by[("msp", "far_mean")]["detector_network"] == "classifier"
    assert by[("bg", "far_mean")]["detector_network"] == "dfb"

    # Running the same command again skips every stage: no weights are rewritten.
    stamp = (out / "classifier.safetensors").stat().st_mtime_ns, (out / "dfb.safetensors").stat().st_mtime_ns
    again = runner.invoke(app, bench_args(tiny, out))
    assert again.exit_code == 0, again.output
    assert json.loads((out / "run.json").read_text())["started_utc"] == run["started_utc"]  # the run's date
    assert stamp == (
        (out / "classifier.safetensors").stat().st_mtime_ns,
        (out / "dfb.safetensors").stat().st_mtime_ns,
    )
    assert read_rows(out / "results.csv") == rows

    # DFB variants can take their foreground from the classifier: no new forward pass is needed.
    outputs_before = sorted(p.name for p in (out / "outputs" / "classifier").iterdir())
    swapped = runner.invoke(app, [*bench_args(tiny, out)[:-1], "--foreground", "classifier", "--json"])
    assert swapped.exit_code == 0, swapped.output
    swapped_rows = json.loads(swapped.output)
    assert {r["detector_network"] for r in swapped_rows if "_dfb" in r["detector"]} == {"classifier+dfb"}
    assert {r["detector_network"] for r in swapped_rows if r["detector"] == "bg"} == {"dfb"}
    assert sorted(p.name for p in (out / "outputs" / "classifier").iterdir()) == outputs_before
    runner.invoke(app, bench_args(tiny, out))  # back to the default for the checks below

    # A finished run re-opens read-only: networks and cached outputs, nothing recomputed.
    reopened = Pipeline.from_run_dir(out)
    nets, outputs = reopened.artifacts()
    assert set(nets) == {"classifier", "dfb"} and nets["dfb"].background
    assert len(outputs["dfb"].test) == 60
    assert set(outputs["classifier"].ood) == {"unseen", "textures", "noise"}

    # Scoring the cached outputs equals scoring a fresh forward pass.
    images, labels = reopened.arrays("textures")
    logits, features = forward_outputs(
        nets["dfb"], images, mean=(0.5,) * 3, std=(0.5,) * 3, size=16, device=torch.device("cpu")
    )
    weight, bias = head_arrays(nets["dfb"])
    fresh = Outputs(
        logits=logits, features=features, labels=labels, weight=weight, bias=bias, background=True
    )
    cached = outputs["dfb"].ood["textures"]
    np.testing.assert_allclose(fresh.logits, cached.logits, rtol=1e-6, atol=1e-6)
    for name in ("vim_dfbz", "knn_dfb", "bg"):
        detector = create(name, **({"k": 5} if "knn" in name else {})).fit(
            outputs["dfb"].train, outputs["dfb"].val
        )
        np.testing.assert_allclose(detector.score(fresh), detector.score(cached), rtol=1e-5, atol=1e-5)

    # `harness report` re-renders into another folder from the finished run alone.
    rendered = runner.invoke(app, ["report", str(out), "--out", str(tiny["root"] / "rendered"), "--quiet"])
    assert rendered.exit_code == 0, rendered.output
    assert (tiny["root"] / "rendered" / "report.md").is_file()

    # The leaderboard command re-reads results without recomputing.
    board = runner.invoke(app, ["leaderboard", str(out), "--json"])
    assert board.exit_code == 0, board.output
    assert len(json.loads(board.output)) == len(rows)


def test_injected_failure_mid_dense_resumes_to_identical_results(tiny, monkeypatch):
    reference = tiny["root"] / "reference"
    assert runner.invoke(app, bench_args(tiny, reference)).exit_code == 0
    interrupted = tiny["root"] / "interrupted"
    monkeypatch.setenv("HARNESS_FAIL_AT_STEP", "dense:13")
    failed = runner.invoke(app, bench_args(tiny, interrupted))
    assert failed.exit_code == 1 and "stopped on purpose" in failed.output  # an unexpected failure
    assert (interrupted / "dfb.resume.pt").is_file() and not (interrupted / "dfb.safetensors").exists()
    monkeypatch.delenv("HARNESS_FAIL_AT_STEP")
    resumed = runner.invoke(app, bench_args(tiny, interrupted))
    assert resumed.exit_code == 0, resumed.output
    stages = json.loads((interrupted / "stages.json").read_text())
    assert stages["dense"]["resumed_from"] == 13
    assert read_rows(interrupted / "results.csv") == read_rows(reference / "results.csv")


def test_killed_process_resumes_to_identical_results(tiny):
    """A real SIGKILL while the dense stage trains, then the same command again."""
    recipe = tiny["recipe"].read_text().replace("steps: 24", "steps: 400")
    tiny["recipe"].write_text(recipe)
    reference = tiny["root"] / "reference"
    args = [sys.executable, "-m", "dfb_ood"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*args, *bench_args(tiny, reference)], check=True, env=env, capture_output=True)
    killed = tiny["root"] / "killed"
    process = subprocess.Popen(
        [*args, *bench_args(tiny, killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (killed / "dfb.resume.pt").exists():
        assert process.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "results.csv").exists()
    subprocess.run([*args, *bench_args(tiny, killed)], check=True, env=env, capture_output=True)
    stages = json.loads((killed / "stages.json").read_text())
    assert stages["dense"]["resumed_from"] > 0
    assert read_rows(killed / "results.csv") == read_rows(reference / "results.csv")


def test_reopening_an_incomplete_run_refuses_to_recompute(tiny):
    out = tiny["root"] / "partial"
    assert runner.invoke(app, ["masks", *without_report_flag(bench_args(tiny, out))[1:]]).exit_code == 0
    with pytest.raises(ValueError, match="dense stage is missing"):
        Pipeline.from_run_dir(out).artifacts()
    with pytest.raises(FileNotFoundError, match="has no run.json"):
        Pipeline.from_run_dir(tiny["root"] / "nowhere")


def test_dense_init_from_pretrained_weights_is_honoured(tiny):
    """rv2_tiny has no published weights, so the paper's init must fail clearly, not fall back."""
    tiny["recipe"].write_text(tiny["recipe"].read_text().replace("dense: {", "dense: {init: pretrained, "))
    result = runner.invoke(app, bench_args(tiny, tiny["root"] / "pretrained"))
    assert result.exit_code == 2 and "no published pretrained weights" in result.output


def test_second_process_on_a_locked_run_directory_fails_clearly(tiny):
    out = tiny["root"] / "locked"
    settings = BenchSettings(
        benchmark=str(tiny["benchmark"]), recipe=str(tiny["recipe"]), out=out, device="cpu", quiet=True
    )
    with run_lock(out):
        code = f"from dfb_ood.harness.io import run_lock\nwith run_lock({str(out)!r}): pass"
        child = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
        )
        assert child.returncode != 0 and "is in use by pid" in child.stderr
        with pytest.raises(RunLockedError, match="wait for it to finish or use another --out"):
            Pipeline(settings).run(until="classifier")
    Pipeline(settings).run(until="classifier")  # free again once the holder is gone
    assert (out / "classifier.safetensors").is_file()


def test_bad_input_gives_one_line_errors(tiny):
    result = runner.invoke(app, ["bench", "--benchmark", str(tiny["root"] / "missing.yaml"), "--quiet"])
    assert result.exit_code == 3  # missing input
    assert "error:" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, bench_args(tiny, tiny["root"] / "x", "--fpr-convention", "hendrycks"))
    # Click's usage error (exit 2, harness.errors' bad option), naming the value and the choices.
    assert result.exit_code == 2 and result.stdout == ""
    assert all(word in result.stderr for word in ("'hendrycks'", "'paper'", "'openood'"))


def test_search_chooses_on_validation_and_records_the_choice(tiny):
    out = tiny["root"] / "searched"
    args = [*bench_args(tiny, out)[:-1], "--search", "--json"]
    args[args.index("--post") + 1] = "knn_dfbz,odin,msp"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    chosen = {r["detector"]: r["hyperparameters"] for r in rows}
    assert chosen["knn_dfbz"].startswith("bg_weight=") and "k=" in chosen["knn_dfbz"]
    assert "noise=" in chosen["odin"] and "temperature=" in chosen["odin"]
    assert chosen["msp"] == ""  # nothing to search
    record = json.loads((out / "run.json").read_text())["search"]
    assert set(record) == {"knn_dfbz", "odin"} and record["odin"]["grid_points"] == 16
    assert read_rows(out / "results.csv")[0]["hyperparameters"] == chosen["knn_dfbz"]


def test_leaderboard_reference_prints_ours_beside_the_paper(tmp_path):
    from dfb_ood.harness.io import write_json
    from dfb_ood.harness.leaderboard import write_csv

    run = tmp_path / "run"
    base = {"benchmark": "cifar10_dfb", "network": "rv2_tiny", "seed": 0, "detector": "msp",
            "detector_network": "classifier", "group": "far", "aupr_in": 0.9, "aupr_out": 0.9,
            "fpr_convention": "openood", "id_accuracy": 0.9, "hyperparameters": ""}  # fmt: skip
    rows = [
        {**base, "dataset": "svhn", "auroc": 0.9, "fpr95": 0.3},
        {**base, "dataset": "all_mean", "auroc": 0.91, "fpr95": 0.25, "group": "all_mean"},
    ]
    write_csv(run / "results.csv", rows)
    write_json(run / "run.json", {"network": "rv2_tiny", "eval_size": 32})
    result = runner.invoke(app, ["leaderboard", str(run), "--reference", "dfb-paper", "--json"])
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.output)["comparison"]
    svhn = next(c for c in comparison if c["dataset"] == "svhn" and c["metric"] == "auroc")
    assert svhn["theirs"] == pytest.approx(0.9572) and svhn["ours"] == pytest.approx(0.9)
    caveats = " ".join(c for row in comparison for c in row["caveats"])
    assert "convention" in caveats.lower() and "bit" in caveats.lower()
    nothing = runner.invoke(app, ["leaderboard", str(run), "--reference", "openood-v1.5"])
    assert nothing.exit_code == 0 and "No row of these runs matches" in nothing.output
