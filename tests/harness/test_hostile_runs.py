"""Reading and writing a run from outside it: escaped report.md, a report that holds the run's lock,
report/verify from any folder, clear --checkpoint errors, full disks, long names, closed stdout."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dfb_ood.harness.report as report_module
from dfb_ood.harness.array_folder import save_arrays
from dfb_ood.harness.errors import RunLockedError
from dfb_ood.harness.io import run_lock, write_text
from dfb_ood.harness.markdown import markdown_escape
from dfb_ood.harness.report import write_report
from dfb_ood.harness.run import BenchSettings, Pipeline
from dfb_ood.harness.runfolder import _is_temporary
from dfb_ood.harness.verify import summary, verify_run
from dfb_ood.networks.atomic import NAME_MAX, atomic_path, atomic_write
from tests.harness.test_pipeline import TINY_BENCHMARK, TINY_RECIPE

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
RAW_TAG = re.compile(r"(?<!\\)<\s*(script|img)\b", re.IGNORECASE)
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


#: Where names with markup still reach report.md: the run folder's own name (a set or benchmark
#: name with markup is refused by harness.names, since it becomes a file name).
RUN_NAME = f"run {IMG} a|b\nsecond line"


def _markup_benchmark() -> str:
    """The tiny benchmark with names full of Markdown's special characters (still valid file names)."""
    text = TINY_BENCHMARK.replace("name: tiny_shapes", "name: tiny_shapes+v1.2")
    return text.replace("    unseen:", "    un_seen+1:").replace("    textures:", "    tex-tures_a.b:")


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of a benchmark with markup names, made with relative --benchmark/--recipe/--out."""
    where = tmp_path_factory.mktemp("bench_here")
    (where / "markup.yaml").write_text(_markup_benchmark())
    (where / "recipe.yaml").write_text(TINY_RECIPE)
    before = os.getcwd()
    os.chdir(where)
    try:
        settings = BenchSettings(
            benchmark="markup.yaml",
            recipe="recipe.yaml",
            out=Path(RUN_NAME),
            detectors=["msp"],
            device="cpu",
            quiet=True,
        )
        Pipeline(settings).run()
    finally:
        os.chdir(before)
    return where / RUN_NAME


@pytest.mark.parametrize(
    "name", [SCRIPT, IMG, "a|b", "line\nbreak", "tab\tand\x1bescape", "`code` *x* [l](u)"]
)
def test_markdown_escape_keeps_a_name_one_literal_cell(name: str) -> None:
    shown = markdown_escape(name)
    assert not RAW_TAG.search(shown)
    assert not UNESCAPED_PIPE.search(shown) and "\n" not in shown and "\x1b" not in shown
    assert not re.search(r"(?<!\\)[`*\[]", shown)


def test_report_md_shows_names_from_files_as_text(relative_run: Path, tmp_path: Path) -> None:
    path = write_report(relative_run, tmp_path / "report")
    text = path.read_text(encoding="utf-8")
    assert not RAW_TAG.search(text), "a name from the benchmark file reached report.md as HTML"
    shown = next(line for line in text.splitlines() if line.startswith("Run directory:"))
    assert "second line" in shown  # the newline of the folder's name is shown, not a line break
    table: list[int] = []
    for line in text.splitlines():
        if line.startswith("|"):
            table.append(len(UNESCAPED_PIPE.findall(line)))
        elif table:
            assert len(set(table)) == 1, f"a table row was split: cell counts {table}"
            table = []


def test_report_holds_the_run_lock_until_report_md_is_written(
    relative_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bench that starts while the report is drawing must wait: the report never mixes two runs."""
    taken: list[bool] = []

    def probe(view: object, out_dir: Path, figure_format: str) -> report_module.Section:
        with open(relative_run / "run.lock", "a+") as handle:  # another open file: flock conflicts
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                taken.append(True)
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            except BlockingIOError:
                taken.append(False)
        return report_module.Section("probe", skipped="test")

    monkeypatch.setattr(report_module, "FIGURES", (probe,))
    write_report(relative_run, tmp_path / "report")
    assert taken == [False], "a writer could take the run folder while the report was being made"


def test_report_and_verify_wait_briefly_then_name_the_holder(
    relative_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_module, "READ_WAIT_S", 0.3)
    monkeypatch.setattr("dfb_ood.harness.verify.READ_WAIT_S", 0.3)
    out = tmp_path / "report"
    with run_lock(relative_run):
        with pytest.raises(RunLockedError, match=r"in use by pid \d+; wait for it to finish"):
            write_report(relative_run, out)
        with pytest.raises(RunLockedError, match=r"in use by pid \d+; wait for it to finish"):
            verify_run(relative_run)
    assert not out.exists()


@pytest.mark.parametrize("old_record", [False, True], ids=["recorded-cwd", "record-without-cwd"])
def test_report_and_verify_work_from_another_folder(
    relative_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old_record: bool
) -> None:
    record = json.loads((relative_run / "run.json").read_text())
    assert record["settings"]["benchmark"] == "markup.yaml" and "cwd" in record
    if old_record:  # a run made before the cwd was recorded: found from the relative --out
        shutil.copytree(relative_run.parent, tmp_path / "bench_copy")
        relative_run = tmp_path / "bench_copy" / RUN_NAME
        record.pop("cwd")
        write_text(relative_run / "run.json", json.dumps(record))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert write_report(relative_run, tmp_path / "report").is_file()
    counts = summary(verify_run(relative_run))
    assert counts["stale"] == 0 and counts["damaged"] == 0
    assert list(elsewhere.iterdir()) == []


