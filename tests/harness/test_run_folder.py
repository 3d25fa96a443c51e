"""A run folder never loses results, never uses a damaged artifact, and refuses what is not its own.

One finished tiny run is made per module and copied for each test (the copies keep every
artifact), so each test pays only for what it changes.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dfb_ood.harness.cli import app
from dfb_ood.harness.errors import RunFolderError, RunLockedError
from dfb_ood.harness.io import read_lock, run_lock
from dfb_ood.harness.runfolder import check_run_folder, identity_differences, merge_rows

from .test_pipeline import TINY_BENCHMARK, TINY_RECIPE

runner = CliRunner()
FIRST = "msp,energy_dfb,bg"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def args(files: dict[str, Path], out: Path, post: str = FIRST, *extra: str) -> list[str]:
    return [
        "bench",
        "--benchmark",
        str(files["benchmark"]),
        "--recipe",
        str(files["recipe"]),
        "--out",
        str(out),
        "--post",
        post,
        "--device",
        "cpu",
        "--no-report",
        "--quiet",
        *extra,
    ]


def eval_args(files: dict[str, Path], out: Path, post: str) -> list[str]:
    return ["eval", *[a for a in args(files, out, post)[1:] if a != "--no-report"]]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finished")
    files = {"benchmark": root / "tiny.yaml", "recipe": root / "recipe.yaml"}
    files["benchmark"].write_text(TINY_BENCHMARK)
    files["recipe"].write_text(TINY_RECIPE)
    result = runner.invoke(app, args(files, root / "run"))
    assert result.exit_code == 0, result.output
    return {**files, "run": root / "run"}


@pytest.fixture
def run(finished, tmp_path) -> dict[str, Path]:
    """A private copy of the finished run (same benchmark and recipe files)."""
    copy = tmp_path / "run"
    shutil.copytree(finished["run"], copy)
    return {**finished, "run": copy, "root": tmp_path}


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------ results accumulate
def test_a_rerun_with_other_detectors_keeps_the_earlier_rows(run):
    before = read_rows(run["run"] / "results.csv")
    result = runner.invoke(app, args(run, run["run"], "mls_dfb,knn"))
    assert result.exit_code == 0, result.output
    rows = read_rows(run["run"] / "results.csv")
    assert rows[: len(before)] == before  # earlier rows untouched, in their place
    assert [r["detector"] for r in rows[::6]] == ["msp", "energy_dfb", "bg", "mls_dfb", "knn"]
    detectors = {d["name"] for d in json.loads((run["run"] / "results.json").read_text())["detectors"]}
    assert detectors == {"msp", "energy_dfb", "bg", "mls_dfb", "knn"}

    # Evaluating a detector again replaces its rows (here: with the same numbers) and keeps the rest.
    again = runner.invoke(app, eval_args(run, run["run"], "msp"))
    assert again.exit_code == 0, again.output
    assert read_rows(run["run"] / "results.csv") == rows

    # The leaderboard and a rebuilt report see every detector.
    board = runner.invoke(app, ["leaderboard", str(run["run"]), "--json"])
    assert {r["detector"] for r in json.loads(board.stdout)} == {"msp", "energy_dfb", "bg", "mls_dfb", "knn"}


def test_eval_rebuilds_an_existing_report_from_all_rows(run):
    assert runner.invoke(app, ["report", str(run["run"]), "--quiet"]).exit_code == 0
    assert "knn" not in (run["run"] / "report" / "report.md").read_text()
    result = runner.invoke(app, eval_args(run, run["run"], "knn"))
    assert result.exit_code == 0, result.output
    report = (run["run"] / "report" / "report.md").read_text()
    assert "knn" in report and "energy_dfb" in report


def test_merge_rows_replaces_whole_detectors_in_place():
    old = [{"detector": d, "dataset": s, "auroc": 0.1} for d in ("a", "b") for s in ("x", "near_mean")]
    new = [{"detector": d, "dataset": s, "auroc": 0.9} for d in ("c", "a") for s in ("x", "near_mean")]
    merged = merge_rows(old, new)
    assert [(r["detector"], r["auroc"]) for r in merged] == [
        ("a", 0.9), ("a", 0.9), ("b", 0.1), ("b", 0.1), ("c", 0.9), ("c", 0.9),
    ]  # fmt: skip


# ------------------------------------------------------------------------------ damaged artifacts
@pytest.mark.parametrize(
    ("artifact", "how"),
    [
        ("outputs/classifier/test/logits.npy", "truncate"),
        ("outputs/dfb/textures/features.npy", "overwrite"),
        ("masks.npy", "truncate"),
        ("dfb.safetensors", "overwrite"),
    ],
)
def test_a_damaged_artifact_is_recomputed_never_used(run, artifact, how):
    reference = read_rows(run["run"] / "results.csv")
    path = run["run"] / artifact
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # 64 bytes in the middle, same size
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
        path.write_bytes(bytes(data))
    # A re-opened run cannot recompute: it names the file instead of reading it.
    report = runner.invoke(app, ["report", str(run["run"]), "--out", str(run["root"] / "r"), "--quiet"])
    assert report.exit_code == 4 and artifact in report.output and "Traceback" not in report.output
    # The pipeline recomputes it, says so, and gets the results it had.
    result = runner.invoke(app, [a for a in args(run, run["run"]) if a != "--quiet"])
    assert result.exit_code == 0, result.output
    assert "recomputing" in result.output and artifact in result.output
    assert read_rows(run["run"] / "results.csv") == reference


def test_every_artifact_is_recorded_with_its_checksum(run):
    stages = json.loads((run["run"] / "stages.json").read_text())
    recorded = {name for record in stages.values() for name in record.get("files", {})}
    assert {
        "classifier.safetensors",
        "classifier.json",
        "masks.npy",
        "dfb.safetensors",
        "dfb.json",
    } <= recorded
    sets = ("train", "test", "textures", "noise", "unseen")
    arrays = ("logits", "features", "labels")
    assert {f"outputs/dfb/{s}/{a}.npy" for s in sets for a in arrays} <= recorded


# ------------------------------------------------------------------------------ permissions
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_artifact_follows_the_umask(finished, tmp_path, umask):
    previous = os.umask(umask)
    try:
        out = tmp_path / "run"
        result = runner.invoke(app, [a for a in args(finished, out) if a != "--no-report"])
        assert result.exit_code == 0, result.output
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert "classifier.safetensors" in modes and "report/report.md" in modes
    assert {name: mode for name, mode in modes.items() if mode != 0o666 & ~umask} == {}


# ------------------------------------------------------------------------------ other settings, other files
def test_a_run_folder_refuses_other_settings_unless_overwrite(run):
    before = listing(run["run"])
    result = runner.invoke(app, args(run, run["run"], FIRST, "--steps", "12"))
    assert result.exit_code == 4 and "recipe.steps: 24 -> 12" in result.output
    assert "--overwrite" in result.output and "Traceback" not in result.output
    assert listing(run["run"]) == before  # nothing touched
    replaced = runner.invoke(app, args(run, run["run"], "msp", "--steps", "12", "--overwrite"))
    assert replaced.exit_code == 0, replaced.output
    rows = read_rows(run["run"] / "results.csv")
    assert {r["detector"] for r in rows} == {"msp"}  # the earlier run's rows described other networks
    assert json.loads((run["run"] / "run.json").read_text())["identity"]["recipe"]["steps"] == 12


def test_a_folder_of_the_users_own_files_is_never_written(run):
    folder = run["root"] / "mine"
    folder.mkdir()
    (folder / "results.csv").write_text("my,own\n1,2\n")
    (folder / "run.json").write_text('{"paper": "draft"}')
    before = listing(folder)
    for extra in ((), ("--overwrite",)):
        result = runner.invoke(app, args(run, folder, FIRST, *extra))
        assert result.exit_code == 4 and "harness did not write" in result.output
    assert listing(folder) == before


def test_identity_differences_name_each_setting():
    old = {"seed": 0, "recipe": {"steps": 24, "lr": 0.1}, "network": "rv2_tiny"}
    new = {"seed": 1, "recipe": {"steps": 12, "lr": 0.1}, "network": "rv2_tiny", "skip_bad": True}
    assert identity_differences(old, new) == ["seed: 0 -> 1", "recipe.steps: 24 -> 12"]
    assert check_run_folder(Path("/nonexistent/run"), new, overwrite=False) is False


# ------------------------------------------------------------------------------ the lock
def test_a_symlinked_lock_is_refused_and_its_target_untouched(run):
    victim = run["root"] / "victim.txt"
    victim.write_text("precious\n")
    (run["run"] / "run.lock").unlink()
    (run["run"] / "run.lock").symlink_to(victim)
    with pytest.raises(RunFolderError, match="symbolic link"):
        with run_lock(run["run"]):
            pass
    result = runner.invoke(app, args(run, run["run"]))
    assert result.exit_code == 4 and "symbolic link" in result.output
    report = runner.invoke(app, ["report", str(run["run"]), "--out", str(run["root"] / "r"), "--quiet"])
    assert report.exit_code == 4
    assert victim.read_text() == "precious\n"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_a_lock_file_of_another_user_locks_but_is_never_written(tmp_path):
    lock = tmp_path / "run.lock"
    lock.write_text("another user's words\n")
    os.chown(lock, 12345, 12345)
    with run_lock(tmp_path):
        assert lock.read_text() == "another user's words\n"
        with pytest.raises(RunFolderError, match="in use"):
            with run_lock(tmp_path):
                pass
    assert lock.read_text() == "another user's words\n"


def test_reading_a_finished_run_writes_nothing_into_it(run):
    (run["run"] / "run.lock").unlink()  # a folder copied from elsewhere, or read-only: no lock to open
    before = listing(run["run"])
    result = runner.invoke(
        app, ["report", str(run["run"]), "--out", str(run["root"] / "elsewhere"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert (run["root"] / "elsewhere" / "report.md").is_file()
    assert listing(run["run"]) == before


def test_a_writer_blocks_readers_and_readers_block_no_one(run):
    with read_lock(run["run"]), read_lock(run["run"]):
        pass
    with run_lock(run["run"]):
        with pytest.raises(RunFolderError, match="in use"):
            with read_lock(run["run"]):
                pass


# A process that takes a lock on a folder, then forks a worker the way a DataLoader does (the
# "fork" start method) and waits to be killed. The worker prints its pid once it runs, then lives
# until the test closes the pipe it reads.
HOLDER = """
import multiprocessing, os, sys
from dfb_ood.harness.io import read_lock, run_lock

