"""The leaderboard: input order by default, ``sort_by`` a metric, the best cell of each metric in bold."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.text import Text
from typer.testing import CliRunner

from dfb_ood.harness.cli import app
from dfb_ood.harness.errors import EXIT_BAD_INPUT
from dfb_ood.harness.leaderboard import SORT_KEYS, aggregate, leaderboard_table, write_csv

runner = CliRunner()
METRICS = ("near AUROC", "near FPR95", "far AUROC", "far FPR95")


def _rows(
    values: dict[str, tuple[float | None, float | None, float | None, float | None]],
    benchmark: str = "tiny",
) -> list[dict[str, object]]:
    """near_mean / far_mean rows per detector from (near AUROC, near FPR, far AUROC, far FPR) fractions;
    None leaves that group out."""
    base = {"benchmark": benchmark, "network": "net", "seed": 0, "detector_network": "classifier",
            "aupr_in": 0.5, "aupr_out": 0.5, "fpr_convention": "paper", "id_accuracy": 0.9,
            "hyperparameters": ""}  # fmt: skip
    rows = []
    for detector, (near_auroc, near_fpr, far_auroc, far_fpr) in values.items():
        for group, auroc, fpr in (("near_mean", near_auroc, near_fpr), ("far_mean", far_auroc, far_fpr)):
            if auroc is not None:
                rows.append({**base, "detector": detector, "dataset": group, "group": group,
                             "auroc": auroc, "fpr95": fpr})  # fmt: skip
    return rows


#: near AUROC ties a/c, near FPR ties b/c, far AUROC best d alone, far FPR: d has no far rows.
VALUES = {
    "a": (0.90, 0.30, 0.70, 0.60),
    "b": (0.80, 0.20, 0.75, 0.50),
    "c": (0.90, 0.20, 0.60, 0.70),
    "d": (0.85, 0.40, None, None),
    "e": (0.70, 0.50, 0.80, 0.55),
}


def _grid(table) -> tuple[list[str], list[list[str]]]:  # noqa: ANN001 - rich Table
    """Column names and the raw (markup) cells, row by row."""
    columns = [str(column.header) for column in table.columns]
    rows = [list(row) for row in zip(*[[str(cell) for cell in column.cells] for column in table.columns])]
    return columns, rows


def _order(table) -> list[str]:  # noqa: ANN001
    return [Text.from_markup(row[0]).plain for row in _grid(table)[1]]


def test_default_keeps_the_input_order() -> None:
    assert _order(leaderboard_table(_rows(VALUES))) == list(VALUES)
    reversed_values = dict(reversed(VALUES.items()))
    assert _order(leaderboard_table(_rows(reversed_values))) == list(reversed_values)


@pytest.mark.parametrize(
    ("sort_by", "expected"),
    [
        ("near_auroc", ["a", "c", "d", "b", "e"]),  # descending; a and c tie: input order
        ("near_fpr95", ["b", "c", "a", "d", "e"]),  # ascending; b and c tie: input order
        ("far_auroc", ["e", "b", "a", "c", "d"]),  # d has no far value: last
        ("far_fpr95", ["b", "e", "a", "c", "d"]),
    ],
)
def test_sort_by_a_metric(sort_by: str, expected: list[str]) -> None:
    table = leaderboard_table(_rows(VALUES), sort_by=sort_by)
    assert _order(table) == expected
    assert table.caption is not None and "Sorted by" in str(table.caption)


def test_sorting_moves_rows_whole() -> None:
    """A sorted table holds the same rows (every cell, markup included) as the unsorted one."""
    plain = {row[0]: row for row in _grid(leaderboard_table(_rows(VALUES)))[1]}
    for sort_by in SORT_KEYS:
        for row in _grid(leaderboard_table(_rows(VALUES), sort_by=sort_by))[1]:
            assert row == plain[row[0]], sort_by


def test_ties_are_compared_as_shown() -> None:
    """0.90001 and 0.90004 both show as 90.00: a tie, in sorting and in marking."""
    values = {"x": (0.90001, 0.1, 0.5, 0.5), "y": (0.90004, 0.1, 0.5, 0.5), "z": (0.8, 0.1, 0.5, 0.5)}
    table = leaderboard_table(_rows(values), sort_by="near_auroc")
    assert _order(table) == ["x", "y", "z"]
    columns, rows = _grid(table)
    near = columns.index("near AUROC")
    assert [row[near] for row in rows] == ["[bold]90.00[/bold]", "[bold]90.00[/bold]", "80.00"]


def test_best_cells_are_bold_and_ties_all_marked() -> None:
    columns, rows = _grid(leaderboard_table(_rows(VALUES)))
    by_detector = {row[0]: dict(zip(columns, row)) for row in rows}
    bold = {
        column: sorted(name for name, row in by_detector.items() if row[column].startswith("[bold]"))
        for column in METRICS
    }
    assert bold == {
        "near AUROC": ["a", "c"],  # highest, tied
        "near FPR95": ["b", "c"],  # lowest, tied
        "far AUROC": ["e"],
        "far FPR95": ["b"],
    }
    assert (
        by_detector["a"]["near AUROC"] == "[bold]90.00[/bold]" and by_detector["b"]["near AUROC"] == "80.00"
    )
    assert by_detector["d"]["far AUROC"] == "-"  # a missing value is never best
    assert not any(row["ID acc"].startswith("[bold]") for row in by_detector.values())
    # the markup adds no text
    assert Text.from_markup(by_detector["c"]["near FPR95"]).plain == "20.00"


def test_bold_names_of_dfb_variants_stay() -> None:
    values = {"msp": (0.9, 0.3, 0.7, 0.6), "msp_dfb": (0.8, 0.2, 0.6, 0.5)}
    _, rows = _grid(leaderboard_table(_rows(values)))
    assert [row[0] for row in rows] == ["msp", "[bold]msp_dfb[/bold]"]


def test_several_benchmarks_sort_and_mark_within_each() -> None:
    rows = _rows({"a": (0.6, 0.5, 0.6, 0.5), "b": (0.9, 0.1, 0.9, 0.1)}, benchmark="one")
    rows += _rows({"a": (0.95, 0.05, 0.95, 0.05), "b": (0.7, 0.3, 0.7, 0.3)}, benchmark="two")
    columns, table_rows = _grid(leaderboard_table(rows, sort_by="near_auroc"))
    assert [(row[0], Text.from_markup(row[1]).plain) for row in table_rows] == [
        ("one / net", "b"),
        ("one / net", "a"),
        ("two / net", "a"),
        ("two / net", "b"),
    ]
    near = columns.index("near AUROC")
    assert [row[near] for row in table_rows] == ["[bold]90.00[/bold]", "60.00", "[bold]95.00[/bold]", "70.00"]
    # unsorted: the input order, even where the runs interleave
    interleaved = [rows[0], rows[4], rows[1], rows[5], rows[2], rows[6], rows[3], rows[7]]
    _, plain = _grid(leaderboard_table(interleaved))
    assert [(row[0], Text.from_markup(row[1]).plain) for row in plain] == [
        ("one / net", "a"),
        ("two / net", "a"),
        ("one / net", "b"),
        ("two / net", "b"),
    ]


def test_several_seeds_mark_the_mean() -> None:
    rows = _rows({"a": (0.90, 0.3, 0.7, 0.6), "b": (0.91, 0.2, 0.6, 0.5)})
    second = [{**row, "seed": 1, "auroc": float(row["auroc"]) - 0.02} for row in rows]  # type: ignore[arg-type]
    columns, table_rows = _grid(leaderboard_table(aggregate(rows + second), sort_by="near_auroc"))
    near = columns.index("near AUROC")
    assert [Text.from_markup(row[0]).plain for row in table_rows] == ["b", "a"]
    assert table_rows[0][near] == "[bold]90.00±1.41[/bold]" and table_rows[1][near] == "89.00±1.41"


def test_unknown_sort_key_is_refused() -> None:
    with pytest.raises(
        ValueError, match="--sort-by must be one of near_auroc, far_auroc, near_fpr95, far_fpr95"
    ):
        leaderboard_table(_rows(VALUES), sort_by="auroc")


def _refused(result, *words: str) -> str:  # noqa: ANN001 - click Result
    """Click's usage error for a value not among an option's choices: exit 2, stderr only."""
    assert result.exit_code == EXIT_BAD_INPUT, (result.exit_code, result.output)
    assert result.stdout == ""
    message = " ".join(result.stderr.split())
    assert message.startswith("Usage:") and "Traceback" not in result.output, message
    for word in words:
        assert word in message, (word, message)
    return message


@pytest.mark.parametrize("command", ["bench", "leaderboard"])
def test_cli_refuses_an_unknown_sort_key_before_any_work(tmp_path: Path, command: str) -> None:
    out = tmp_path / "run"
    args = (
        ["bench", "--out", str(out), "--device", "cpu"] if command == "bench" else ["leaderboard", str(out)]
    )
    result = runner.invoke(app, [*args, "--sort-by", "near"])
    _refused(result, "--sort-by", "'near'", *(f"'{key}'" for key in SORT_KEYS))
    assert not out.exists()


def test_cli_leaderboard_sorts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_csv(run / "results.csv", _rows(VALUES))
    result = runner.invoke(app, ["leaderboard", str(run), "--sort-by", "far_fpr95"])
    assert result.exit_code == 0, result.output
    shown = [line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│")]
    assert shown == ["b", "e", "a", "c", "d"]
    unsorted = runner.invoke(app, ["leaderboard", str(run)])
    assert [
        line.split("│")[1].strip() for line in unsorted.stdout.splitlines() if line.startswith("│")
    ] == list(VALUES)


def test_bench_prints_its_leaderboard_sorted(tiny) -> None:  # noqa: ANN001 - the tiny fixture
    from .test_pipeline import bench_args, read_rows

    out = tiny["root"] / "run"
    result = runner.invoke(app, [*bench_args(tiny, out), "--sort-by", "near_fpr95"])
    assert result.exit_code == 0, result.output
    shown = [line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│")]
    near = [row for row in read_rows(out / "results.csv") if row["dataset"] == "near_mean"]
    fpr = {row["detector"]: float(f"{100 * float(row['fpr95']):.2f}") for row in near}
    assert sorted(shown) == sorted(fpr) and len(shown) == 6
    assert [fpr[name] for name in shown] == sorted(fpr.values())


def test_benchmark_title_is_the_rows_benchmark_name() -> None:
    from dfb_ood.harness.leaderboard import benchmark_title

    assert benchmark_title(_rows(VALUES, benchmark="fmnist"), "../data/fmnist-ood/benchmark.yaml") == "fmnist"
    both = [*_rows(VALUES, "fmnist"), *_rows(VALUES, "shapes"), *_rows(VALUES, "fmnist")]
    assert benchmark_title(both, "x.yaml") == "fmnist, shapes"
    assert benchmark_title([], "path/to/benchmark.yaml") == "path/to/benchmark.yaml"  # nothing names one


def test_bench_titles_its_leaderboard_with_the_benchmark_name_not_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--benchmark path/to/benchmark.yaml``: the table says which benchmark (its YAML's name)."""

    yaml_path = tmp_path / "data" / "fmnist-ood" / "benchmark.yaml"
    rows = _rows(VALUES, "fmnist")
    import dfb_ood.harness.run
    monkeypatch.setattr(dfb_ood.harness.run, "run_seeds", lambda settings, seeds, reporter: (rows, []))
    args = ["bench", "--benchmark", str(yaml_path), "--post", "msp", "--no-report", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fmnist: 1 detectors, seeds 0" in result.stdout, result.stdout
    assert "benchmark.yaml" not in result.stdout and "fmnist-ood" not in result.stdout, result.stdout
