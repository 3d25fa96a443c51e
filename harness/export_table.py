"""The leaderboard table every export format shows: columns, cells as shown, best marks, caption.

Why one model for all formats: CSV, JSON, Markdown, LaTeX and HTML must show the same numbers
with the same best marks and state the same definitions, so :func:`build_table` decides them once
(aggregated over seeds, compared as shown, the terminal table's rule) and each renderer in
:mod:`harness.export` only lays the model out. A table states one FPR@95 convention and one AUPR
definition: rows that mix them are refused with the option that makes them agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dfb_ood.errors import InputError
from dfb_ood.harness.leaderboard import (
    AUPR_LABELS,
    AUPR_TEXT,
    CONVENTION_TEXT,
    NETWORK_LABELS,
    aggregate,
    cell_text,
    check_sort_by,
    detector_rows,
    is_best,
    rank,
    shown_value,
)
from dfb_ood.harness.provenance import RunProvenance
from dfb_ood.harness.result_row import ResultRow

#: The metrics of each group, in column order: (key, results metric, heading, higher is better).
_METRICS = (
    ("auroc", "auroc", "AUROC", True),
    ("aupr_in", "aupr_in", "AUPR-In", True),
    ("aupr_out", "aupr_out", "AUPR-Out", True),
    ("fpr95", "fpr95", "FPR@95", False),
)
#: The two OOD groups: (name, the results row of their mean).
GROUPS = (("near", "near_mean"), ("far", "far_mean"))
#: How the best cells are marked (stated under every exported table).
BEST_RULE = (
    "best per benchmark / network in bold: highest AUROC and AUPR, lowest FPR@95, compared as shown, "
    "ties all marked"
)


@dataclass(frozen=True)
class Column:
    """One numeric column: which row (``near_mean``...) and metric it shows, and how it is named."""

    key: str  # "near_auroc"; "id_accuracy" for the ID accuracy
    group: str  # "near", "far" or "" (ID accuracy)
    dataset: str  # the aggregated row it reads: "near_mean", "far_mean"; "" = the detector's first row
    metric: str  # the results metric
    heading: str  # "AUROC", "AUPR-In (AP)", "FPR@95 (paper)", "ID acc"
    higher: bool | None  # None: not ranked (the ID accuracy belongs to the network, not the detector)

    @property
    def label(self) -> str:
        """The heading with its group, as a one-row header shows it (``near AUROC``)."""
        return f"{self.group} {self.heading}" if self.group else self.heading


def table_columns(fpr_convention: str, aupr: str) -> list[Column]:
    """The numeric columns of the leaderboard, the definitions in their headings."""
    headings = {
        "aupr_in": f"AUPR-In ({AUPR_LABELS[aupr]})",
        "aupr_out": f"AUPR-Out ({AUPR_LABELS[aupr]})",
        "fpr95": f"FPR@95 ({fpr_convention})",
    }
    columns = [
        Column(f"{group}_{key}", group, dataset, metric, headings.get(key, heading), higher)
        for group, dataset in GROUPS
        for key, metric, heading, higher in _METRICS
    ]
    return [*columns, Column("id_accuracy", "", "", "id_accuracy", "ID acc", None)]


@dataclass(frozen=True)
class Cell:
    """A number as every format shows it: the terminal's text, the shown mean and std, best or not."""

    text: str  # "90.00±1.41", "90.00", "-"
    mean: float | None  # percent, rounded as shown
    std: float | None  # percent, rounded as shown; None with one seed
    best: bool


@dataclass(frozen=True)
class Entry:
    """One line of the leaderboard: a detector on one benchmark and network."""

    benchmark: str
    network: str
    detector: str
    net: str  # K, K+1 or "K, bg": which network's outputs the detector read
    seeds: int
    hyperparameters: str
    cells: dict[str, Cell]


