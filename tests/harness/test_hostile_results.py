"""Issue 22, two classes: exports never replace a file harness did not write, and results that the run
did not write as they are (hand-edited, cut off, mixed from two runs) are never shown as results.

One finished tiny run (MSP only) is made per module; each test works on a private copy.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dfb_ood.harness.cli import app

from .test_pipeline import TINY_BENCHMARK, TINY_RECIPE

runner = CliRunner()


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile_results")
    (root / "tiny.yaml").write_text(TINY_BENCHMARK)
    (root / "recipe.yaml").write_text(TINY_RECIPE)
    argv = ["bench", "--benchmark", str(root / "tiny.yaml"), "--recipe", str(root / "recipe.yaml"),
            "--out", str(root / "run"), "--post", "msp", "--device", "cpu", "--no-report",
            "--quiet"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def invoke(*argv: str):  # noqa: ANN201 - click's Result
    return runner.invoke(app, list(argv))


# ------------------------------------------------------------------------------------ exports
def _user_file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("my own file\n")
    return path


EXPORTS: dict[str, Callable[[Path, Path], tuple[list[str], Path, tuple[str, ...]]]] = {
    "run-results-csv": lambda run, tmp: (
        ["leaderboard", str(run), "--format", "csv", "-o", str(run / "results.csv")],
        run / "results.csv",
        ("results.csv", "run folder"),
    ),
    "run-json": lambda run, tmp: (
        ["leaderboard", str(run), "--format", "json", "-o", str(run / "run.json"), "--overwrite"],
        run / "run.json",
        ("run.json",),
    ),
    "csv-over-results-json": lambda run, tmp: (
        ["leaderboard", str(run), "--csv", str(run / "results.json")],
        run / "results.json",
        ("results.json",),
    ),
    "user-table": lambda run, tmp: (
        ["leaderboard", str(run), "--format", "markdown", "-o", str(_user_file(tmp / "mine", "table.md"))],
        tmp / "mine" / "table.md",
        ("table.md", "--overwrite"),
    ),
    "openood-user-manifest": lambda run, tmp: (
        ["leaderboard", str(run), "--format", "openood", "-o",
         str(_user_file(tmp / "mine", "manifest.json").parent)],
        tmp / "mine" / "manifest.json",
        ("manifest.json", "--overwrite"),
    ),
    "report-user-md": lambda run, tmp: (
        ["report", str(run), "--out", str(_user_file(tmp / "mine", "report.md").parent), "--quiet"],
        tmp / "mine" / "report.md",
        ("report.md", "--out"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(EXPORTS))
def test_an_export_never_replaces_a_file_harness_did_not_write(run: Path, tmp_path: Path, case: str) -> None:
    argv, protected, mentions = EXPORTS[case](run, tmp_path)
    before = sha(protected)
    result = invoke(*argv)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert sha(protected) == before
    for word in mentions:
        assert word in result.output, result.output
    assert not list(protected.parent.glob(".*.tmp"))


def test_harness_replaces_its_own_export_and_overwrite_replaces_the_users(run: Path, tmp_path: Path) -> None:
    table = tmp_path / "table.md"
    for _ in range(2):  # the second write replaces the first: harness wrote it
        result = invoke("leaderboard", str(run), "--format", "markdown", "-o", str(table))
        assert result.exit_code == 0, result.output
    table.write_text("edited by me\n")  # now it is the user's
    assert invoke("leaderboard", str(run), "--format", "markdown", "-o", str(table)).exit_code != 0
    assert table.read_text() == "edited by me\n"
    result = invoke("leaderboard", str(run), "--format", "markdown", "-o", str(table), "--overwrite")
    assert result.exit_code == 0, result.output
    assert table.read_text().startswith("| detector")


def test_a_special_file_is_written_into_not_replaced(run: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # a null device of our own: broken code replaces it, not the machine's /dev/null
        null = tmp_path / "null"
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        result = invoke("leaderboard", str(run), "--format", "markdown", "-o", str(null))
        assert result.exit_code == 0, result.output
        assert stat.S_ISCHR(os.lstat(null).st_mode)
    link = tmp_path / "stream"  # a /dev/stdout-style link, here to a FIFO another process reads
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        result = invoke("leaderboard", str(run), "--format", "markdown", "-o", str(link))
        assert result.exit_code == 0, result.output
        assert os.read(reader, 1 << 16).startswith(b"| detector")
    finally:
        os.close(reader)
    assert link.is_symlink() and stat.S_ISFIFO(os.stat(fifo).st_mode)
    # a FIFO nobody reads: a clear error at once, not a hang
    result = invoke("leaderboard", str(run), "--format", "markdown", "-o", str(fifo))
    assert result.exit_code != 0 and "fifo" in result.output


# ------------------------------------------------------------------------------------ results
def _edit_cell(column: str, value: str) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        with open(run / "results.csv", newline="") as handle:
            reader = csv.DictReader(handle)
            fields, rows = list(reader.fieldnames or []), list(reader)
        next(row for row in rows if row["dataset"] == "near_mean")[column] = value
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (run / "results.csv").write_text(buffer.getvalue())

    return change


def _cut_mid_row(run: Path) -> None:
    data = (run / "results.csv").read_bytes()
    (run / "results.csv").write_bytes(data[: data.index(b"\n", len(data) // 2) + 15])


def _cut_rows(run: Path) -> None:
    lines = (run / "results.csv").read_bytes().splitlines(keepends=True)
    (run / "results.csv").write_bytes(b"".join(lines[:-2]))


#: edit -> words the refusal must contain (the file, the value or what is wrong, the fix)
EDITS: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "auroc-1.5": (_edit_cell("auroc", "1.5"), ("results.csv", "1.5", "auroc", "harness verify")),
    "auroc--0.2": (_edit_cell("auroc", "-0.2"), ("results.csv", "-0.2", "harness verify")),
    "auroc-nan": (_edit_cell("auroc", "nan"), ("results.csv", "nan", "harness verify")),
    "auroc-inf": (_edit_cell("auroc", "inf"), ("results.csv", "inf", "harness verify")),
    "auroc-150": (_edit_cell("auroc", "150"), ("results.csv", "150", "harness verify")),
    "fpr-text": (_edit_cell("fpr95", "n/a"), ("results.csv", "n/a", "fpr95")),
    "plausible-edit": (_edit_cell("auroc", "0.99"), ("results.csv", "changed", "harness verify")),
    "cut-mid-row": (_cut_mid_row, ("results.csv", "cut off")),
    "cut-whole-rows": (_cut_rows, ("results.csv", "cut off")),
    "huge-cell": (_edit_cell("hyperparameters", "x" * 200_000), ("results.csv", "cell")),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_results_the_run_did_not_write_are_refused(run: Path, case: str) -> None:
    change, mentions = EDITS[case]
    change(run)
    result = invoke("leaderboard", str(run))
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and "_csv.Error" not in result.output
    text = " ".join(result.output.split())
    for word in mentions:
        assert word in text, text


@pytest.mark.parametrize("name", ["results.csv", "results.json"])
def test_verify_finds_an_edited_results_file(run: Path, name: str) -> None:
    path = run / name
    path.write_text(path.read_text().replace("0.", "0.0", 1))
    result = invoke("verify", str(run), "--json")
    assert result.exit_code == 4, result.output
    checks = {c["file"]: c["status"] for c in json.loads(result.stdout)["checks"]}
    assert checks[name] == "damaged"


def test_an_excel_resave_of_the_runs_own_results_is_read(run: Path) -> None:
    before = invoke("leaderboard", str(run), "--json")
    data = (run / "results.csv").read_bytes()
    (run / "results.csv").write_bytes(b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n"))
    after = invoke("leaderboard", str(run), "--json")
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout) == json.loads(before.stdout)
    assert invoke("verify", str(run)).exit_code == 0


def _as_seed(run: Path, seed: int, *, other_definition: bool = False) -> None:
    """Make a copy look like a run of another seed (checksums recorded as a real run records them)."""
    text = (run / "results.csv").read_text()
    lines = text.splitlines(keepends=True)
    header = lines[0].split(",")
    column = header.index("seed")
    rows = []
    for line in lines[1:]:
        cells = next(csv.reader([line]))
        cells[column] = str(seed)
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(cells)
        rows.append(buffer.getvalue())
    (run / "results.csv").write_text(lines[0] + "".join(rows))
    record = json.loads((run / "run.json").read_text())
    record["identity"]["seed"] = record["settings"]["seed"] = seed
    if other_definition:
        record["identity"]["benchmark_definition"] = "0123456789abcdef"
    (run / "run.json").write_text(json.dumps(record))
    stages = json.loads((run / "stages.json").read_text())
    if "results" in stages:  # (a version that records no results checksums has none to update)
        stages["results"]["files"]["results.csv"] = sha(run / "results.csv")
    (run / "stages.json").write_text(json.dumps(stages))


@pytest.mark.parametrize(
    ("seed", "other_definition", "mentions"),
    [(0, False, ("seed 0",)), (0, True, ("seed 0",)), (1, True, ("benchmark_definition",))],
)
def test_runs_are_averaged_as_seeds_only_when_their_identities_allow(
    run: Path, tmp_path: Path, seed: int, other_definition: bool, mentions: tuple[str, ...]
) -> None:
    other = tmp_path / "other"
    shutil.copytree(run, other)
    _as_seed(other, seed, other_definition=other_definition)
    result = invoke("leaderboard", str(run), str(other))
    assert result.exit_code != 0, result.output
    text = " ".join(result.output.split())
    for word in (*mentions, str(run), str(other)):
        assert word in text, text


def test_two_seeds_of_one_experiment_are_averaged(run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(run, other)
    _as_seed(other, 1)
    result = invoke("leaderboard", str(run), str(other), "--format", "json")
    assert result.exit_code == 0, result.output
    assert {row["seeds"] for row in json.loads(result.stdout)["rows"]} == {2}