def worker(hold):
    print(os.getpid(), flush=True)
    os.read(hold, 1)

folder, kind, hold = sys.argv[1], sys.argv[2], int(sys.argv[3])
with (run_lock if kind == "run_lock" else read_lock)(folder):
    multiprocessing.get_context("fork").Process(target=worker, args=(hold,)).start()
    os.read(hold, 1)
"""


def read_line(process: subprocess.Popen, deadline_s: float) -> str:
    """One line of the process's output, failing (not hanging) when none comes in time."""
    ready, _, _ = select.select([process.stdout], [], [], deadline_s)
    if not ready:
        errors = process.stderr.read() if process.poll() is not None else "(still running)"
        pytest.fail(f"no output within {deadline_s} s; stderr: {errors}")
    return process.stdout.readline()


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork on this system")
@pytest.mark.parametrize("kind", ["run_lock", "read_lock"])
def test_a_killed_holders_forked_workers_do_not_keep_its_lock(tmp_path, kind):
    """A run killed while its DataLoader workers live frees the folder at once, not when they exit.

    The workers share the lock's open file description; were their copies kept open, the lock would
    outlive the run by the seconds the orphans take to notice, and an immediate rerun would fail.
    """
    (tmp_path / "run.lock").touch()  # read_lock creates nothing
    hold, keep = os.pipe()
    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), kind, str(hold)],
        cwd=root,
        pass_fds=[hold],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(hold)
    try:
        worker = int(read_line(holder, 60))
        # The worker closed its copy without unlocking: the holder's lock still stands.
        with pytest.raises(RunLockedError, match="in use"):
            with run_lock(tmp_path):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        os.kill(worker, 0)  # the orphaned worker lives on (it would raise ProcessLookupError)
        started = time.monotonic()
        with run_lock(tmp_path, wait_s=0):
            assert (tmp_path / "run.lock").read_text() == f"pid {os.getpid()}\n"
        assert time.monotonic() - started < 1.0
        os.kill(worker, 0)  # still alive: the lock was free while it was
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
        holder.stderr.close()
        os.close(keep)  # the worker reads the end of its pipe and exits