def test_a_lost_relative_benchmark_is_named(relative_run: Path, tmp_path: Path) -> None:
    from dfb_ood.harness.runfolder import recorded_settings

    record = json.loads((relative_run / "run.json").read_text())
    record["cwd"] = str(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match=r"records the benchmark as 'markup.yaml'.*run this command"):
        recorded_settings(record, tmp_path / "somewhere" / "run")


@pytest.mark.parametrize("inside", [["classifier.safetensors"], [], ["a.pt", "b.safetensors"]])
def test_checkpoint_folder_says_it_is_a_folder(tmp_path: Path, inside: list[str]) -> None:
    from dfb_ood.harness.preflight import check_checkpoint

    folder = tmp_path / "weights"
    folder.mkdir()
    for name in inside:
        (folder / name).write_bytes(b"x")
    with pytest.raises(ValueError, match="is a folder") as error:
        check_checkpoint(folder)
    assert ".safetensors" in str(error.value)
    if len(inside) == 1:
        assert str(folder / inside[0]) in str(error.value)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_a_text_file_as_checkpoint_is_named_not_readable(tmp_path: Path, suffix: str) -> None:
    from dfb_ood.harness.preflight import check_checkpoint

    path = tmp_path / f"notes{suffix}"
    path.write_text("these are my notes, not weights\n")
    with pytest.raises(ValueError) as error:
        check_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and "not a readable" in message
    assert "learning rate" not in message and " lr" not in message


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write gets EFBIG instead of the process a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
import numpy as np, torch
from dfb_ood.harness.array_folder import save_arrays
from dfb_ood.harness.io import write_text
from dfb_ood.harness.train import save_state
folder = Path(sys.argv[1])
net = torch.nn.Linear(1000, 100)
writes = {
    "x.resume.pt": lambda path: save_state(path, net, torch.optim.SGD(net.parameters(), lr=0.1), 1, "dense"),
    "a": lambda path: save_arrays(path, {"a": np.zeros(100_000)}),  # a set's outputs folder
    "t.txt": lambda path: write_text(path, "x" * 200_000),
}
for name, write in writes.items():
    try:
        write(folder / name)
        print(name, "written")
    except OSError as error:
        print(name, error.errno, error)
"""


def test_a_full_disk_names_the_file_and_the_fix(tmp_path: Path) -> None:
    """A write the file system has no room for (here a file-size limit) names the file, never
    PyTorch's ``enforce fail ... unexpected pos``; nothing is left behind."""
    folder = tmp_path / "out"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        name = line.split()[0]
        assert "unexpected pos" not in line and "enforce fail" not in line
        assert str(folder / name) in line and ("no space left" in line or "file too large" in line)
        assert "another --out" in line
    assert list(folder.iterdir()) == []


def test_torch_short_write_becomes_no_space(tmp_path: Path) -> None:
    target = tmp_path / "x.pt"
    with pytest.raises(OSError, match=rf"no space left on device writing {re.escape(str(target))}"):
        with atomic_path(target):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("length", [244, 250, NAME_MAX])
def test_a_long_file_name_can_be_written_atomically(tmp_path: Path, length: int) -> None:
    name = "r" * (length - 4) + ".csv"
    seen: list[str] = []

    def write(handle: object) -> None:
        seen.extend(p.name for p in tmp_path.iterdir())
        handle.write(b"a,b\n")  # type: ignore[attr-defined]

    atomic_write(tmp_path / name, write)
    assert (tmp_path / name).read_bytes() == b"a,b\n"
    assert len(seen) == 1 and _is_temporary(seen[0]) and len(seen[0].encode()) <= NAME_MAX
    with atomic_path(tmp_path / ("é" * 120 + ".png"), suffix=".png") as tmp:  # 2-byte characters
        assert len(tmp.name.encode()) <= NAME_MAX and _is_temporary(tmp.name) and tmp.name.endswith(".png")
        tmp.write_bytes(b"png")
    save_arrays(tmp_path / ("n" * 250), {"a": np.array([1, 2])})  # a set's outputs folder
    assert (tmp_path / ("n" * 250) / "a.npy").is_file()


def _harness(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script, "sh", sys.executable, "-m", "dfb_ood"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("script", "codes"),
    [
        ('{ "$@" list; echo "harness exit $?" >&2; } | true', ("141", "0")),  # the reader has gone
        ('{ "$@" list; echo "harness exit $?" >&2; } | head -1 >/dev/null', ("141", "0")),
        ('"$@" list >&-; echo "harness exit $?" >&2', ("0",)),  # stdout closed before the start
        ('"$@" --version >&-; echo "harness exit $?" >&2', ("0",)),
    ],
    ids=["closed-pipe", "head-1", "closed-stdout-list", "closed-stdout-version"],
)
def test_a_closed_or_broken_stdout_ends_quietly(script: str, codes: tuple[str, ...]) -> None:
    done = _harness(script)
    match = re.search(r"harness exit (\d+)", done.stderr)
    assert match is not None and match.group(1) in codes, done.stderr
    assert done.stderr.strip() == match.group(0), done.stderr  # no traceback, no "Exception ignored"
