"""Provenance on the page and in every export: each run's date, commit and versions, "unknown"
where an old run.json lacks them, and hostile values never shown raw."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from dfb_ood.harness.export import build_table, openood_manifest, openood_tables, openood_text, render
from dfb_ood.harness.html_page import INDEX, write_leaderboard_page
from dfb_ood.harness.leaderboard import read_csv
from dfb_ood.harness.provenance import MAX_NAME, UNKNOWN, VERSION_NAMES, run_provenance, runs_provenance

from .test_html_page import make_run

COMMIT = "0123456789abcdef0123456789abcdef01234567"
VERSIONS = {"dfb-ood": "0.3.0", "python": "3.11.9", "torch": "2.4.1+cpu", "torchvision": "0.19.1",
            "timm": "1.0.9", "numpy": "1.26.4", "scikit-learn": "1.5.2"}  # fmt: skip


def _record(run_dir: Path, **fields: object) -> None:
    record = {"status": "complete", "settings": {}, "benchmark": {"name": "tiny"}, "network": "net"}
    (run_dir / "run.json").write_text(json.dumps({**record, **fields}))


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    """Seed 0 records its provenance (a dirty tree); seed 1 is an old run with no run.json fields."""
    new, old = make_run(tmp_path / "runs", 0), make_run(tmp_path / "runs", 1, report=False)
    _record(new, git_commit=COMMIT, git_dirty=True, versions=VERSIONS,
            started_utc="2026-12-08T00:10:00Z", finished_utc="2026-12-08T00:12:30Z")  # fmt: skip
    _record(old)
    return [new, old]


NEW_TEXT = (
    "seed0: date 2026-12-08T00:10:00Z, commit 0123456789+dirty, dfb-ood 0.3.0, python 3.11.9, "
    "torch 2.4.1+cpu, torchvision 0.19.1, timm 1.0.9, numpy 1.26.4, scikit-learn 1.5.2"
)
OLD_TEXT = "seed1: date unknown, commit unknown, " + ", ".join(f"{n} unknown" for n in VERSION_NAMES)


def test_provenance_of_a_recorded_an_old_and_a_missing_run(two_runs: list[Path], tmp_path: Path) -> None:
    new, old = runs_provenance(two_runs)
    assert new.summary() == NEW_TEXT and old.summary() == OLD_TEXT
    assert new.as_dict()["started_utc"] == "2026-12-08T00:10:00Z" and new.as_dict()["git_commit"] == COMMIT
    assert (new.benchmark, new.network) == ("tiny", "net")
    missing = run_provenance(tmp_path / "nowhere")  # no folder at all: unknowns, no error
    assert missing.commit_text == missing.date == UNKNOWN


def test_hostile_values_read_as_unknown_and_names_are_bounded(tmp_path: Path) -> None:
    run = make_run(tmp_path, 0, name="r" * 200)
    _record(run, git_commit="<script>alert(1)</script>", versions={"torch": "2.4\n<b>", "numpy": ["1"]},
            started_utc="yesterday", finished_utc="2026-12-08T00:12:30",  # no zone: not UTC
            git_dirty="yes", network="x" * 500)  # fmt: skip
    got = run_provenance(run)
    assert got.commit == got.started == got.finished == got.network == UNKNOWN
    assert got.dirty is None and set(got.versions.values()) == {UNKNOWN}
    assert len(got.name) == MAX_NAME and got.name.endswith("…")
    (run / "run.json").write_text("[1, 2")  # unreadable: unknowns too
    assert run_provenance(run).versions_text == ", ".join(f"{n} unknown" for n in VERSION_NAMES)
    offset = run_provenance(make_run(tmp_path, 1))
    assert offset.date == UNKNOWN
    _record(tmp_path / "seed1", finished_utc="2026-12-08T02:12:30+02:00")
    assert run_provenance(tmp_path / "seed1").date == "2026-12-08T00:12:30Z"  # shown in UTC


def _table(runs: list[Path]):
    rows = [row for run in runs for row in read_csv(run / "results.csv")]
    return build_table(rows, title="2 runs", runs=runs_provenance(runs))


def test_csv_export_has_a_runs_column_read_by_csv_and_pandas(two_runs: list[Path]) -> None:
    text = render(_table(two_runs), "csv")
    lines = list(csv.DictReader(io.StringIO(text)))
    assert lines and all(line["runs"] == f"{NEW_TEXT}; {OLD_TEXT}" for line in lines)
    frame = pd.read_csv(io.StringIO(text))
    assert len(frame) == len(lines) and frame["runs"].iloc[0] == f"{NEW_TEXT}; {OLD_TEXT}"
    plain = render(build_table([r for run in two_runs for r in read_csv(run / "results.csv")]), "csv")
    assert "runs" not in plain.splitlines()[0].split(",")  # without provenance: as before


def test_json_export_lists_the_runs(two_runs: list[Path]) -> None:
    document = json.loads(render(_table(two_runs), "json"))
    new, old = document["runs"]
    assert new["git_commit"] == COMMIT and new["git_dirty"] is True and new["versions"] == VERSIONS
    assert new["finished_utc"] == "2026-12-08T00:12:30Z"
    assert old["git_commit"] == old["started_utc"] == old["finished_utc"] == UNKNOWN
    assert set(old["versions"].values()) == {UNKNOWN}


def test_markdown_latex_and_html_exports_state_the_runs(two_runs: list[Path]) -> None:
    markdown = render(_table(two_runs), "markdown")
    assert markdown.startswith("| detector |")  # the table first, as without provenance
    caption = markdown.split("\n\n")[-1]  # the caption paragraph ends with the runs
    assert caption.startswith("FPR@95") and caption.endswith(
        "\nRuns: seed0: date 2026-12-08T00:10:00Z, commit 0123456789+dirty, dfb-ood 0.3.0, python 3.11.9, "
        "torch 2.4.1+cpu, torchvision 0.19.1, timm 1.0.9, numpy 1.26.4, scikit-learn 1.5.2; "
        f"{OLD_TEXT}.\n"
    )
    latex = render(_table(two_runs), "latex").splitlines()
    assert latex[1:3] == [f"% run {NEW_TEXT}", f"% run {OLD_TEXT}"] and latex[3] == r"\begin{table}[htbp]"
    page = render(_table(two_runs), "html")
    assert f"<li>{NEW_TEXT}</li>" in page and f"<li>{OLD_TEXT}</li>" in page


def test_openood_text_and_manifest_carry_the_runs(two_runs: list[Path]) -> None:
    provenance = runs_provenance(two_runs)
    tables = openood_tables(read_csv(two_runs[0] / "results.csv"))
    text = openood_text(tables, provenance).splitlines()
    assert text[1:3] == [f"# run {NEW_TEXT}", f"# run {OLD_TEXT}"]
    manifest = openood_manifest(tables, {}, {str(run): p for run, p in zip(two_runs, provenance)})
    assert manifest["runs"][str(two_runs[0])]["git_commit"] == COMMIT
    assert manifest["runs"][str(two_runs[1])]["versions"]["torch"] == UNKNOWN
    assert "runs" not in openood_manifest(tables, {})  # without provenance: as before


def test_page_runs_table_shows_date_commit_and_versions(two_runs: list[Path], tmp_path: Path) -> None:
    _record(two_runs[1], git_commit='"><script>x</script>', versions={"torch": "<i>2</i>"})
    write_leaderboard_page(two_runs, tmp_path / "page")
    text = (tmp_path / "page" / INDEX).read_text(encoding="utf-8")
    runs = text[text.index('<section id="runs">') :]
    assert "<th scope=\"col\">date (UTC)</th>" in runs and "<th scope=\"col\">versions</th>" in runs
    assert "<td>2026-12-08T00:10:00Z</td>" in runs and "<code>0123456789+dirty</code>" in runs
    assert "torch 2.4.1+cpu, torchvision 0.19.1" in runs
    assert "<td>unknown</td>" in runs and "<code>unknown</code>" in runs  # the old run
    assert "<script>x" not in text and "<i>2" not in text
