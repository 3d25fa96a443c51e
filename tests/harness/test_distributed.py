"""Several processes (torchrun, gloo on the CPU) give the single-process result, and the helpers behind it.

The end-to-end check trains both stages with 2 processes and with 1, same seed and same global
batch, and compares every metric and every trained weight. Its recipe is the pipeline tests' tiny
one cut to 6 steps per stage and with mixup on (so the partner draw is covered): on this tiny
network the trajectories of *any* two float-different runs (even one process with 1 vs 2 OpenMP
threads) drift apart chaotically after ~8 steps, so a longer run could not tell a bug from noise.
Within 6 steps the weights agree to ~1e-7 and the metrics exactly, while a wrong loss scale or an
unsynchronised gradient shows up as weight differences of 1e-4 and more.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from typer.testing import CliRunner

from harness import distributed
from harness.cli import app
from harness.distributed import World, gather_rows, shard_range, strip_launcher_options, torchrun_command
from harness.recipes import load_recipe
from harness.train import train_network
from networks import create_network

from .test_pipeline import TINY_BENCHMARK, TINY_RECIPE, bench_args

METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95", "id_accuracy")
runner = CliRunner()


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "tiny.yaml").write_text(TINY_BENCHMARK)
    recipe = TINY_RECIPE.replace("steps: 24", "steps: 6\nmixup_alpha: 0.1")
    (tmp_path / "recipe.yaml").write_text(recipe)
    return {"benchmark": tmp_path / "tiny.yaml", "recipe": tmp_path / "recipe.yaml", "root": tmp_path}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def harness_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def run_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def assert_same_run(single: Path, multi: Path) -> None:
    """Metrics within 1e-4 (observed: identical), weights within 1e-6 (observed: <= 6e-8)."""
    rows_1, rows_2 = read_rows(single / "results.csv"), read_rows(multi / "results.csv")
    assert [(r["detector"], r["dataset"]) for r in rows_1] == [(r["detector"], r["dataset"]) for r in rows_2]
    for row_1, row_2 in zip(rows_1, rows_2):
        for metric in METRICS:
            assert float(row_2[metric]) == pytest.approx(float(row_1[metric]), abs=1e-4), (row_1, metric)
    for net in ("classifier", "dfb"):
        weights_1, weights_2 = (
            load_file(single / f"{net}.safetensors"),
            load_file(multi / f"{net}.safetensors"),
        )
        assert weights_1.keys() == weights_2.keys()  # DDP must not prefix the saved keys
        for key, tensor in weights_1.items():
            np.testing.assert_allclose(weights_2[key], tensor, rtol=0, atol=1e-6, err_msg=f"{net} {key}")
    np.testing.assert_array_equal(np.load(multi / "masks.npy"), np.load(single / "masks.npy"))
    with (
        np.load(single / "outputs" / "dfb" / "test.npz") as a,
        np.load(multi / "outputs" / "dfb" / "test.npz") as b,
    ):
        np.testing.assert_array_equal(a["labels"], b["labels"])  # gathered in dataset order
        np.testing.assert_allclose(a["logits"], b["logits"], rtol=0, atol=1e-5)
    # Only rank 0 wrote, and nothing but what a single process writes (no stray resume files).
    assert files_under(multi) == files_under(single)


def test_two_processes_train_and_evaluate_like_one(tiny):
    """`--launcher torchrun --nproc 2` re-executes under torch.distributed.run: DDP with gloo on the CPU."""
    single, multi = tiny["root"] / "single", tiny["root"] / "multi"
    subprocess.run(harness_command(*bench_args(tiny, single)), check=True, env=run_env(), capture_output=True)
    launched = subprocess.run(
        harness_command(*bench_args(tiny, multi), "--json", "--launcher", "torchrun", "--nproc", "2"),
        env=run_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert_same_run(single, multi)
    printed = json.loads(launched.stdout)  # one table, from rank 0 only
    assert [row["auroc"] for row in printed] == pytest.approx(
        [float(row["auroc"]) for row in read_rows(multi / "results.csv")]
    )
    record = json.loads((multi / "run.json").read_text())
    assert record["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert json.loads((single / "run.json").read_text())["distributed"] == {"world_size": 1, "backend": None}
    stages_1 = json.loads((single / "stages.json").read_text())
    stages_2 = json.loads((multi / "stages.json").read_text())
    assert {k: v["key"] for k, v in stages_1.items()} == {k: v["key"] for k, v in stages_2.items()}
    # the logged loss is the global batch's loss (all-reduced), not rank 0's share
    for stage in ("classifier", "dense"):
        assert stages_2[stage]["final_loss"] == pytest.approx(stages_1[stage]["final_loss"], abs=1e-5)


def test_resume_on_two_processes_from_a_one_process_checkpoint(tiny, monkeypatch):
    """A run killed mid-classifier resumes under torchrun: both ranks load rank 0's checkpoint."""
    reference, resumed = tiny["root"] / "reference", tiny["root"] / "resumed"
    env = run_env()
    subprocess.run(harness_command(*bench_args(tiny, reference)), check=True, env=env, capture_output=True)
    monkeypatch.setenv("HARNESS_FAIL_AT_STEP", "classifier:3")
    failed = runner.invoke(app, bench_args(tiny, resumed))
    assert failed.exit_code == 2 and (resumed / "classifier.resume.pt").is_file()
    monkeypatch.delenv("HARNESS_FAIL_AT_STEP")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "harness",
        *bench_args(tiny, resumed),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((resumed / "stages.json").read_text())["classifier"]["resumed_from"] == 3
    assert_same_run(reference, resumed)