@dataclass(frozen=True)
class ExportTable:
    """The leaderboard as data: what every renderer formats, so the formats cannot disagree."""

    title: str
    columns: list[Column]
    entries: list[Entry]
    fpr_convention: str
    aupr: str
    sort_by: str | None
    several_blocks: bool  # more than one (benchmark, network): a first column names it
    searched: bool  # some detector's hyper-parameters were searched: a last column lists them
    seeds: list[int] = field(default_factory=list)  # distinct seed counts
    #: the provenance of the runs shown (harness.provenance); every renderer states it when given
    runs: tuple[RunProvenance, ...] = ()

    @property
    def caption(self) -> str:
        """Definitions, units and the marking rule, in one paragraph (ASCII apart from ±)."""
        several = [n for n in self.seeds if n > 1]
        if several:
            counts = "/".join(str(n) for n in several)
            numbers = f"Percent, mean ± sample std over {counts} seeds"
            if len(several) < len(self.seeds):
                numbers += " (a detector run with one seed: its value)"
        else:
            numbers = "Percent, one seed"
        label = next((c.label for c in self.columns if c.key == self.sort_by), self.sort_by)
        sorted_note = f" Sorted by {label}." if self.sort_by else ""
        return (
            f"{CONVENTION_TEXT[self.fpr_convention]}. {AUPR_TEXT[self.aupr]}. {numbers}; "
            f"{BEST_RULE}.{sorted_note} net: K = "
            'the K-class classifier, K+1 = the DFB net, "K, bg" = classifier foreground + DFB background.'
        )


def single_value(rows: Sequence[ResultRow], key: str, what: str, fix: str) -> str:
    values = list(dict.fromkeys(str(row.get(key, "")) for row in rows))
    if len(values) != 1:
        raise InputError(f"the rows mix {what} ({', '.join(values) or 'none'}); {fix}")
    return values[0]


def build_table(
    rows: Sequence[ResultRow],
    title: str = "Leaderboard",
    sort_by: str | None = None,
    runs: Sequence[RunProvenance] = (),
) -> ExportTable:
    """The leaderboard of result rows (every seed's; see :func:`harness.leaderboard.select_definitions`).

    ``runs`` is the provenance of the runs the rows came from
    (:func:`harness.provenance.runs_provenance` of their folders): every format then states each
    run's date, commit and versions; without it the table is as before.

    The rows are aggregated over seeds here (mean, sample std). One table states one FPR@95
    convention and one AUPR definition, so rows that mix them are refused with the option that
    makes them agree.
    """
    check_sort_by(sort_by)
    if not rows:
        raise InputError("no result rows to export")
    convention = single_value(
        rows, "fpr_convention", "FPR@95 conventions", "pass --fpr-convention paper or openood to show one"
    )
    if convention not in CONVENTION_TEXT:
        raise InputError(f"unknown FPR@95 convention {convention!r} in the rows; expected paper or openood")
    aupr = str(rows[0].get("aupr_method") or "ap")
    if any(str(row.get("aupr_method") or "ap") != aupr for row in rows):
        raise InputError("the rows mix AUPR definitions; pass --aupr ap or trapezoid to show one")
    columns = table_columns(convention, aupr)
    ranked = {c.key: (c.dataset, c.metric, bool(c.higher)) for c in columns if c.higher is not None}
    by_detector = detector_rows(aggregate(rows))
    ordered, best = rank(by_detector, ranked, sort_by)
    entries = []
    for key in ordered:
        bench, network, detector = key
        datasets = by_detector[key]
        any_row = datasets.get("near_mean") or datasets.get("far_mean") or next(iter(datasets.values()))
        cells = {}
        for column in columns:
            row = datasets.get(column.dataset) if column.dataset else any_row
            target = best[key[:2]].get(column.key)
            std = None
            if row is not None and int(row.get("seeds", 1)) > 1:  # type: ignore[call-overload]
                std = shown_value({column.metric: row.get(f"{column.metric}_std")}, column.metric)
            cells[column.key] = Cell(
                text=cell_text(row, column.metric),
                mean=shown_value(row, column.metric),
                std=std,
                best=column.higher is not None and is_best(row, column.metric, target),
            )
        entries.append(
            Entry(
                benchmark=str(bench),
                network=str(network),
                detector=str(detector),
                net=NETWORK_LABELS.get(str(any_row.get("detector_network", "")), ""),
                seeds=int(any_row.get("seeds", 1)),  # type: ignore[call-overload]
                hyperparameters=str(any_row.get("hyperparameters") or ""),
                cells=cells,
            )
        )
    return ExportTable(
        title=title,
        columns=columns,
        entries=entries,
        fpr_convention=convention,
        aupr=aupr,
        sort_by=sort_by,
        several_blocks=len({key[:2] for key in by_detector}) > 1,
        searched=any(entry.hyperparameters for entry in entries),
        seeds=sorted({entry.seeds for entry in entries}),
        runs=tuple(runs),
    )


__all__ = [
    "BEST_RULE",
    "GROUPS",
    "Cell",
    "Column",
    "Entry",
    "ExportTable",
    "build_table",
    "single_value",
    "table_columns",
]
