"""Leaderboard exports: CSV, JSON, Markdown, LaTeX and HTML tables, and OpenOOD's per-run tables.

Two kinds of output, both from result rows and never from scores:

- **The leaderboard table** (:func:`build_table`, then ``render_<format>``): one line per
  (benchmark, network, detector), near- and far-OOD AUROC, AUPR-In, AUPR-Out and FPR@95, and the
  ID accuracy, in percent, mean ± std over seeds. Every format shows the same text as the terminal
  table (:func:`harness.leaderboard.cell_text`), marks the best value of each metric column with
  the terminal's rule (:func:`harness.leaderboard.rank`: compared as shown, ties all marked, per
  benchmark / network) and states the FPR@95 convention and the AUPR definition, so a table pasted
  into a paper or a README carries its definitions with it.
- **OpenOOD's table** (:func:`openood_tables`): per run and detector, the DataFrame OpenOOD v1.5's
  ``Evaluator.eval_ood`` returns (``openood/evaluation_api/evaluator.py``): one row per near-OOD
  set, ``nearood`` (their mean), one per far-OOD set, ``farood``; columns ``FPR@95, AUROC, AUPR_IN,
  AUPR_OUT, ACC`` in percent, written as OpenOOD's scripts write it
  (``metrics.to_csv(path, float_format='{:.2f}'.format)``). With OpenOOD's definitions (its FPR@95
  convention, trapezoid AUPR) the header is exactly OpenOOD's; any other definition is named in
  the header (``FPR@95 (paper)``, ``AUPR_IN (AP)``) so the file cannot pass for OpenOOD's numbers.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
from dfb_ood.harness.markdown import markdown_escape, markdown_table
from dfb_ood.harness.names import safe_file_name

#: ``harness leaderboard --format`` values.
FORMATS: tuple[str, ...] = ("csv", "json", "markdown", "latex", "html", "openood")
#: The formats that write one leaderboard table (``openood`` writes one table per run and detector).
TABLE_FORMATS: tuple[str, ...] = FORMATS[:-1]
#: OpenOOD v1.5's column names, in its order.
OPENOOD_COLUMNS: tuple[str, ...] = ("FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT", "ACC")
#: The definitions OpenOOD v1.5 uses: the default of ``--format openood``.
OPENOOD_DEFINITIONS = {"fpr_convention": "openood", "aupr": "trapezoid"}
#: The metrics of each group, in column order: (key, results metric, heading, higher is better).
_METRICS = (
    ("auroc", "auroc", "AUROC", True),
    ("aupr_in", "aupr_in", "AUPR-In", True),
    ("aupr_out", "aupr_out", "AUPR-Out", True),
    ("fpr95", "fpr95", "FPR@95", False),
)
_GROUPS = (("near", "near_mean"), ("far", "far_mean"))
BEST_RULE = (
    "best per benchmark / network in bold: highest AUROC and AUPR, lowest FPR@95, compared as shown, "
    "ties all marked"
)


def check_format(name: str) -> None:
    """Refuse an unknown ``--format``, naming the allowed ones."""
    if name not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {name!r}")


# ------------------------------------------------------------------------------- the leaderboard
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
        for group, dataset in _GROUPS
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


def _single(rows: Sequence[Mapping[str, object]], key: str, what: str, fix: str) -> str:
    values = list(dict.fromkeys(str(row.get(key, "")) for row in rows))
    if len(values) != 1:
        raise ValueError(f"the rows mix {what} ({', '.join(values) or 'none'}); {fix}")
    return values[0]


def build_table(
    rows: Sequence[dict[str, object]], title: str = "Leaderboard", sort_by: str | None = None
) -> ExportTable:
    """The leaderboard of result rows (every seed's; see :func:`harness.leaderboard.select_definitions`).

    The rows are aggregated over seeds here (mean, sample std). One table states one FPR@95
    convention and one AUPR definition, so rows that mix them are refused with the option that
    makes them agree.
    """
    check_sort_by(sort_by)
    if not rows:
        raise ValueError("no result rows to export")
    convention = _single(
        rows, "fpr_convention", "FPR@95 conventions", "pass --fpr-convention paper or openood to show one"
    )
    if convention not in CONVENTION_TEXT:
        raise ValueError(f"unknown FPR@95 convention {convention!r} in the rows; expected paper or openood")
    aupr = str(rows[0].get("aupr_method") or "ap")
    if any(str(row.get("aupr_method") or "ap") != aupr for row in rows):
        raise ValueError("the rows mix AUPR definitions; pass --aupr ap or trapezoid to show one")
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
    )


def _name_cells(table: ExportTable, entry: Entry) -> list[str]:
    """The leading text cells of a line: benchmark / network (several blocks), detector, net."""
    lead = [f"{entry.benchmark} / {entry.network}"] if table.several_blocks else []
    return [*lead, entry.detector, entry.net]


def _name_headers(table: ExportTable) -> list[str]:
    return [*(["benchmark / network"] if table.several_blocks else []), "detector", "net"]


def render_csv(table: ExportTable) -> str:
    """One line per detector; each metric as its shown mean and std (percent) in two columns.

    ``best`` lists the metric columns in which the line holds the best value (the bold cells of the
    other formats); ``fpr_convention``, ``aupr`` and ``unit`` repeat the definitions on every line,
    as results.csv does, so a line never travels without them.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["benchmark", "network", "detector", "net", "seeds"]
    for column in table.columns:
        header += [column.key, f"{column.key}_std"]
    header += ["best", "fpr_convention", "aupr", "unit", "hyperparameters"]
    writer.writerow(header)
    for entry in table.entries:
        line: list[object] = [entry.benchmark, entry.network, entry.detector, entry.net, entry.seeds]
        for column in table.columns:
            cell = entry.cells[column.key]
            line += [_number(cell.mean), _number(cell.std)]
        best = " ".join(column.key for column in table.columns if entry.cells[column.key].best)
        line += [best, table.fpr_convention, table.aupr, "percent", entry.hyperparameters]
        writer.writerow(line)
    return buffer.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def render_json(table: ExportTable) -> str:
    """The table with its definitions as metadata; every number as shown (percent, 2 decimals)."""
    document = {
        "title": table.title,
        "fpr_convention": table.fpr_convention,
        "fpr_convention_text": CONVENTION_TEXT[table.fpr_convention],
        "aupr": table.aupr,
        "aupr_text": AUPR_TEXT[table.aupr],
        "unit": "percent",
        "std": "sample standard deviation (ddof=1) over seeds; null with one seed",
        "best": BEST_RULE,
        "sort_by": table.sort_by,
        "caption": table.caption,
        "columns": [
            {
                "key": c.key,
                "label": c.label,
                "group": c.group or None,
                "metric": c.metric,
                "higher_is_better": c.higher,
            }
            for c in table.columns
        ],
        "rows": [
            {
                "benchmark": entry.benchmark,
                "network": entry.network,
                "detector": entry.detector,
                "net": entry.net,
                "seeds": entry.seeds,
                "hyperparameters": entry.hyperparameters,
                "cells": {
                    key: {"mean": cell.mean, "std": cell.std, "text": cell.text, "best": cell.best}
                    for key, cell in entry.cells.items()
                },
            }
            for entry in table.entries
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_markdown(table: ExportTable) -> str:
    """A GitHub pipe table, best cells in ``**bold**``, the caption as a paragraph under it."""
    headers = [*_name_headers(table), *(c.label for c in table.columns)]
    aligns = [":--"] * len(_name_headers(table)) + ["--:"] * len(table.columns)
    if table.searched:
        headers.append("searched hyper-parameters")
        aligns.append(":--")
    rows = []
    for entry in table.entries:
        cells = [markdown_escape(text) for text in _name_cells(table, entry)]
        for column in table.columns:
            cell = entry.cells[column.key]
            text = markdown_escape(cell.text)
            cells.append(f"**{text}**" if cell.best else text)
        if table.searched:
            cells.append(markdown_escape(entry.hyperparameters))
        rows.append(cells)
    body = markdown_table([markdown_escape(h) for h in headers], aligns, rows)
    return body + "\n\n" + markdown_escape(table.caption) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
}


def latex_escape(text: str) -> str:
    """Text that LaTeX typesets literally (``±`` as ``$\\pm$``)."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def render_latex(table: ExportTable) -> str:
    """A booktabs ``table`` (``\\usepackage{booktabs}``): near / far grouped under one header each."""
    lead = _name_headers(table)
    metric_columns = [c for c in table.columns if c.group]
    other_columns = [c for c in table.columns if not c.group]
    spec = "l" * len(lead) + "r" * len(table.columns) + ("l" if table.searched else "")
    tail = ["searched hyper-parameters"] if table.searched else []
    group_row = [""] * len(lead)
    rules = []
    position = len(lead) + 1
    for group, _ in _GROUPS:
        width = sum(1 for c in metric_columns if c.group == group)
        group_row.append(rf"\multicolumn{{{width}}}{{c}}{{{group}-OOD}}")
        rules.append(rf"\cmidrule(lr){{{position}-{position + width - 1}}}")
        position += width
    group_row += [""] * (len(other_columns) + len(tail))
    headings = [*lead, *(c.heading for c in metric_columns), *(c.heading for c in other_columns), *tail]
    lines = [
        "% dfb-ood leaderboard (harness leaderboard --format latex); needs \\usepackage{booktabs}",
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(group_row) + r" \\",
        " ".join(rules),
        " & ".join(latex_escape(h) for h in headings) + r" \\",
        r"\midrule",
    ]
    order = [*metric_columns, *other_columns]
    for entry in table.entries:
        cells = [latex_escape(text) for text in _name_cells(table, entry)]
        for column in order:
            cell = entry.cells[column.key]
            text = latex_escape(cell.text)
            cells.append(rf"\textbf{{{text}}}" if cell.best else text)
        if table.searched:
            cells.append(latex_escape(entry.hyperparameters))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


_HTML_STYLE = (
    "table{border-collapse:collapse;font-family:system-ui,sans-serif;font-size:14px}"
    "th,td{padding:4px 8px;border-bottom:1px solid #ddd;white-space:nowrap}"
    "th{text-align:left;border-bottom:2px solid #444}td.num,th.num{text-align:right;"
    "font-variant-numeric:tabular-nums}caption{caption-side:bottom;text-align:left;color:#444;"
    "padding-top:8px;white-space:normal;max-width:60em}"
)


def render_html(table: ExportTable) -> str:
    """A standalone HTML document holding the one ``<table>`` (best cells in ``<strong>``)."""
    esc = html.escape
    head = [f"<th>{esc(h)}</th>" for h in _name_headers(table)]
    head += [f'<th class="num">{esc(c.label)}</th>' for c in table.columns]
    if table.searched:
        head.append("<th>searched hyper-parameters</th>")
    body = []
    for entry in table.entries:
        cells = [f"<td>{esc(text)}</td>" for text in _name_cells(table, entry)]
        for column in table.columns:
            cell = entry.cells[column.key]
            text = esc(cell.text)
            cells.append(f'<td class="num">{f"<strong>{text}</strong>" if cell.best else text}</td>')
        if table.searched:
            cells.append(f"<td>{esc(entry.hyperparameters)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en">',
                '<head><meta charset="utf-8">',
                f"<title>{esc(table.title)}</title>",
                f"<style>{_HTML_STYLE}</style></head>",
                "<body>",
                "<table>",
                f"<caption>{esc(table.caption)}</caption>",
                "<thead><tr>" + "".join(head) + "</tr></thead>",
                "<tbody>",
                *body,
                "</tbody>",
                "</table>",
                "</body>",
                "</html>",
            ]
        )
        + "\n"
    )


RENDERERS = {
    "csv": render_csv,
    "json": render_json,
    "markdown": render_markdown,
    "latex": render_latex,
    "html": render_html,
}


def render(table: ExportTable, fmt: str) -> str:
    """The table in one of :data:`TABLE_FORMATS`."""
    check_format(fmt)
    if fmt not in RENDERERS:
        raise ValueError(f"--format {fmt} writes one table per run and detector, not one leaderboard")
    return RENDERERS[fmt](table)


# ------------------------------------------------------------------------------- OpenOOD's tables
@dataclass(frozen=True)
class OpenOODTable:
    """OpenOOD v1.5's ``eval_ood`` table of one detector on one run, in percent (full precision)."""

    benchmark: str
    network: str
    seed: str
    detector: str
    index: list[str]  # near sets, "nearood", far sets, "farood"
    values: list[list[float]]  # per index row: FPR@95, AUROC, AUPR_IN, AUPR_OUT, ACC (percent)
    fpr_convention: str
    aupr: str

    @property
    def header(self) -> list[str]:
        """OpenOOD's column names; a definition other than OpenOOD's is named beside its column."""
        fpr = "FPR@95" if self.fpr_convention == "openood" else f"FPR@95 ({self.fpr_convention})"
        if self.aupr == "trapezoid":
            aupr = ["AUPR_IN", "AUPR_OUT"]
        else:
            aupr = [f"AUPR_IN ({AUPR_LABELS[self.aupr]})", f"AUPR_OUT ({AUPR_LABELS[self.aupr]})"]
        return [fpr, "AUROC", *aupr, "ACC"]

    def to_csv(self) -> str:
        """As OpenOOD's scripts write it: ``DataFrame.to_csv(path, float_format='{:.2f}'.format)``."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["", *self.header])  # the unnamed index column
        for name, values in zip(self.index, self.values, strict=True):
            writer.writerow([name, *(f"{value:.2f}" for value in values)])
        return buffer.getvalue()

    @property
    def relative_path(self) -> Path:
        """``<benchmark>/<network>/seed<k>/ood/<detector>.csv``: the runs' layout, OpenOOD's ``ood/``."""
        parts = [_path_part(self.benchmark), _path_part(self.network), _path_part(f"seed{self.seed}")]
        return Path(*parts, "ood", f"{_path_part(self.detector)}.csv")

    @property
    def title(self) -> str:
        return f"{self.benchmark} / {self.network} / seed {self.seed} / {self.detector}"


def _path_part(text: str) -> str:
    """A name safe as one path component (a ``timm:`` network, a results row's benchmark name)."""
    return safe_file_name(text)


def openood_tables(rows: Sequence[Mapping[str, object]]) -> list[OpenOODTable]:
    """OpenOOD's table for every (run, detector) of result rows, in the rows' order.

    ``rows`` are per-seed rows (not aggregated) whose ``fpr95`` / ``aupr_*`` hold the definitions to
    show (:func:`harness.leaderboard.select_definitions`). ``nearood`` / ``farood`` are the
    ``near_mean`` / ``far_mean`` rows (plain means over the group's sets, as OpenOOD's); a group
    without sets has neither rows nor mean, where OpenOOD would show a mean of nothing. ACC is the
    ID accuracy of the network the detector read, repeated on every row as OpenOOD does.
    """
    runs: dict[tuple[str, str, str, str], list[Mapping[str, object]]] = {}
    for row in rows:
        key = (str(row["benchmark"]), str(row["network"]), str(row["seed"]), str(row["detector"]))
        runs.setdefault(key, []).append(row)
    tables = []
    for (benchmark, network, seed, detector), members in runs.items():
        datasets = [str(row["dataset"]) for row in members]
        if len(set(datasets)) != len(datasets):
            raise ValueError(
                f"{benchmark} / {network} / seed {seed} / {detector} has several rows for one OOD set: the "
                "rows come from several runs of the same benchmark, network and seed; export them one run "
                "at a time"
            )
        convention = _single(members, "fpr_convention", "FPR@95 conventions", "pass --fpr-convention")
        aupr = _single(members, "aupr_method", "AUPR definitions", "pass --aupr")
        if aupr == "":
            aupr = "ap"
        index: list[str] = []
        values: list[list[float]] = []
        for group, mean_name in (("near", "nearood"), ("far", "farood")):
            sets = [row for row in members if row.get("group") == group]
            mean = next((row for row in members if row["dataset"] == f"{group}_mean"), None)
            for row in [*sets, *([mean] if sets and mean is not None else [])]:
                index.append(mean_name if row is mean else str(row["dataset"]))
                values.append([100 * float(row[key]) for key in ("fpr95", "auroc", "aupr_in", "aupr_out")])  # type: ignore[arg-type]
                values[-1].append(100 * float(row["id_accuracy"]))  # type: ignore[arg-type]
        if not index:
            continue  # rows without any near or far set (nothing OpenOOD would show)
        tables.append(OpenOODTable(benchmark, network, seed, detector, index, values, convention, aupr))
    return tables


def openood_text(tables: Sequence[OpenOODTable]) -> str:
    """Every table for a terminal or a pipe: a ``#`` line naming run and detector above each CSV."""
    if not tables:
        return ""
    first = tables[0]
    lines = [
        "# OpenOOD v1.5 evaluator tables (percent), one per run and detector; "
        f"{CONVENTION_TEXT[first.fpr_convention]}; {AUPR_TEXT[first.aupr]}",
    ]
    for table in tables:
        lines += ["", f"# {table.title}", table.to_csv().rstrip("\n")]
    return "\n".join(lines) + "\n"


def openood_manifest(tables: Sequence[OpenOODTable], sources: Mapping[str, str]) -> dict[str, object]:
    """What a folder of OpenOOD tables holds: the definitions, and each file's run and detector.

    ``sources`` maps a table's relative path to the run directory it came from.
    """
    first = tables[0] if tables else None
    return {
        "format": "openood",
        "description": "OpenOOD v1.5 Evaluator.eval_ood tables (percent), one per run and detector",
        "columns": list(first.header) if first else list(OPENOOD_COLUMNS),
        "fpr_convention": first.fpr_convention if first else None,
        "fpr_convention_text": CONVENTION_TEXT[first.fpr_convention] if first else None,
        "aupr": first.aupr if first else None,
        "aupr_text": AUPR_TEXT[first.aupr] if first else None,
        "files": {
            table.relative_path.as_posix(): {
                "run_dir": sources.get(table.relative_path.as_posix(), ""),
                "benchmark": table.benchmark,
                "network": table.network,
                "seed": table.seed,
                "detector": table.detector,
            }
            for table in tables
        },
    }


__all__ = [
    "FORMATS",
    "OPENOOD_COLUMNS",
    "OPENOOD_DEFINITIONS",
    "TABLE_FORMATS",
    "Cell",
    "Column",
    "Entry",
    "ExportTable",
    "OpenOODTable",
    "build_table",
    "check_format",
    "latex_escape",
    "markdown_escape",
    "openood_manifest",
    "openood_tables",
    "openood_text",
    "render",
    "render_csv",
    "render_html",
    "render_json",
    "render_latex",
    "render_markdown",
    "table_columns",
]