# ---------------------------------------------------------------------------- helpers, one process
def test_shards_are_contiguous_balanced_and_cover_every_row():
    for n in (0, 1, 5, 7, 192):
        for size in (1, 2, 3, 4):
            ranges = [shard_range(n, rank, size) for rank in range(size)]
            assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
            lengths = [b - a for a, b in ranges]
            assert max(lengths) - min(lengths) <= 1
    assert gather_rows(np.arange(6), 6) is not None  # alone: the part is the whole
    with pytest.raises(ValueError, match="its shard of 6 is 6"):
        gather_rows(np.arange(5), 6)


def test_launcher_builds_the_torchrun_command_and_passes_its_exit_code(tiny, monkeypatch):
    argv = [
        "--debug",
        "bench",
        "--launcher",
        "torchrun",
        "--nproc=2",
        "--quiet",
        "--launcher=torchrun",
        "--nproc",
        "2",
    ]
    assert strip_launcher_options(argv) == ["--debug", "bench", "--quiet"]
    command = torchrun_command(argv, 3)
    assert command[:5] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=3",
    ]
    assert command[5:] == ["-m", "harness", "--debug", "bench", "--quiet"]

    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 7)
    args = [*bench_args(tiny, tiny["root"] / "out"), "--launcher", "torchrun", "--nproc", "2"]
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, args)
    assert result.exit_code == 7, result.output  # the launcher's exit code is the command's
    assert calls == [torchrun_command(bench_args(tiny, tiny["root"] / "out"), 2)]
    assert not (tiny["root"] / "out").exists()  # the launching process itself computes nothing

    bad = runner.invoke(app, [*bench_args(tiny, tiny["root"] / "out"), "--nproc", "2"])
    assert bad.exit_code == 2 and "--nproc only applies with --launcher torchrun" in bad.output
    if not torch.cuda.is_available():
        no_gpu = runner.invoke(app, [*bench_args(tiny, tiny["root"] / "out"), "--launcher", "torchrun"])
        assert no_gpu.exit_code == 2 and "pass --nproc N" in no_gpu.output


def test_device_per_local_rank_under_torchrun(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.device_for("cuda:1") == torch.device("cuda:1")  # alone: as asked
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launched()
    assert distributed.device_for("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="each process uses cuda:<LOCAL_RANK>"):
        distributed.device_for("cuda:1")
    assert distributed.world() == World()  # nothing is joined until init()


def test_global_batch_must_split_over_the_processes(tiny, monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: World(rank=0, size=3, backend="gloo"))
    recipe = load_recipe(tiny["recipe"])  # global batch 32
    net = create_network("rv2_tiny", 6)
    with pytest.raises(ValueError, match="global batch of 32 does not split evenly over 3 processes"):
        train_network(
            net,
            torch.zeros(40, 3, 16, 16, dtype=torch.uint8),
            torch.zeros(40, dtype=torch.int64),
            recipe,
            mode="classifier",
            mean=(0.5,) * 3,
            std=(0.5,) * 3,
            device=torch.device("cpu"),
            seed=0,
            checkpoint=tiny["root"] / "x.resume.pt",
        )


# ---------------------------------------------------------------------------- helpers, two processes
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _collectives_worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    team = distributed.init(torch.device("cpu"))
    assert team == World(rank=rank, size=2, local_rank=rank, backend="gloo")
    assert distributed.is_main() == (rank == 0)
    assert distributed.from_main(f"rank {rank}") == "rank 0"
    for n in (5, 1):  # uneven shards, and an empty one
        full = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
        start, stop = shard_range(n)
        np.testing.assert_array_equal(gather_rows(full[start:stop], n), full)
        on_main = gather_rows(full[start:stop].astype(np.uint8), n, dst=0)
        if rank == 0:
            np.testing.assert_array_equal(on_main, full.astype(np.uint8))
        else:
            assert on_main is None
    mean = distributed.average(torch.tensor([float(rank), 2.0 * rank]))
    torch.testing.assert_close(mean, torch.tensor([0.5, 1.0]))
    distributed.barrier()
    distributed.finish()
    distributed.shutdown()
    assert distributed.world() == World()
    Path(folder, f"rank{rank}.ok").write_text("ok")


def test_collectives_gather_in_dataset_order_on_two_gloo_processes(tmp_path):
    torch.multiprocessing.spawn(_collectives_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    assert {p.name for p in tmp_path.iterdir()} == {"rank0.ok", "rank1.ok"}