# ------------------------------------------------------------------------------ faults during a run
def test_a_full_disk_names_the_file_system_and_what_was_kept(run, monkeypatch):

    (run["run"] / "outputs").rename(run["root"] / "gone")  # the outputs stage must run again

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(run["run"] / "outputs" / "dfb" / "x"))

    import dfb_ood.harness.stage_outputs
    monkeypatch.setattr(dfb_ood.harness.stage_outputs, "save_outputs", full)
    result = runner.invoke(app, args(run, run["run"]))
    assert result.exit_code == 5 and "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert "no space left on the file system holding" in message
    assert "kept: classifier, masks, dense" in message and "run the same command again" in message


def test_nan_logits_name_the_checkpoint_that_made_them(run):
    import torch

    from dfb_ood.networks import create_network, save_checkpoint

    net = create_network("rv2_tiny", 6)
    with torch.no_grad():
        net.head_weight.fill_(float("nan"))
    checkpoint = run["root"] / "broken.safetensors"
    save_checkpoint(net, checkpoint)
    result = runner.invoke(app, args(run, run["root"] / "nan", "msp", "--checkpoint", str(checkpoint)))
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert str(checkpoint) in message and "non-finite logit" in message


def test_stage_outputs_refuse_nan_from_a_trained_network(run):
    """The message for a diverged training names the network file and its final loss."""
    from dfb_ood.harness.run import BenchSettings, Pipeline

    pipeline = Pipeline(
        BenchSettings(
            benchmark=str(run["benchmark"]), recipe=str(run["recipe"]), out=run["run"], device="cpu"
        )
    )
    logits = np.zeros((3, 7), dtype=np.float32)
    logits[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"dfb network .*dfb\.safetensors \(final training loss"):
        pipeline._check_finite("dfb", "textures", logits, np.zeros((3, 4), dtype=np.float32))


