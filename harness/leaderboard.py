"""Result tables: CSV / JSON files and the rich leaderboard on the terminal.

A results CSV has one row per detector x OOD set plus ``near_mean`` / ``far_mean`` / ``all_mean``
rows, every metric as a fraction in [0, 1], and a ``fpr_convention`` column so a number never
travels without its definition. Several runs (seeds, networks, benchmarks) merge into mean +- std
without recomputing anything.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from harness.io import read_json, write_text
from harness.metrics import METRIC_NAMES

CSV_COLUMNS = (
    "benchmark",
    "network",
    "seed",
    "detector",
    "detector_network",
    "dataset",
    "group",
    *METRIC_NAMES,
    "fpr_convention",
    "id_accuracy",
    "hyperparameters",
)
# Columns added after the first release; older CSVs read with these defaults.
OPTIONAL_COLUMNS = {"hyperparameters": ""}
# The table's "net" column: which network's outputs a detector read.
NETWORK_LABELS = {"classifier": "K", "dfb": "K+1", "classifier+dfb": "K, bg"}
CONVENTION_TEXT = {
    "paper": "FPR@95 = OOD accepted at 95% ID TPR (paper/Hendrycks)",
    "openood": "FPR@95 = ID rejected at 95% OOD TPR (OpenOOD v1.5)",
}


def to_csv(rows: Iterable[dict[str, object]]) -> str:
    """CSV text with the fixed column order (missing fields left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_csv(path: str | Path, rows: Iterable[dict[str, object]]) -> None:
    """Atomically write the results CSV."""
    write_text(path, to_csv(rows))


def read_csv(path: str | Path) -> list[dict[str, object]]:
    """Rows of a results CSV, numbers parsed back to floats."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results file {path}; run `harness bench` for that run first")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(CSV_COLUMNS) - set(reader.fieldnames or []) - set(OPTIONAL_COLUMNS)
        if missing:
            raise ValueError(f"{path}: not a results CSV (missing columns {sorted(missing)})")
        rows: list[dict[str, object]] = []
        for row in reader:
            parsed: dict[str, object] = {**OPTIONAL_COLUMNS, **row}
            for key in (*METRIC_NAMES, "id_accuracy"):
                parsed[key] = float(row[key])
            rows.append(parsed)
    return rows


def load_run_rows(run_dir: str | Path) -> list[dict[str, object]]:
    """The result rows of one run directory (``results.csv``)."""
    return read_csv(Path(run_dir) / "results.csv")


def aggregate(rows: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """Mean and std over seeds of every (benchmark, network, detector, dataset), in first-seen order."""
    groups: dict[tuple, list[dict[str, object]]] = {}
    for row in rows:
        key = (row["benchmark"], row["network"], row["detector"], row["dataset"], row["fpr_convention"])
        groups.setdefault(key, []).append(row)
    merged = []
    for group in groups.values():
        first = dict(group[0])
        first["seeds"] = len(group)
        for metric in (*METRIC_NAMES, "id_accuracy"):
            values = np.array([float(r[metric]) for r in group])  # type: ignore[arg-type]
            first[metric] = float(values.mean())
            first[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        merged.append(first)
    return merged


def _cell(row: dict[str, object] | None, metric: str) -> str:
    if row is None:
        return "-"
    value = 100 * float(row[metric])  # type: ignore[arg-type]
    std = row.get(f"{metric}_std")
    if std and int(row.get("seeds", 1)) > 1:  # type: ignore[call-overload]
        return f"{value:.2f}±{100 * float(std):.2f}"  # type: ignore[arg-type]
    return f"{value:.2f}"


#: ``sort_by`` values: metric key -> (dataset row, metric, whether higher is better).
SORT_KEYS: dict[str, tuple[str, str, bool]] = {
    "near_auroc": ("near_mean", "auroc", True),
    "far_auroc": ("far_mean", "auroc", True),
    "near_fpr95": ("near_mean", "fpr95", False),
    "far_fpr95": ("far_mean", "fpr95", False),
}
_SORT_COLUMNS = {
    "near_auroc": "near AUROC",
    "far_auroc": "far AUROC",
    "near_fpr95": "near FPR95",
    "far_fpr95": "far FPR95",
}


def check_sort_by(sort_by: str | None) -> None:
    """Refuse an unknown ``sort_by`` with the allowed values (``None``: the input order)."""
    if sort_by is not None and sort_by not in SORT_KEYS:
        raise ValueError(f"--sort-by must be one of {', '.join(SORT_KEYS)}, got {sort_by!r}")


def _shown_value(row: dict[str, object] | None, metric: str) -> float | None:
    """The mean as the table shows it (percent, 2 decimals), so that equal-looking cells tie."""
    return None if row is None else float(f"{100 * float(row[metric]):.2f}")  # type: ignore[arg-type]


def _best(values: Sequence[float | None], higher: bool) -> float | None:
    present = [value for value in values if value is not None]
    if not present:
        return None
    return max(present) if higher else min(present)


def leaderboard_table(
    rows: Sequence[dict[str, object]], title: str = "Leaderboard", sort_by: str | None = None
) -> Table:
    """Near/far AUROC and FPR@95 per detector (percent), DFB variants marked, best cells in bold.

    Rows keep the input order unless ``sort_by`` names a metric (one of :data:`SORT_KEYS`): AUROC
    sorts descending, FPR@95 ascending, ties and detectors without that value (last) keeping their
    input order. In each metric column the best value (highest AUROC, lowest FPR@95, compared as
    shown) is bold, every tied cell included. With several benchmarks or networks, sorting and best
    cells are per benchmark / network, whose blocks keep their input order. The bold is rich markup
    only: a cell's text is the same with or without it.
    """
    check_sort_by(sort_by)
    by_detector: dict[tuple, dict[str, dict[str, object]]] = {}
    conventions = set()
    for row in rows:
        key = (row.get("benchmark", ""), row.get("network", ""), row["detector"])
        by_detector.setdefault(key, {})[str(row["dataset"])] = row
        conventions.add(str(row["fpr_convention"]))
    blocks: dict[tuple, list[tuple]] = {}
    for key in by_detector:
        blocks.setdefault(key[:2], []).append(key)
    multi = len(blocks) > 1
    caption = "; ".join(CONVENTION_TEXT.get(c, c) for c in sorted(conventions))
    sorted_note = f" Sorted by {_SORT_COLUMNS[sort_by]}." if sort_by is not None else ""
    table = Table(
        title=title,
        caption=f"{caption}. Percent; higher AUROC, lower FPR = better.{sorted_note} net: K = the K-class "
        'classifier, K+1 = the DFB net, "K, bg" = classifier foreground + DFB background.',
    )
    if multi:
        table.add_column("benchmark / network")
    searched = any(row.get("hyperparameters") for row in rows)
    for column in ("detector", "net", "near AUROC", "near FPR95", "far AUROC", "far FPR95", "ID acc"):
        table.add_column(column, justify="left" if column in ("detector", "net") else "right", no_wrap=True)
    if searched:
        table.add_column("searched hyper-parameters")
    best: dict[tuple, dict[str, float | None]] = {}
    for block, keys in blocks.items():
        best[block] = {
            name: _best([_shown_value(by_detector[key].get(group), metric) for key in keys], higher)
            for name, (group, metric, higher) in SORT_KEYS.items()
        }
        if sort_by is not None:
            group, metric, higher = SORT_KEYS[sort_by]

            def order(key: tuple, group: str = group, metric: str = metric, higher: bool = higher) -> tuple:
                value = _shown_value(by_detector[key].get(group), metric)
                return (value is None, 0.0 if value is None else (-value if higher else value))

            blocks[block] = sorted(keys, key=order)  # stable: ties keep the input order
    # Unsorted: exactly the input order, even where benchmarks / networks interleave.
    ordered = list(by_detector) if sort_by is None else [key for keys in blocks.values() for key in keys]
    for key in ordered:
        bench, network, detector = key
        datasets = by_detector[key]
        near, far = datasets.get("near_mean"), datasets.get("far_mean")
        any_row = near or far or next(iter(datasets.values()))
        name = f"[bold]{detector}[/bold]" if "_dfb" in str(detector) or detector == "bg" else str(detector)
        metric_cells = []
        for column in ("near_auroc", "near_fpr95", "far_auroc", "far_fpr95"):
            group, metric, _ = SORT_KEYS[column]
            text = _cell(datasets.get(group), metric)
            target = best[key[:2]][column]
            is_best = target is not None and _shown_value(datasets.get(group), metric) == target
            metric_cells.append(f"[bold]{text}[/bold]" if is_best else text)
        cells = [
            name,
            NETWORK_LABELS.get(str(any_row.get("detector_network", "")), ""),
            *metric_cells,
            _cell(any_row, "id_accuracy"),
        ]
        if searched:
            cells.append(str(any_row.get("hyperparameters") or ""))
        table.add_row(*([f"{bench} / {network}"] if multi else []), *cells)
    return table


def per_dataset_table(rows: Sequence[dict[str, object]], metric: str = "auroc") -> Table:
    """One column per OOD set (in percent) for one metric, one row per detector."""
    datasets: list[str] = []
    for row in rows:
        if str(row["dataset"]) not in datasets and not str(row["dataset"]).endswith("_mean"):
            datasets.append(str(row["dataset"]))
    table = Table(title=f"{metric.upper()} per OOD set (%)")
    table.add_column("detector")
    for name in datasets:
        table.add_column(name, justify="right")
    by_detector: dict[str, dict[str, dict[str, object]]] = {}
    for row in rows:
        by_detector.setdefault(str(row["detector"]), {})[str(row["dataset"])] = row
    for detector, values in by_detector.items():
        table.add_row(detector, *[_cell(values.get(d), metric) for d in datasets])
    return table


def read_results_json(run_dir: str | Path) -> dict[str, object]:
    """A run's ``results.json`` (rows plus detector reports)."""
    return read_json(Path(run_dir) / "results.json")
