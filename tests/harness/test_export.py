"""Leaderboard exports: every format read back equals the runs' CSVs aggregated over seeds, as shown;
OpenOOD's table equals an independent computation of OpenOOD's metrics; old results fail clearly."""

from __future__ import annotations

import csv
import html.parser
import io
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, auc, precision_recall_curve, roc_curve
from typer.testing import CliRunner

from dfb_ood.harness.cli import app
from dfb_ood.harness.errors import EXIT_BAD_INPUT
from dfb_ood.harness.evaluate import evaluate_detectors
from dfb_ood.harness.export import build_table, openood_tables, render, table_columns
from dfb_ood.harness.leaderboard import (
    CSV_COLUMNS,
    aggregate,
    cell_text,
    read_csv,
    select_definitions,
    to_csv,
    write_csv,
)
from dfb_ood.harness.metrics import VARIANT_NAMES
from dfb_ood.postprocessors.registry import create

from .test_evaluate import synthetic

runner = CliRunner()
DETECTORS = ["msp", "energy", "bg", "energy_dfbz"]


def run_rows(seed: int, convention: str = "paper") -> list[dict[str, object]]:
    """One run's result rows, computed by the evaluation from synthetic outputs of that seed."""
    outputs = {"classifier": synthetic(seed), "dfb": synthetic(seed + 100, background=True, shift=2.0)}
    rows, _ = evaluate_detectors(DETECTORS, outputs, fpr_convention=convention)
    for row in rows:
        row.update(benchmark="tiny", network="net", seed=seed, hyperparameters="")
    return rows


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """Three seeds' run folders, each with its results.csv."""
    folders = []
    for seed in range(3):
        folder = tmp_path / f"seed{seed}"
        write_csv(folder / "results.csv", run_rows(seed))
        folders.append(folder)
    return folders


def expected_cells(folders: list[Path], fpr_convention: str | None = None, aupr: str = "ap") -> dict:
    """(detector, column key) -> the text every table shows, from the CSVs aggregated over seeds."""
    rows = [row for folder in folders for row in read_csv(folder / "results.csv")]
    merged = aggregate(select_definitions(rows, fpr_convention, aupr))
    expected = {}
    convention = fpr_convention or "paper"
    for row in merged:
        for column in table_columns(convention, aupr):
            if column.dataset == row["dataset"] or (
                column.key == "id_accuracy" and row["dataset"] == "near_mean"
            ):
                expected[(row["detector"], column.key)] = cell_text(row, column.metric)
    return expected


def split_cell(text: str) -> tuple[float, float | None]:
    mean, _, std = text.partition("±")
    return float(mean), (float(std) if std else None)


def check_against_csv(parsed: dict, expected: dict) -> None:
    """Every exported cell is the text the CSVs' aggregate shows (percent, 2 decimals, ± std)."""
    assert set(parsed) == set(expected)
    for key, text in expected.items():
        assert parsed[key] == text, key


def check_numbers_against_csv(parsed: dict[tuple, tuple[float, float]], expected: dict) -> None:
    """Mean and std per cell equal the CSVs' aggregate as shown (a std the text leaves out is 0)."""
    assert set(parsed) == set(expected)
    for key, text in expected.items():
        mean, std = split_cell(text)
        assert parsed[key] == (mean, std or 0.0), key


def best_cells(folders: list[Path], aupr: str = "ap") -> set[tuple[str, str]]:
    """The cells holding each ranked column's best shown value, recomputed here from the CSVs."""
    expected = expected_cells(folders, aupr=aupr)
    best = set()
    for column in table_columns("paper", aupr):
        if column.higher is None:
            continue
        values = {det: split_cell(text)[0] for (det, key), text in expected.items() if key == column.key}
        target = max(values.values()) if column.higher else min(values.values())
        best |= {(det, column.key) for det, value in values.items() if value == target}
    return best


