"""report.md: the run's settings, its results tables and every figure with its caption.

Why apart from the figures: report.md is the text a reader (and the leaderboard page, which reads
its captions) sees, written from the run view and the sections the figures returned; every value
read from a file is Markdown-escaped (:mod:`harness.markdown`). It also states the figure format
on one line (:data:`FIGURE_FORMAT_LINE`), which :func:`recorded_figure_format` reads back so that
a rebuilt report, or ``harness figure tsne``, keeps the format of the report it replaces.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from dfb_ood.harness import plots
from dfb_ood.harness.evaluate import CLASSIFIER
from dfb_ood.harness.io import read_regular_text
from dfb_ood.harness.leaderboard import CONVENTION_TEXT, NETWORK_LABELS
from dfb_ood.harness.markdown import markdown_escape, markdown_table
from dfb_ood.harness.report_view import RunView, Section, network_label, ood_names

#: The line of report.md that records its figures' format (read back when the report is rebuilt).
FIGURE_FORMAT_LINE = re.compile(r"^Figure format: `(\w+)`", re.MULTILINE)
FIGURE_FORMAT_NOTES: dict[str, str] = {
    "png": "embedded below",
    "svg": "vector, embedded below",
    "pdf": "vector, linked below: markdown cannot embed a PDF; "
    "`harness report RUN --figure-format png` gives embeddable figures",
}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def results_table(view: RunView) -> str:
    """The markdown results table: near/far AUROC and FPR@95 per detector, in percent."""
    searched = any(row.get("hyperparameters") for row in view.rows)
    header = ["detector", "net", "near AUROC", "near FPR95", "far AUROC", "far FPR95", "ID acc"]
    header += ["searched hyper-parameters"] if searched else []
    aligns = ["---"] + ["---:"] * 6 + (["---"] if searched else [])
    rows = []
    for name in view.detectors:
        by_set = {str(r["dataset"]): r for r in view.rows if r["detector"] == name}
        any_row = next(iter(by_set.values()))
        label = (
            f"**{markdown_escape(name)}**"
            if network_label(view, name) != CLASSIFIER
            else markdown_escape(name)
        )
        cells = [
            label,
            NETWORK_LABELS.get(str(any_row.get("detector_network", "")), ""),
            _percent(view.table_value(name, "near_mean")),
            _percent(view.table_value(name, "near_mean", "fpr95")),
            _percent(view.table_value(name, "far_mean")),
            _percent(view.table_value(name, "far_mean", "fpr95")),
            _percent(float(any_row["id_accuracy"])),
        ]
        cells += [markdown_escape(any_row.get("hyperparameters") or "")] if searched else []
        rows.append(cells)
    return markdown_table(header, aligns, rows)


def per_set_table(view: RunView) -> str:
    """AUROC per OOD set (percent), one row per detector."""
    sets = ood_names(view)
    header = ["detector", *(markdown_escape(name) for name in sets)]
    rows = [
        [markdown_escape(name), *(_percent(view.table_value(name, s)) for s in sets)]
        for name in view.detectors
    ]
    return markdown_table(header, ["---"] + ["---:"] * len(sets), rows)


def _settings_line(view: RunView) -> str:
    """The run's settings in one sentence; every value read from a file is Markdown-escaped."""
    record = view.record
    settings = record.get("settings", {})
    md = markdown_escape
    parts = [
        f"benchmark {md(record.get('benchmark', {}).get('name', settings.get('benchmark')))}",
        f"network {md(record.get('network'))}",
        f"recipe {md(settings.get('recipe'))} "
        f"({md(record.get('recipe', {}).get('steps', '?'))} steps per stage)",
        f"seed {md(settings.get('seed'))}",
        f"eval size {md(record.get('eval_size'))} px",
        f"device {md(record.get('device'))}",
        f"DFB foreground from the {md(settings.get('foreground', 'dfb'))} net",
        f"hyper-parameter search {'on' if settings.get('search') else 'off'}",
        f"FPR convention {md(view.fpr_convention)}",
    ]
    total = (record.get("timings_s") or {}).get("total")
    if total is not None:
        parts.append(f"last bench call {total:.0f} s")
    commit = record.get("git_commit")
    if commit:
        parts.append(f"commit {md(str(commit)[:10])}")
    return "Settings: " + ", ".join(parts) + "."


def _notes(view: RunView) -> list[str]:
    notes = []
    for report in view.detector_reports:
        for note in report.get("notes", []):
            notes.append(note if str(note).startswith(report["name"]) else f"{report['name']}: {note}")
        if report.get("clamped"):
            counts = ", ".join(f"{count} {name}" for name, count in report["clamped"].items())
            notes.append(f"{report['name']}: background logit clamped before the log on {counts}")
    return [markdown_escape(note) for note in notes]


def render_markdown(
    view: RunView, sections: Sequence[Section], out_dir: Path, figure_format: str = "png"
) -> str:
    """report.md's text; figure links are relative to ``out_dir`` and only to files that exist.

    PNG and SVG figures are embedded (``![...](...)``); a PDF is a plain link with its caption, since
    markdown viewers do not show one inline. The format is stated once, on the line
    :data:`FIGURE_FORMAT_LINE` reads back.
    """
    convention = CONVENTION_TEXT.get(view.fpr_convention, view.fpr_convention)
    lines = [
        f"# DFB report: {markdown_escape(view.label)}",
        "",
        f"Run directory: {markdown_escape(view.run_dir)}.",
        "",
        _settings_line(view),
        "",
        "## Results",
        "",
        results_table(view),
        "",
        f"Percent. {convention}. Higher AUROC, lower FPR95 = better. net: K = the K-class classifier, "
        'K+1 = the DFB net, "K, bg" = classifier foreground + DFB background. **Bold**: detectors that '
        "read the DFB net. near/far = mean over that group's OOD sets.",
        "",
        "AUROC per OOD set (%):",
        "",
        per_set_table(view),
        "",
    ]
    notes = _notes(view)
    if notes:
        lines += ["Notes from the evaluation:", ""] + [f"- {note}" for note in notes] + [""]
    lines += [
        "## Figures",
        "",
        f"Figure format: `{figure_format}` ({FIGURE_FORMAT_NOTES.get(figure_format, 'linked below')}).",
        "",
    ]
    for section in sections:
        lines += [f"### {section.heading}", ""]
        written = [(path, caption) for path, caption in section.figures if path.is_file()]
        if section.skipped or not written:
            lines += [f"*Skipped: {section.skipped or 'no figure was written.'}*", ""]
            continue
        for path, caption in written:
            link = urllib.parse.quote(Path(os.path.relpath(path, out_dir)).as_posix())
            stem = path.stem  # our own figure names (detectors from the registry): no markup in them
            if path.suffix.lower() == ".pdf":
                lines += [f"[{stem} (PDF)]({link})", "", f"*{caption}*", ""]
            else:
                lines += [f"![{stem}]({link})", "", f"*{caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def recorded_figure_format(out_dir: str | Path) -> str | None:
    """The figure format of the report.md already in ``out_dir``, or None when there is none."""
    path = Path(out_dir) / "report.md"
    if path.is_symlink() or not path.is_file():
        return None  # a link is not read through (and is replaced when report.md is written)
    match = FIGURE_FORMAT_LINE.search(read_regular_text(path))
    return match.group(1) if match and match.group(1) in plots.FIGURE_FORMATS else None


__all__ = [
    "FIGURE_FORMAT_LINE",
    "FIGURE_FORMAT_NOTES",
    "per_set_table",
    "recorded_figure_format",
    "render_markdown",
    "results_table",
]
