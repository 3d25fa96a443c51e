"""A streamed run killed outright (SIGKILL) resumes to exactly the results of an uninterrupted run.

The real CLI runs in a subprocess with every file-backed set streamed (``$HARNESS_IN_MEMORY_MB=0``)
through two DataLoader worker processes: the ID train set (an image list, so classifier training,
CAM masks and dense training stream it) and a far-OOD list set (streamed by every evaluation pass).
The run is killed at a moment seen in its folder while its workers live, first in classifier
training, then (the rerun) in the outputs and evaluation passes; each time the same command is
run again at once (the orphaned workers may still be alive: they must not keep the folder locked;
whether they still are when the rerun, past its imports, takes the lock depends on the machine, so
``test_a_killed_holders_forked_workers_do_not_keep_its_lock`` in test_run_folder.py pins that down),
and in the end its weights, masks, cached passes and results must equal a reference run's bit for
bit. One run folder is killed twice, not two folders once each: a whole run fewer on 2-core machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from dfb_ood.harness.array_folder import map_arrays

from .test_stale_data import bench_args, write_images
from .test_streaming_train import BENCHMARK as TRAIN_LIST_BENCHMARK
from .test_streaming_train import write_train_set

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file() or not hasattr(signal, "SIGKILL"),
    reason="finds the run's worker processes in /proc and kills the run with SIGKILL",
)

ROOT = Path(__file__).resolve().parents[2]
FAR = 20
# The tiny benchmark with its train set and its far-OOD "textures" set as image lists.
BENCHMARK = TRAIN_LIST_BENCHMARK.replace(
    "textures: {type: shapes, set: textures, count: 40, size: 16}", "files: {type: imglist, list: far.txt}"
)
STEPS = 12  # 3 steps an epoch: a resume checkpoint at step 3, then 9 steps left to kill in
RECIPE_STEPS = f"steps: {STEPS}"
STREAMED = ["files", "train"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("streaming_kill")
    write_train_set(root)
    write_images(root, FAR, seed=0)
    (root / "far.txt").write_text("".join(f"far/{i:02d}.png 0\n" for i in range(FAR)))
    (root / "tiny.yaml").write_text(BENCHMARK)
    recipe = (root / "recipe.yaml").read_text()
    assert "steps: 8\n" in recipe
    (root / "recipe.yaml").write_text(recipe.replace("steps: 8\n", f"{RECIPE_STEPS}\n"))
    return root


def command(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dfb_ood", *bench_args(root, out)]


def environment(root: Path) -> dict[str, str]:
    """Every file-backed set streamed by two workers; one torch thread (2-core test machines)."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HARNESS_IN_MEMORY_MB": "0",
        "HARNESS_DATA_WORKERS": "2",
        "HARNESS_CACHE": str(root / "cache"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def run_to_completion(root: Path, out: Path) -> None:
    result = subprocess.run(
        command(root, out), env=environment(root), cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(data: Path) -> Path:
    """The same command, never interrupted."""
    out = data / "reference"
    run_to_completion(data, out)
    assert json.loads((out / "run.json").read_text())["data_path"]["streamed_sets"] == STREAMED
    return out


def command_line(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone, or not ours to read
        return None


def forked_workers(pid: int) -> dict[int, bytes]:
    """The live children of ``pid`` forked from it (its command line): its DataLoader workers.

    A ``git`` the run starts for its record is a child too, with another command line.
    """
    own = command_line(pid)
    workers = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (name) state ppid ...": the name may hold spaces and parentheses, so split after it
            state, ppid = (entry / "stat").read_text().rpartition(")")[2].split()[:2]
        except (OSError, ValueError):
            continue  # exited while we looked
        if int(ppid) == pid and state != "Z" and (line := command_line(int(entry.name))) == own:
            workers[int(entry.name)] = line
    return workers


@pytest.fixture
def orphans() -> Iterator[dict[int, bytes]]:
    """The workers of the runs a test killed, by pid; those still alive at its end are killed.

    Each is checked against its command line first, so that a reused process id is never hit.
    (They exit by themselves within seconds of noticing their parent is gone.)
    """
    seen: dict[int, bytes] = {}
    yield seen
    for pid, line in seen.items():
        if command_line(pid) == line:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def kill_when(
    root: Path, out: Path, moment: Callable[[], bool], orphans: dict[int, bytes]
) -> dict[int, bytes]:
    """Run the command; SIGKILL it the first time ``moment()`` holds while it has workers; those workers."""
    log = root / f"{out.name}.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            command(root, out), env=environment(root), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 120
        while not (moment() and (workers := forked_workers(process.pid))):
            assert process.poll() is None, (
                f"the run ended (exit {process.returncode}) before the moment to kill it came:\n"
                + log.read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "the moment to kill the run never came"
            time.sleep(0.005)  # a poll interval, not a synchronisation: the condition is checked again
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    orphans.update(workers)
    return workers


def weights(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path))


def cached_passes(run: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every cached pass (the networks' and ODIN's), by path, read into memory."""
    return {
        str(path.relative_to(run)): {key: np.array(value) for key, value in map_arrays(path).items()}
        for path in sorted({p.parent for p in (run / "outputs").rglob("*.npy") if not p.name.startswith(".")})
    }


def assert_same_run(got: Path, want: Path) -> None:
    """Weights, masks, every cached pass and the results: equal to the reference's, bit for bit."""
    for name in ("classifier.safetensors", "dfb.safetensors"):
        a, b = weights(want / name), weights(got / name)
        assert a.keys() == b.keys() and all(np.array_equal(a[key], b[key]) for key in a), name
    assert (got / "masks.npy").read_bytes() == (want / "masks.npy").read_bytes()
    passes, wanted = cached_passes(got), cached_passes(want)
    assert set(passes) == set(wanted), sorted(set(passes) ^ set(wanted))
    assert len(wanted) == 19, sorted(wanted)  # 7 sets x 2 networks + 5 ODIN passes
    for path, arrays in wanted.items():
        assert passes[path].keys() == arrays.keys(), path
        for key, value in arrays.items():
            assert np.array_equal(passes[path][key], value), (path, key)
    for name in ("results.csv", "results.json"):
        assert (got / name).read_bytes() == (want / name).read_bytes(), name
    assert not list(got.rglob("*.tmp*"))  # the killed run's temporaries and scratch maps are gone


def test_a_streamed_run_killed_in_training_then_in_a_pass_resumes_to_identical_results(
    data, reference, orphans
):
    """Killed in classifier training, then (the rerun) in the outputs passes, then run to the end.

    Each run starts the moment the one before is dead, its orphaned workers perhaps still alive:
    they must not keep the folder locked.
    """
    out = data / "killed"
    assert kill_when(data, out, (out / "classifier.resume.pt").exists, orphans)
    assert not (out / "classifier.safetensors").exists()

    # Workers after the first cached pass are those of a streamed outputs or ODIN pass, unfinished.
    assert kill_when(data, out, (out / "outputs" / "classifier" / "train").exists, orphans)
    stages = json.loads((out / "stages.json").read_text())
    assert 0 < stages["classifier"]["resumed_from"] < STEPS  # the first kill came mid-training
    assert stages["dense"]["resumed_from"] == 0
    assert not (out / "results.csv").exists()
    assert 1 <= len(cached_passes(out)) < 19

    run_to_completion(data, out)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete"
    # The last run streamed the sets whose passes it had left to make: at least the interrupted one.
    assert record["data_path"]["streamed_sets"] and set(record["data_path"]["streamed_sets"]) <= set(STREAMED)
    assert_same_run(out, reference)