def test_temporaries_of_a_killed_write_are_removed_on_the_next_run(run):
    left = [
        run["run"] / ".masks_preview.png.k3j2.tmp.png",
        run["run"] / "outputs" / "dfb" / ".logits.x1.tmp.scratch.npy",
        run["run"] / "outputs" / "dfb" / ".test.x1.tmp",  # a set's folder, half written
    ]
    for path in left[:-1]:
        path.write_bytes(b"half a file")
    left[-1].mkdir()
    (left[-1] / "logits.npy").write_bytes(b"half a file")
    (run["run"] / ".hidden_notes").write_text("not ours to delete")
    assert runner.invoke(app, args(run, run["run"])).exit_code == 0
    assert not any(path.exists() for path in left)
    assert (run["run"] / ".hidden_notes").exists()


def test_the_search_record_follows_the_rows(run):
    """run.json's chosen hyper-parameters describe the rows results.csv holds, after every rerun."""

    def record() -> dict:
        return json.loads((run["run"] / "run.json").read_text())["search"]

    assert runner.invoke(app, args(run, run["run"], "odin", "--search")).exit_code == 0
    assert set(record()) == {"odin"}
    assert runner.invoke(app, args(run, run["run"], "msp")).exit_code == 0
    assert set(record()) == {"odin"}  # odin's rows (and choice) are kept
    assert runner.invoke(app, args(run, run["run"], "odin")).exit_code == 0
    assert record() == {}  # odin evaluated again without a search: no stale choice left
    replaced = runner.invoke(app, args(run, run["run"], "odin", "--search", "--steps", "12", "--overwrite"))
    assert replaced.exit_code == 0, replaced.output
    assert set(record()) == {"odin"}  # --overwrite keeps this run's own choice
