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

**Provenance.** A table built with its runs' provenance (``build_table(..., runs=...)``,
:mod:`harness.provenance`) states each run's date, commit and versions in the form natural to
its format: JSON a ``runs`` list; Markdown a "Runs: ..." line ending the caption's paragraph (a
footnote: the file still opens with the table and ends with its caption); LaTeX ``%`` comment
lines above the table (they travel with the source but never typeset); HTML a list under the
table. CSV gets a last column, ``runs`` (each line's runs of its benchmark / network, one
``name: date ..., commit ..., versions`` per run, ``; ``-separated), not ``#`` comment lines:
Python's ``csv`` module and pandas without ``comment="#"`` would read such a line as a row, and a
spreadsheet shows it as one; an extra column every reader copes with. OpenOOD's tables stay
exactly OpenOOD's files; their ``manifest.json`` (and the ``#`` lines of the text shown on a
terminal, already comment lines there) carry the runs instead
(:func:`harness.export_openood.openood_manifest`).

This module holds the formats and the renderers; the table model is :mod:`harness.export_table`,
OpenOOD's tables :mod:`harness.export_openood` (their names are importable from here too).
"""

from __future__ import annotations

import csv
import html
import io
import json

from dfb_ood.errors import InputError
from dfb_ood.harness.export_openood import (
    OPENOOD_COLUMNS,
    OPENOOD_DEFINITIONS,
    OpenOODTable,
    openood_manifest,
    openood_tables,
    openood_text,
)
from dfb_ood.harness.export_table import (
    BEST_RULE,
    GROUPS,
    Cell,
    Column,
    Entry,
    ExportTable,
    build_table,
    table_columns,
)
from dfb_ood.harness.leaderboard import (
    AUPR_TEXT,
    CONVENTION_TEXT,
)
from dfb_ood.harness.markdown import markdown_escape, markdown_table
from dfb_ood.harness.provenance import runs_of

#: ``harness leaderboard --format`` values.
FORMATS: tuple[str, ...] = ("csv", "json", "markdown", "latex", "html", "openood")
#: The formats that write one leaderboard table (``openood`` writes one table per run and detector).
TABLE_FORMATS: tuple[str, ...] = FORMATS[:-1]


def check_format(name: str) -> None:
    """Refuse an unknown ``--format``, naming the allowed ones."""
    if name not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {name!r}")


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
    as results.csv does, so a line never travels without them. With the runs' provenance a last
    column, ``runs``, names the runs of the line's benchmark / network with their date, commit and
    versions (a column, not ``#`` lines: see the module's docstring).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["benchmark", "network", "detector", "net", "seeds"]
    for column in table.columns:
        header += [column.key, f"{column.key}_std"]
    header += ["best", "fpr_convention", "aupr", "unit", "hyperparameters"]
    if table.runs:
        header.append("runs")
    writer.writerow(header)
    for entry in table.entries:
        line: list[object] = [entry.benchmark, entry.network, entry.detector, entry.net, entry.seeds]
        for column in table.columns:
            cell = entry.cells[column.key]
            line += [_number(cell.mean), _number(cell.std)]
        best = " ".join(column.key for column in table.columns if entry.cells[column.key].best)
        line += [best, table.fpr_convention, table.aupr, "percent", entry.hyperparameters]
        if table.runs:
            shown = runs_of(table.runs, entry.benchmark, entry.network)
            line.append("; ".join(run.summary() for run in shown))
        writer.writerow(line)
    return buffer.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def render_json(table: ExportTable) -> str:
    """The table with its definitions as metadata; every number as shown (percent, 2 decimals).

    With the runs' provenance, ``runs`` lists each run's dates, commit and versions.
    """
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
    if table.runs:
        document["runs"] = [run.as_dict() for run in table.runs]
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_markdown(table: ExportTable) -> str:
    """A GitHub pipe table, best cells in ``**bold**``, the caption as a paragraph under it; with the
    runs' provenance the caption ends in a footnote line, ``Runs: NAME: date ..., commit ...,
    versions; ...``, so the file still opens with the table and ends with its caption paragraph."""
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
    runs = "; ".join(markdown_escape(run.summary()) for run in table.runs)
    footnote = f"\nRuns: {runs}.\n" if runs else "\n"
    return body + "\n\n" + markdown_escape(table.caption) + footnote


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


def _latex_comment(text: str) -> str:
    """Text for one ``%`` comment line: no line break can end the comment early."""
    return " ".join(text.split())


def render_latex(table: ExportTable) -> str:
    """A booktabs ``table`` (``\\usepackage{booktabs}``): near / far grouped under one header each.

    With the runs' provenance, one ``% run ...`` comment line per run above it (date, commit,
    versions): kept in the source, never typeset.
    """
    lead = _name_headers(table)
    metric_columns = [c for c in table.columns if c.group]
    other_columns = [c for c in table.columns if not c.group]
    spec = "l" * len(lead) + "r" * len(table.columns) + ("l" if table.searched else "")
    tail = ["searched hyper-parameters"] if table.searched else []
    group_row = [""] * len(lead)
    rules = []
    position = len(lead) + 1
    for group, _ in GROUPS:
        width = sum(1 for c in metric_columns if c.group == group)
        group_row.append(rf"\multicolumn{{{width}}}{{c}}{{{group}-OOD}}")
        rules.append(rf"\cmidrule(lr){{{position}-{position + width - 1}}}")
        position += width
    group_row += [""] * (len(other_columns) + len(tail))
    headings = [*lead, *(c.heading for c in metric_columns), *(c.heading for c in other_columns), *tail]
    lines = [
        "% dfb-ood leaderboard (harness leaderboard --format latex); needs \\usepackage{booktabs}",
        *(f"% run {_latex_comment(run.summary())}" for run in table.runs),
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


def _html_runs(table: ExportTable) -> list[str]:
    """The runs' provenance under the table: one list item per run (escaped)."""
    if not table.runs:
        return []
    items = [f"<li>{html.escape(run.summary())}</li>" for run in table.runs]
    return ["<p>Runs:</p>", "<ul>", *items, "</ul>"]


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
                *_html_runs(table),
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
        raise InputError(f"--format {fmt} writes one table per run and detector, not one leaderboard")
    return RENDERERS[fmt](table)


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