def export(folders: list[Path], *args: str) -> str:
    result = runner.invoke(app, ["leaderboard", *map(str, folders), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def labels(aupr: str = "ap", convention: str = "paper") -> dict[str, str]:
    return {column.label: column.key for column in table_columns(convention, aupr)}


# ----------------------------------------------------------------------------------- formats
def test_csv_round_trip(runs: list[Path]) -> None:
    lines = list(csv.DictReader(io.StringIO(export(runs, "--format", "csv"))))
    parsed, best = {}, set()
    for line in lines:
        assert line["seeds"] == "3" and line["unit"] == "percent"
        assert line["fpr_convention"] == "paper" and line["aupr"] == "ap"
        for column in table_columns("paper", "ap"):
            mean, std = line[column.key], line[f"{column.key}_std"]
            assert re.fullmatch(r"\d+\.\d\d", mean) and re.fullmatch(r"\d+\.\d\d", std), (mean, std)
            parsed[(line["detector"], column.key)] = (float(mean), float(std))
        best |= {(line["detector"], key) for key in line["best"].split()}
    check_numbers_against_csv(parsed, expected_cells(runs))
    assert best == best_cells(runs)


def test_json_round_trip(runs: list[Path]) -> None:
    document = json.loads(export(runs, "--format", "json", "--aupr", "trapezoid"))
    assert document["aupr"] == "trapezoid" and document["fpr_convention"] == "paper"
    assert "trapezoid" in document["aupr_text"] and "OOD accepted at 95% ID TPR" in document["caption"]
    assert [c["label"] for c in document["columns"]][1] == "near AUPR-In (trapezoid)"
    parsed, best = {}, set()
    for row in document["rows"]:
        for key, cell in row["cells"].items():
            parsed[(row["detector"], key)] = cell["text"]
            mean, std = split_cell(cell["text"])
            assert cell["mean"] == mean and (cell["std"] == std or (std is None and cell["std"] == 0.0))
            if cell["best"]:
                best.add((row["detector"], key))
    check_against_csv(parsed, expected_cells(runs, aupr="trapezoid"))
    assert best == best_cells(runs, aupr="trapezoid")


def _markdown_cells(line: str) -> list[str]:
    """The cells of a pipe-table line: split on unescaped pipes, escapes undone."""
    inner = line.strip()[1:-1]
    cells = re.split(r"(?<!\\)\|", inner)
    return [re.sub(r"\\(.)", r"\1", cell.strip()) for cell in cells]


def test_markdown_round_trip(runs: list[Path]) -> None:
    text = export(runs, "--format", "markdown")
    table = [line for line in text.splitlines() if line.startswith("|")]
    header, rule, *body = table
    assert re.fullmatch(r"\|(:?-+:?\|)+", rule), rule  # a GitHub pipe table
    names = _markdown_cells(header)
    assert names[:2] == ["detector", "net"] and "near AUPR-In (AP)" in names and "far FPR@95 (paper)" in names
    keys = labels()
    parsed, best = {}, set()
    for line in body:
        cells = dict(zip(names, _markdown_cells(line), strict=True))
        for name, key in keys.items():
            value = cells[name]
            if value.startswith("**"):
                best.add((cells["detector"], key))
                value = value.strip("*")
            parsed[(cells["detector"], key)] = value
    check_against_csv(parsed, expected_cells(runs))
    assert best == best_cells(runs)
    caption = text.split("\n\n")[-1]
    assert "OOD accepted at 95% ID TPR" in caption and "average precision" in caption
    assert "energy\\_dfbz" in text  # underscores escaped


def _latex_unescape(text: str) -> str:
    text = text.replace(r"$\pm$", "±").replace(r"\textbackslash{}", "\\")
    return re.sub(r"\\([&%$#_{}])", r"\1", text)


def test_latex_round_trip(runs: list[Path]) -> None:
    text = export(runs, "--format", "latex", "--fpr-convention", "openood")
    assert r"\toprule" in text and r"\midrule" in text and r"\bottomrule" in text and "booktabs" in text
    assert r"\caption{FPR@95 = ID rejected at 95\% OOD TPR (OpenOOD v1.5)" in text
    assert r"\multicolumn{4}{c}{near-OOD}" in text
    lines = text.splitlines()
    body = lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]
    heading = lines[lines.index(r"\midrule") - 1]
    assert heading.startswith("detector & net & AUROC & AUPR-In (AP) & AUPR-Out (AP) & FPR@95 (openood)")
    order = [c.key for c in table_columns("openood", "ap")]  # near four, far four, ID acc
    parsed, best = {}, set()
    for line in body:
        assert line.endswith(r" \\")
        cells = [cell.strip() for cell in line[: -len(r" \\")].split(" & ")]
        detector = _latex_unescape(cells[0])
        for key, cell in zip(order, cells[2:], strict=True):
            match = re.fullmatch(r"\\textbf\{(.*)\}", cell)
            if match:
                best.add((detector, key))
                cell = match.group(1)
            parsed[(detector, key)] = _latex_unescape(cell)
    check_against_csv(parsed, expected_cells(runs, fpr_convention="openood"))
    assert {(d, k) for d, k in best if "fpr95" not in k} == {
        (d, k) for d, k in best_cells(runs) if "fpr95" not in k
    }


class _TableParser(html.parser.HTMLParser):
    """Header texts, and per body row each cell's text and whether it sits in <strong>."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.rows: list[list[tuple[str, bool]]] = []
        self.caption = ""
        self._cell: list[str] | None = None
        self._strong = False
        self._where = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: ANN001
        if tag in ("th", "td"):
            self._cell, self._strong = [], False
        elif tag == "tr" and self._where == "tbody":
            self.rows.append([])
        elif tag in ("thead", "tbody", "caption"):
            self._where = tag
        elif tag == "strong":
            self._strong = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "th" and self._cell is not None:
            self.headers.append("".join(self._cell))
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append(("".join(self._cell), self._strong))
        if tag in ("th", "td"):
            self._cell = None
        elif tag == "caption":
            self._where = ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._where == "caption":
            self.caption += data


def test_html_round_trip(runs: list[Path], tmp_path: Path) -> None:
    target = tmp_path / "board.html"
    result = runner.invoke(app, ["leaderboard", *map(str, runs), "--format", "html", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert "│" in result.stdout  # with --output the terminal shows the usual table
    text = target.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("<table>") == 1
    parser = _TableParser()
    parser.feed(text)
    assert "OOD accepted at 95% ID TPR" in parser.caption and "average precision" in parser.caption
    keys = labels()
    parsed, best = {}, set()
    for row in parser.rows:
        cells = dict(zip(parser.headers, row, strict=True))
        detector = cells["detector"][0]
        for name, key in keys.items():
            value, strong = cells[name]
            parsed[(detector, key)] = value
            if strong:
                best.add((detector, key))
    check_against_csv(parsed, expected_cells(runs))
    assert best == best_cells(runs)


def test_best_cells_agree_with_the_terminal_table(runs: list[Path]) -> None:
    """The terminal's bold AUROC / FPR@95 cells are the exports' best cells of those columns."""
    from rich.text import Text

    from dfb_ood.harness.leaderboard import leaderboard_table

    rows = [row for folder in runs for row in read_csv(folder / "results.csv")]
    table = leaderboard_table(aggregate(rows))
    columns = [str(column.header) for column in table.columns]
    grid = list(zip(*[[str(cell) for cell in column.cells] for column in table.columns], strict=True))
    terminal = {
        (Text.from_markup(line[0]).plain, key)
        for line in grid
        for name, key in (
            ("near AUROC", "near_auroc"),
            ("near FPR95", "near_fpr95"),
            ("far AUROC", "far_auroc"),
            ("far FPR95", "far_fpr95"),
        )  # fmt: skip
        if line[columns.index(name)].startswith("[bold]")
    }
    exported = build_table(select_definitions(rows))
    ours = {(e.detector, k) for e in exported.entries for k, c in e.cells.items() if c.best}
    assert terminal == {(d, k) for d, k in ours if "aupr" not in k}


def test_several_benchmarks_get_a_first_column_and_escaping(tmp_path: Path) -> None:
    rows = run_rows(0)
    other = [{**row, "benchmark": "my_bench&co", "network": "timm:resnet"} for row in run_rows(1)]
    table = build_table(select_definitions(rows + other), sort_by="near_auroc")
    assert table.several_blocks
    latex = render(table, "latex")
    assert r"my\_bench\&co / timm:resnet" in latex
    markdown = render(table, "markdown")
    assert "| benchmark / network | detector |" in markdown and r"my\_bench&co" in markdown
    assert "Sorted by near AUROC" in table.caption


def test_mixed_conventions_are_refused_unless_one_is_chosen(tmp_path: Path) -> None:
    write_csv(tmp_path / "a" / "results.csv", run_rows(0, "paper"))
    write_csv(tmp_path / "b" / "results.csv", run_rows(1, "openood"))
    folders = [tmp_path / "a", tmp_path / "b"]
    result = runner.invoke(app, ["leaderboard", *map(str, folders), "--format", "markdown"])
    assert result.exit_code == EXIT_BAD_INPUT and "--fpr-convention" in result.stderr
    text = export(folders, "--format", "markdown", "--fpr-convention", "openood")
    assert "ID rejected at 95% OOD TPR" in text
    check = {}
    for line in [line for line in text.splitlines() if line.startswith("|")][2:]:
        cells = _markdown_cells(line)
        check[cells[0]] = cells
    assert set(check) == set(DETECTORS)


# ----------------------------------------------------------------------------------- OpenOOD
def openood_reference(id_scores: np.ndarray, ood_scores: np.ndarray) -> list[float]:
    """OpenOOD v1.5's compute_all_metrics written independently with sklearn, in percent (no ACC).

    As ``openood/evaluators/metrics.py`` does: OOD is positive on negated scores; FPR at the first
    point of sklearn's (default) ROC curve reaching 95% TPR; AUROC = auc of that curve; AUPR-In /
    Out = auc of precision_recall_curve with ID / OOD positive.
    """
    conf = np.concatenate([id_scores, ood_scores])
    ood = np.concatenate([np.zeros(id_scores.size, int), np.ones(ood_scores.size, int)])
    fpr, tpr, _ = roc_curve(ood, -conf)
    precision_in, recall_in, _ = precision_recall_curve(1 - ood, conf)
    precision_out, recall_out, _ = precision_recall_curve(ood, -conf)
    values = [fpr[np.argmax(tpr >= 0.95)], auc(fpr, tpr), auc(recall_in, precision_in)]
    return [100 * v for v in [*values, auc(recall_out, precision_out)]]


def _read_openood(text: str) -> tuple[list[str], dict[str, list[float]]]:
    lines = list(csv.reader(io.StringIO(text)))
    return lines[0], {line[0]: [float(v) for v in line[1:]] for line in lines[1:]}


def test_openood_table_equals_openoods_own_computation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_csv(run / "results.csv", run_rows(0))
    out = tmp_path / "openood"
    result = runner.invoke(app, ["leaderboard", str(run), "--format", "openood", "--output", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "tiny" / "net" / "seed0" / "ood" / "msp.csv").read_text()
    header, table = _read_openood(text)
    assert header == ["", "FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT", "ACC"]  # OpenOOD's, index unnamed
    assert list(table) == ["near_set", "nearood", "far_set", "farood"]
    assert all(re.fullmatch(r"-?\d+\.\d\d", v) for line in text.splitlines()[1:] for v in line.split(",")[1:])
    outputs = synthetic(0)
    msp = create("msp")
    id_scores = msp.score(outputs.test)
    accuracy = 100 * accuracy_score(outputs.test.labels, outputs.test.logits.argmax(axis=1))
    expected = {}
    for name in ("near_set", "far_set"):
        ood_scores = msp.score(outputs.ood[name])
        assert np.unique(np.concatenate([id_scores, ood_scores])).size == id_scores.size + ood_scores.size
        expected[name] = [*openood_reference(id_scores, ood_scores), accuracy]
    expected["nearood"], expected["farood"] = expected["near_set"], expected["far_set"]  # one set each
    for name, values in expected.items():
        assert table[name] == pytest.approx(values, abs=0.005 + 1e-9), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fpr_convention"] == "openood" and manifest["aupr"] == "trapezoid"
    assert manifest["files"]["tiny/net/seed0/ood/bg.csv"]["run_dir"] == str(run)
    assert sorted(p.name for p in (out / "tiny" / "net" / "seed0" / "ood").iterdir()) == sorted(
        f"{d}.csv" for d in DETECTORS
    )


def test_openood_means_and_order_over_several_sets() -> None:
    base = {"benchmark": "b", "network": "n", "seed": 0, "detector": "d", "fpr_convention": "openood",
            "aupr_method": "trapezoid", "id_accuracy": 0.9}  # fmt: skip
    sets = [("far1", "far", 0.1), ("near1", "near", 0.2), ("near2", "near", 0.4), ("far2", "far", 0.3)]
    rows = [{**base, "dataset": n, "group": g, "auroc": v, "aupr_in": v, "aupr_out": v, "fpr95": v}
            for n, g, v in sets]  # fmt: skip
    for group, value in (("near", 0.3), ("far", 0.2)):
        rows.append({**base, "dataset": f"{group}_mean", "group": f"{group}_mean", "auroc": value,
                     "aupr_in": value, "aupr_out": value, "fpr95": value})  # fmt: skip
    (table,) = openood_tables(rows)
    assert table.index == ["near1", "near2", "nearood", "far1", "far2", "farood"]  # OpenOOD's order
    assert [v[1] for v in table.values] == pytest.approx([20, 40, 30, 10, 30, 20])
    assert all(v[4] == pytest.approx(90) for v in table.values)


def test_openood_other_definitions_are_named_in_the_header(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_csv(run / "results.csv", run_rows(0))
    text = export([run], "--format", "openood", "--aupr", "ap", "--fpr-convention", "paper")
    assert text.startswith("# OpenOOD v1.5 evaluator tables")
    assert "\n# tiny / net / seed 0 / msp\n,FPR@95 (paper),AUROC,AUPR_IN (AP),AUPR_OUT (AP),ACC\n" in text
    rows = [r for r in read_csv(run / "results.csv") if r["detector"] == "msp"]
    near = next(r for r in rows if r["dataset"] == "near_set")
    block = text.split("# tiny / net / seed 0 / msp\n")[1].split("\n\n")[0]
    _, table = _read_openood(block)
    assert table["near_set"][:4] == [
        float(f"{100 * near[key]:.2f}") for key in ("fpr95", "auroc", "aupr_in", "aupr_out")
    ]


def test_two_runs_of_one_seed_are_refused_for_openood(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_csv(tmp_path / name / "results.csv", run_rows(0))
    result = runner.invoke(
        app,
        [
            "leaderboard",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--format",
            "openood",
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == EXIT_BAD_INPUT and "one at a time" in result.stderr
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------- results format
def test_evaluation_records_every_definition() -> None:
    from dfb_ood.harness.metrics import aupr_in, aupr_out, fpr_at_tpr

    rows = run_rows(0)
    msp_near = rows[0]
    assert set(VARIANT_NAMES) <= set(msp_near) and set(VARIANT_NAMES) <= set(CSV_COLUMNS)
    outputs = synthetic(0)
    msp = create("msp")
    id_s, ood_s = msp.score(outputs.test), msp.score(outputs.ood["near_set"])
    assert msp_near["aupr_in_trapezoid"] == aupr_in(id_s, ood_s, method="trapezoid")
    assert msp_near["aupr_out_trapezoid"] == aupr_out(id_s, ood_s, method="trapezoid")
    assert msp_near["fpr95_openood"] == fpr_at_tpr(id_s, ood_s, convention="openood")
    assert msp_near["fpr95_paper"] == msp_near["fpr95"]  # the run's convention: the same number
    mean = next(r for r in rows if r["detector"] == "msp" and r["dataset"] == "all_mean")
    assert mean["fpr95_openood"] == pytest.approx((rows[0]["fpr95_openood"] + rows[1]["fpr95_openood"]) / 2)


def test_csv_keeps_full_precision(tmp_path: Path) -> None:
    """A value whose 6-decimal rounding would change the shown 2 decimals reads back unchanged."""
    value = 0.6369499020486763  # shows 63.69; rounded to 6 decimals first (0.636950) it shows 63.70
    assert f"{100 * value:.2f}" == "63.69" and f"{100 * float(f'{value:.6f}'):.2f}" == "63.70"
    rows = run_rows(0)
    rows[0]["auroc"] = value
    write_csv(tmp_path / "results.csv", rows)
    back = read_csv(tmp_path / "results.csv")
    for row, read in zip(rows, back, strict=True):
        for key in (*("auroc", "aupr_in", "aupr_out", "fpr95", "id_accuracy"), *VARIANT_NAMES):
            assert read[key] == row[key], key  # bit for bit
    assert to_csv(back) == to_csv(rows)


def _strip_variants(folder: Path, detectors: set[str] | None = None) -> None:
    """Make a run's results look written by an older harness (no variant columns / values)."""
    rows = read_csv(folder / "results.csv")
    for row in rows:
        if detectors is None or row["detector"] in detectors:
            for key in VARIANT_NAMES:
                row[key] = None
    text = to_csv(rows)
    if detectors is None:  # no columns at all, as the old files
        lines = list(csv.reader(io.StringIO(text)))
        keep = [i for i, name in enumerate(lines[0]) if name not in VARIANT_NAMES]
        text = "".join(",".join(line[i] for i in keep) + "\n" for line in lines)
    (folder / "results.csv").write_text(text)
    results = folder / "results.json"
    if results.is_file():
        record = json.loads(results.read_text())
        for row in record["rows"]:
            if detectors is None or row["detector"] in detectors:
                for key in VARIANT_NAMES:
                    row.pop(key, None)
        results.write_text(json.dumps(record))
    stages = folder / "stages.json"
    if stages.is_file():  # older versions recorded no checksums of the results files either
        record = json.loads(stages.read_text())
        record.pop("results", None)
        stages.write_text(json.dumps(record))


def test_old_results_still_show_their_own_definitions(runs: list[Path]) -> None:
    _strip_variants(runs[0])
    assert "fpr95_paper" not in runs[0].joinpath("results.csv").read_text()
    result = runner.invoke(app, ["leaderboard", *map(str, runs)])
    assert result.exit_code == 0, result.output
    text = export(runs, "--format", "markdown", "--fpr-convention", "paper")
    assert "near AUPR-In (AP)" in text


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["--format", "openood"], "FPR@95 in the openood convention for msp, energy, bg, energy_dfbz"),
        (["--format", "csv", "--aupr", "trapezoid"], "trapezoid AUPR for msp, energy, bg, energy_dfbz:"),
        (["--fpr-convention", "openood"], "FPR@95 in the openood convention for msp,"),
    ],
)
def test_old_results_asked_for_another_definition_fail_clearly(
    runs: list[Path], args: list[str], what: str
) -> None:
    _strip_variants(runs[1])
    result = runner.invoke(app, ["leaderboard", *map(str, runs), *args])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    message = " ".join(result.stderr.split())
    assert result.stdout == ""
    assert message.startswith(f"error: {runs[1] / 'results.csv'}: no ") and what in message, message
    assert f"harness eval --out {runs[1]}" in message and "--post msp,energy,bg,energy_dfbz" in message


