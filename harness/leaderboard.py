"""Result tables: CSV / JSON files and the rich leaderboard on the terminal.

A results CSV has one row per detector x OOD set plus ``near_mean`` / ``far_mean`` / ``all_mean``
rows, every metric as a fraction in [0, 1], and a ``fpr_convention`` column so a number never
travels without its definition. ``fpr95`` is in that convention and ``aupr_in`` / ``aupr_out`` are
average precision; the columns of :data:`~harness.metrics.VARIANT_NAMES` hold the other
definitions (trapezoid AUPR, FPR@95 in both conventions), so that :func:`select_definitions` can show
any of them later. Floats are written at full precision (``repr``), so a table read back from the
CSV shows exactly what the run printed. Several runs (seeds, networks, benchmarks) merge into
mean +- std without recomputing anything.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness.io import open_regular_no_follow, read_json, write_text
from dfb_ood.harness.metrics import AUPR_METHODS, FPR_CONVENTIONS, METRIC_NAMES, VARIANT_NAMES
from dfb_ood.harness.result_row import RESULT_COLUMNS, ResultRow, SeedMeanRow
from dfb_ood.harness.runfolder import rerun_command

CSV_COLUMNS = RESULT_COLUMNS  # the columns of results.csv, in order: ResultRow's declaration
# Columns added after the first release; older CSVs read with these defaults (None: not recorded).
OPTIONAL_COLUMNS: dict[str, object] = {"hyperparameters": "", **dict.fromkeys(VARIANT_NAMES)}
# The table's "net" column: which network's outputs a detector read.
NETWORK_LABELS = {"classifier": "K", "dfb": "K+1", "classifier+dfb": "K, bg"}
CONVENTION_TEXT = {
    "paper": "FPR@95 = OOD accepted at 95% ID TPR (paper/Hendrycks)",
    "openood": "FPR@95 = ID rejected at 95% OOD TPR (OpenOOD v1.5)",
}
AUPR_TEXT = {
    "ap": "AUPR = average precision (step-wise, as sklearn's average_precision_score)",
    "trapezoid": "AUPR = trapezoid rule over the PR curve (OpenOOD v1.5: precision_recall_curve + auc)",
}
#: How a column header names the AUPR definition.
AUPR_LABELS = {"ap": "AP", "trapezoid": "trapezoid"}


def _csv_value(value: object) -> object:
    """Floats at full precision: ``repr`` round-trips exactly, so read-back rows equal the written ones."""
    return repr(float(value)) if isinstance(value, float) else value  # numpy floats too, as plain text


def to_csv(rows: Iterable[ResultRow]) -> str:
    """CSV text with the fixed column order (missing fields left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buffer.getvalue()


def write_csv(path: str | Path, rows: Iterable[ResultRow]) -> None:
    """Atomically write the results CSV."""
    write_text(path, to_csv(rows))


def read_csv(path: str | Path) -> list[ResultRow]:
    """Rows of a results CSV, numbers parsed back to floats (an unrecorded variant as ``None``).

    Only a table harness could have written is read: every row with all its fields, every metric a
    finite fraction in [0, 1], every detector with the same OOD sets and their means. Anything
    else (a file cut off, a hand-edited 1.5 or nan, a cell of 200 KB) raises one ValueError naming
    the file, the line, the column and the value, and what to do; nothing is shown half-read. A
    UTF-8 byte-order mark and CRLF line ends (a re-save in Excel) are accepted.

    A run's file: a symbolic link at its name is refused, never read through
    (:func:`harness.io.open_regular_no_follow`).
    """
    path = Path(path)
    if not path.is_file() and not path.is_symlink():
        raise MissingInputError(f"no results file {path}; run `harness bench` for that run first")
    fix = _results_fix(path)
    rows: list[ResultRow] = []
    with io.TextIOWrapper(open_regular_no_follow(path), newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        try:
            fields = reader.fieldnames or []
            missing = set(CSV_COLUMNS) - set(fields) - set(OPTIONAL_COLUMNS)
            if missing:
                raise InputError(f"{path}: not a results CSV (missing columns {sorted(missing)})")
            for row in reader:
                rows.append(_parse_row(path, reader.line_num, row, len(fields), fix))
        except csv.Error as error:
            raise InputError(
                f"{path}:{reader.line_num}: not a results CSV as harness writes it ({error}: a cell of more "
                f"than {csv.field_size_limit()} characters, or broken quoting); {fix}"
            ) from None
        except UnicodeDecodeError as error:
            raise InputError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); {fix}") from None
    _check_complete(path, rows, fix)
    return rows


def _results_fix(path: Path) -> str:
    """What to do about a results file that cannot be shown: verify the run, evaluate again."""
    if path.name == "results.csv" and (path.parent / "run.json").is_file():
        return (
            f"the file is damaged or was edited: `harness verify {path.parent}` lists what changed, and "
            f"`harness eval --out {path.parent}` with the run's options (in run.json) writes it again"
        )
    return "the file is damaged or was edited: write it again with `harness bench` / `harness eval`"


def _parse_row(
    path: Path, line: int, row: dict[str | None, object], width: int, fix: str
) -> dict[str, object]:
    """One results row, every field present and every metric a finite fraction in [0, 1]."""
    if None in row or any(value is None for value in row.values()):
        count = width + len(row.get(None) or []) - sum(value is None for value in row.values())  # type: ignore[arg-type]
        raise InputError(f"{path}:{line}: {count} fields, expected {width}: the row is cut off; {fix}")
    parsed: dict[str, object] = {**OPTIONAL_COLUMNS, **row}  # type: ignore[dict-item]
    where = f"{row.get('detector')} / {row.get('dataset')}"
    for key in (*METRIC_NAMES, "id_accuracy", *VARIANT_NAMES):
        text = row.get(key)
        if key in VARIANT_NAMES and text in (None, ""):
            parsed[key] = None
            continue
        try:
            value = float(str(text))
        except ValueError:
            raise InputError(f"{path}:{line}: {key} of {where} is {text!r}, not a number; {fix}") from None
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InputError(
                f"{path}:{line}: {key} of {where} is {text}, outside [0, 1] (results are stored as "
                f"fractions, shown as percent); {fix}"
            )
        parsed[key] = value
    return parsed


def _check_complete(path: Path, rows: Sequence[ResultRow], fix: str) -> None:
    """Every detector of a run has the same OOD sets and their means: a missing row is a cut-off file.

    Checked for a run's own results.csv (``run.json`` beside it: harness evaluates every detector on
    every set); a table assembled by hand may leave a group out for some detector.
    """
    if not rows:
        raise InputError(f"{path}: no result rows (the file ends after its header); {fix}")
    if not (path.parent / "run.json").is_file():
        return
    runs: dict[tuple, dict[str, list[str]]] = {}
    for row in rows:
        run = (row.get("benchmark"), row.get("network"), row.get("seed"))
        runs.setdefault(run, {}).setdefault(str(row["detector"]), []).append(str(row["dataset"]))
    for detectors in runs.values():
        every = list(dict.fromkeys(name for names in detectors.values() for name in names))
        for detector, names in detectors.items():
            absent = [name for name in every if name not in names]
            if absent:
                raise InputError(
                    f"{path}: detector {detector} has no row for {', '.join(absent)} (the other detectors "
                    f"have): the file is cut off; {fix}"
                )


def load_run_rows(run_dir: str | Path) -> list[ResultRow]:
    """The result rows of one run directory (``results.csv``), refused unless the run wrote them so.

    Besides :func:`read_csv`'s checks, the file must match the checksum the run recorded when it
    wrote it (:func:`harness.runfolder.check_results_intact`): a hand-edited but plausible number is
    not the run's result either.
    """
    from dfb_ood.harness.runfolder import check_results_intact

    path = Path(run_dir) / "results.csv"
    rows = read_csv(path)
    _check_against_json(path, rows)
    check_results_intact(Path(run_dir), ["results.csv"])
    return rows


def _check_against_json(path: Path, rows: Sequence[ResultRow]) -> None:
    """A run's results.csv holds a row for every row of its results.json: fewer is a cut-off file.

    Catches a file cut at a line end in runs that predate results checksums, where the rows left
    are each well formed.
    """
    source = path.parent / "results.json"
    if not source.is_file():
        return
    try:
        recorded = read_json(source).get("rows", [])
        expected = [(str(row["detector"]), str(row["dataset"])) for row in recorded]
    except (ValueError, AttributeError, KeyError, TypeError):
        return  # an unreadable results.json is reported by what reads it (verify, report)
    present = {(str(row["detector"]), str(row["dataset"])) for row in rows}
    absent = [pair for pair in expected if pair not in present]
    if absent:
        shown = ", ".join(f"{d} / {s}" for d, s in absent[:4]) + (" ..." if len(absent) > 4 else "")
        raise InputError(
            f"{path}: no row for {shown}, which results.json beside it has: the file is cut off; "
            f"{_results_fix(path)}"
        )


def check_mergeable(run_dirs: Sequence[str | Path]) -> None:
    """Refuse run folders that a leaderboard would wrongly average as seeds of one experiment.

    Runs of one benchmark and network are shown as mean ± std over seeds, which is only right when
    they differ in the seed alone: the same seed twice (the same folder given twice, or a copy) is
    not two seeds, and runs whose result-defining settings differ (the benchmark's definition, the
    recipe, a checkpoint) or whose rows were computed from other data are other experiments. One
    error names both folders and the field that differs.
    """
    from dfb_ood.harness.runfolder import earlier_results, identity_differences, identity_of, read_record

    seen: dict[tuple[str, str], list[tuple[Path, dict[str, object], dict[str, str]]]] = {}
    for run_dir in map(Path, run_dirs):
        record = read_record(run_dir)
        identity: dict[str, object] = identity_of(record) if record else {}
        inputs = earlier_results(run_dir)[2] if record else {}
        if not record:  # a folder of results.csv only: what its rows say
            first = next(iter(read_csv(run_dir / "results.csv")), {})
            identity = {key: first.get(key) for key in ("benchmark", "network", "seed")}
        block = (str(identity.get("benchmark")), str(identity.get("network")))
        for other, other_identity, other_inputs in seen.get(block, []):
            if os.path.realpath(other) == os.path.realpath(run_dir):
                raise InputError(f"{run_dir} is given twice: one run is one seed; give each run folder once")
            if str(other_identity.get("seed")) == str(identity.get("seed")):
                raise InputError(
                    f"{other} and {run_dir} are both seed {identity.get('seed')} of {block[0]} / {block[1]}: "
                    "two runs of one seed are not two seeds, so they are not averaged; show them one at a "
                    "time, or give runs of different seeds"
                )
            fields = {k: v for k, v in identity.items() if k != "seed"}
            other_fields = {k: v for k, v in other_identity.items() if k != "seed"}
            differences = identity_differences(other_fields, fields)
            differences += [
                f"data of {name}: {other_inputs[name]} -> {inputs[name]}"
                for name in other_inputs.keys() & inputs.keys()
                if other_inputs[name] != inputs[name]
            ]
            if differences:
                raise InputError(
                    f"{other} and {run_dir} differ in more than the seed ({'; '.join(differences)}): they "
                    "are other experiments, not seeds of one, so they are not averaged; show them one at a "
                    "time"
                )
        seen.setdefault(block, []).append((run_dir, identity, inputs))


def check_definitions(fpr_convention: str | None, aupr: str) -> None:
    """Refuse an unknown FPR@95 convention or AUPR definition, naming the allowed values."""
    if fpr_convention is not None and fpr_convention not in FPR_CONVENTIONS:
        raise InputError(
            f"--fpr-convention must be one of {', '.join(FPR_CONVENTIONS)}, got {fpr_convention!r}"
        )
    if aupr not in AUPR_METHODS:
        raise InputError(f"--aupr must be one of {', '.join(AUPR_METHODS)}, got {aupr!r}")


def select_definitions(
    rows: Sequence[ResultRow],
    fpr_convention: str | None = None,
    aupr: str = "ap",
    source: str | Path | None = None,
) -> list[ResultRow]:
    """Rows whose ``fpr95`` and ``aupr_in`` / ``aupr_out`` hold the definitions asked for.

    ``fpr_convention`` None keeps each row's own; ``aupr`` ``"ap"`` is what ``aupr_in`` / ``aupr_out``
    hold, ``"trapezoid"`` takes the recorded trapezoid values. Each returned row says what it holds
    (``fpr_convention``, ``aupr_method``), so every table downstream labels it. Rows written before
    the variants were recorded serve their own definitions only; asking them for another raises one
    error naming ``source`` (the results file), the detectors and how to add the values.
    """
    check_definitions(fpr_convention, aupr)
    selected: list[ResultRow] = []
    lacking: dict[str, list[str]] = {}

    def take(row: Mapping[str, object], key: str, what: str) -> object:
        value = row.get(key)
        if value is None or value == "":
            names = lacking.setdefault(what, [])
            if str(row["detector"]) not in names:
                names.append(str(row["detector"]))
        return value

    for row in rows:
        new = dict(row)
        if fpr_convention is not None and fpr_convention != row["fpr_convention"]:
            new["fpr95"] = take(row, f"fpr95_{fpr_convention}", f"FPR@95 in the {fpr_convention} convention")
            new["fpr_convention"] = fpr_convention
        if aupr == "trapezoid":
            for side in ("in", "out"):
                new[f"aupr_{side}"] = take(row, f"aupr_{side}_trapezoid", "trapezoid AUPR")
        new["aupr_method"] = aupr
        selected.append(new)
    if lacking:
        raise InputError(_lacking_message(lacking, source))
    return selected


def _lacking_message(lacking: Mapping[str, Sequence[str]], source: str | Path | None) -> str:
    """Which definitions a results file lacks for which detectors, and the command that adds them."""
    detectors = list(dict.fromkeys(name for names in lacking.values() for name in names))
    what = " and ".join(f"{kind} for {_some(names)}" for kind, names in lacking.items())
    where = f"{source}: " if source is not None else ""
    path = Path(source) if source is not None else None
    if path is not None and path.name == "results.csv":
        run = f"`{rerun_command(path.parent, detectors)}`"
        options = (
            "" if (path.parent / "run.json").is_file() else " with the other options the run was made with"
        )
    else:
        run = f"`harness eval --out RUN_DIR --post {','.join(detectors)}` on each run these rows came from"
        options = " with the other options the run was made with"
    return (
        f"{where}no {what}: written before harness recorded every metric definition. Evaluate them "
        f"again: {run}{options}; it reuses the run's cached network outputs, recomputes only the "
        "metrics and rewrites results.csv with every definition"
    )


def _some(names: Sequence[str], shown: int = 6) -> str:
    """A list of detector names, shortened beyond ``shown`` (the command spells them all out)."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{len(names)} detectors ({', '.join(names[:shown])}, ...)"


def aggregate(rows: Sequence[ResultRow]) -> list[SeedMeanRow]:
    """Mean and std over seeds of every (benchmark, network, detector, dataset), in first-seen order."""
    groups: dict[tuple, list[ResultRow]] = {}
    for row in rows:
        key = (row["benchmark"], row["network"], row["detector"], row["dataset"], row["fpr_convention"])
        groups.setdefault(key, []).append(row)
    merged: list[SeedMeanRow] = []
    for group in groups.values():
        first = SeedMeanRow(**group[0])
        first["seeds"] = len(group)
        for metric in (*METRIC_NAMES, "id_accuracy", *VARIANT_NAMES):
            recorded = [r.get(metric) for r in group]
            if any(value is None or value == "" for value in recorded):  # a variant an older run lacks
                first[metric] = first[f"{metric}_std"] = None
                continue
            values = np.array([float(value) for value in recorded])  # type: ignore[arg-type]
            first[metric] = float(values.mean())
            first[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        merged.append(first)
    return merged


def cell_text(row: dict[str, object] | None, metric: str) -> str:
    """A metric as every table shows it: percent, 2 decimals, ``±std`` over several seeds, ``-`` if absent.

    The one formatting of a number for the terminal and every export, so they never disagree.
    """
    if row is None or row.get(metric) is None:
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
        raise InputError(f"--sort-by must be one of {', '.join(SORT_KEYS)}, got {sort_by!r}")


def shown_percent(fraction: float) -> float:
    """A fraction as every table shows it (percent, 2 decimals): what best cells and sorting compare."""
    return float(f"{100 * fraction:.2f}")


def shown_value(row: dict[str, object] | None, metric: str) -> float | None:
    """The mean as the table shows it (percent, 2 decimals), so that equal-looking cells tie."""
    if row is None or row.get(metric) is None:
        return None
    return shown_percent(float(row[metric]))  # type: ignore[arg-type]


def best_value(values: Sequence[float | None], higher: bool) -> float | None:
    """The best of the shown values of one column (highest, or lowest for FPR); None if none."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return max(present) if higher else min(present)


def detector_rows(rows: Sequence[ResultRow]) -> dict[tuple, dict[str, dict[str, object]]]:
    """Aggregated rows keyed by (benchmark, network, detector), then by dataset, in first-seen order."""
    by_detector: dict[tuple, dict[str, dict[str, object]]] = {}
    for row in rows:
        key = (row.get("benchmark", ""), row.get("network", ""), row["detector"])
        by_detector.setdefault(key, {})[str(row["dataset"])] = row
    return by_detector


def rank(
    by_detector: Mapping[tuple, Mapping[str, dict[str, object]]],
    metrics: Mapping[str, tuple[str, str, bool]],
    sort_by: str | None = None,
) -> tuple[list[tuple], dict[tuple, dict[str, float | None]]]:
    """The display order of the detectors and, per (benchmark, network) block, each metric's best.

    One rule for every table (terminal and exports): ``metrics`` maps a column to (dataset row,
    metric, whether higher is better); the best is the highest / lowest value *as shown* (percent,
    2 decimals), so every cell that looks equal to it ties. Unsorted, the order is exactly the input
    order, even where benchmarks / networks interleave; sorted by ``sort_by`` (a key of
    ``metrics``), each block is sorted on its own (stable: ties and missing values, last, keep
    their input order) and the blocks keep their input order.
    """
    blocks: dict[tuple, list[tuple]] = {}
    for key in by_detector:
        blocks.setdefault(key[:2], []).append(key)
    best: dict[tuple, dict[str, float | None]] = {}
    for block, keys in blocks.items():
        best[block] = {
            name: best_value([shown_value(by_detector[key].get(group), metric) for key in keys], higher)
            for name, (group, metric, higher) in metrics.items()
        }
        if sort_by is not None:
            group, metric, higher = metrics[sort_by]

            def order(key: tuple, group: str = group, metric: str = metric, higher: bool = higher) -> tuple:
                value = shown_value(by_detector[key].get(group), metric)
                return (value is None, 0.0 if value is None else (-value if higher else value))

            blocks[block] = sorted(keys, key=order)  # stable: ties keep the input order
    ordered = list(by_detector) if sort_by is None else [key for keys in blocks.values() for key in keys]
    return ordered, best


def is_best(row: dict[str, object] | None, metric: str, best: float | None) -> bool:
    """Whether a cell shows the best value of its column (a missing value never is)."""
    return best is not None and shown_value(row, metric) == best


def benchmark_title(rows: Sequence[ResultRow], asked: str) -> str:
    """The benchmark a leaderboard shows, for its title: the ``name`` its rows carry (the YAML's
    ``name``, e.g. ``fmnist``, not the path ``--benchmark`` was given), several joined by ", " in
    the order they come; ``asked`` (the ``--benchmark`` value) when the rows name none."""
    names = dict.fromkeys(str(row["benchmark"]) for row in rows if row.get("benchmark"))
    return ", ".join(names) if names else asked


def leaderboard_table(
    rows: Sequence[ResultRow], title: str = "Leaderboard", sort_by: str | None = None
) -> Table:
    """Near/far AUROC and FPR@95 per detector (percent), DFB variants marked, best cells in bold.

    Rows keep the input order unless ``sort_by`` names a metric (one of :data:`SORT_KEYS`): AUROC
    sorts descending, FPR@95 ascending, ties and detectors without that value (last) keeping their
    input order. In each metric column the best value (highest AUROC, lowest FPR@95, compared as
    shown) is bold, every tied cell included. With several benchmarks or networks, sorting and best
    cells are per benchmark / network, whose blocks keep their input order (see :func:`rank`). The
    bold is rich markup only: a cell's text is the same with or without it.
    """
    check_sort_by(sort_by)
    by_detector = detector_rows(rows)
    conventions = {str(row["fpr_convention"]) for row in rows}
    multi = len({key[:2] for key in by_detector}) > 1
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
    ordered, best = rank(by_detector, SORT_KEYS, sort_by)
    for key in ordered:
        bench, network, detector = key
        datasets = by_detector[key]
        near, far = datasets.get("near_mean"), datasets.get("far_mean")
        any_row = near or far or next(iter(datasets.values()))
        name = f"[bold]{detector}[/bold]" if "_dfb" in str(detector) or detector == "bg" else str(detector)
        metric_cells = []
        for column in ("near_auroc", "near_fpr95", "far_auroc", "far_fpr95"):
            group, metric, _ = SORT_KEYS[column]
            text = cell_text(datasets.get(group), metric)
            marked = is_best(datasets.get(group), metric, best[key[:2]][column])
            metric_cells.append(f"[bold]{text}[/bold]" if marked else text)
        cells = [
            name,
            NETWORK_LABELS.get(str(any_row.get("detector_network", "")), ""),
            *metric_cells,
            cell_text(any_row, "id_accuracy"),
        ]
        if searched:
            cells.append(str(any_row.get("hyperparameters") or ""))
        table.add_row(*([f"{bench} / {network}"] if multi else []), *cells)
    return table


def per_dataset_table(rows: Sequence[ResultRow], metric: str = "auroc") -> Table:
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
        table.add_row(detector, *[cell_text(values.get(d), metric) for d in datasets])
    return table


def read_results_json(run_dir: str | Path) -> dict[str, object]:
    """A run's ``results.json`` (rows plus detector reports)."""
    return read_json(Path(run_dir) / "results.json", follow_symlinks=False)