def test_partly_old_results_name_only_the_detectors_without_values(runs: list[Path]) -> None:
    _strip_variants(runs[2], {"energy"})
    result = runner.invoke(app, ["leaderboard", *map(str, runs), "--aupr", "trapezoid", "--format", "json"])
    assert result.exit_code == EXIT_BAD_INPUT
    message = " ".join(result.stderr.split())
    assert "trapezoid AUPR for energy:" in message and "--post energy`" in message


# ----------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("args", "words"),
    [
        # bad --format / --aupr / --fpr-convention values are click's usage errors: test_cli_conventions
        (["--output", "x.md"], ["--output writes the --format export; pass --format too"]),
        (
            ["--format", "csv", "--json"],
            ["--format csv prints on stdout, and so does --json", "--output FILE"],
        ),
        (["--format", "csv", "--per-dataset"], ["and so does --per-dataset"]),
    ],
)
def test_bad_options_are_refused_before_any_work(runs: list[Path], args: list[str], words: list[str]) -> None:
    result = runner.invoke(app, ["leaderboard", str(runs[0]), *args])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    message = " ".join(result.stderr.split())
    assert all(word in message for word in words), message
    assert not Path("x.md").exists()


def test_output_must_be_a_file_for_tables_and_a_folder_for_openood(runs: list[Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["leaderboard", str(runs[0]), "--format", "latex", "--output", str(tmp_path)])
    assert result.exit_code == EXIT_BAD_INPUT and "is a folder" in result.stderr
    file = tmp_path / "file.txt"
    file.write_text("mine")
    result = runner.invoke(app, ["leaderboard", str(runs[0]), "--format", "openood", "--output", str(file)])
    assert result.exit_code == EXIT_BAD_INPUT and "is a file" in result.stderr
    assert file.read_text() == "mine"


def test_csv_and_json_options_keep_the_rows_as_stored(runs: list[Path], tmp_path: Path) -> None:
    target = tmp_path / "all.csv"
    result = runner.invoke(
        app, ["leaderboard", *map(str, runs), "--fpr-convention", "openood", "--csv", str(target), "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    stored = [row for folder in runs for row in read_csv(folder / "results.csv")]
    assert rows == json.loads(json.dumps(stored, default=str))
    assert read_csv(target) == stored


# ----------------------------------------------------------------------------------- bench = leaderboard
def test_bench_and_leaderboard_print_the_same_table_and_an_old_run_is_fixed_by_eval(tiny) -> None:  # noqa: ANN001
    """bench's table equals the leaderboard's read from its CSV; stripping the variants (an old run)
    makes the exports fail with a command that, run as printed, adds them back."""
    from .test_pipeline import bench_args

    out = tiny["root"] / "run"
    args = bench_args(tiny, out)
    args[args.index("--post") + 1] = "msp,energy"  # no DFB net: quick
    bench = runner.invoke(app, args)
    assert bench.exit_code == 0, bench.output
    board = runner.invoke(app, ["leaderboard", str(out)])
    assert board.exit_code == 0, board.output

    def body(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("│")]

    assert body(bench.stdout) == body(board.stdout) and len(body(bench.stdout)) == 2
    before = export([out], "--format", "openood")
    _strip_variants(out)
    failed = runner.invoke(app, ["leaderboard", str(out), "--format", "openood"])
    assert failed.exit_code == EXIT_BAD_INPUT
    command = re.search(r"`(harness eval [^`]*)`", " ".join(failed.stderr.split()))
    assert command is not None, failed.stderr
    words = shlex.split(command.group(1))[1:]
    assert words[:3] == ["eval", "--out", str(out)] and "--recipe" in words
    rerun = runner.invoke(app, [*words, "--device", "cpu", "--quiet"])
    assert rerun.exit_code == 0, rerun.output
    assert export([out], "--format", "openood") == before
