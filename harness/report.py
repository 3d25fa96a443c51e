"""Figures and a markdown report for one finished run directory (issue 7).

``write_report(run_dir)`` re-opens the run read-only (its networks and cached outputs; nothing is
retrained or re-evaluated from scratch) and writes, under ``run_dir/report/``, these figures as PNG
(the default, embedded in report.md), SVG (embedded too) or PDF (linked: markdown cannot embed
it), the format named in report.md:

- ``fg_bg_distributions.<format>``: foreground and background score distributions, ID test vs each OOD
  set, for one DFB variant (the paper's Fig. 4);
- ``roc_<base>.<format>``: ROC curves per OOD set of a base detector and its DFB variants;
- ``masks_id.<format>``: ID training images, their CAMs, pseudo masks and the DFB net's P(background)
  (the paper's App. A.1);
- ``bg_probability_ood.<format>``: the DFB net's per-pixel P(background) on a few ID and OOD test images
  (the idea of the paper's Fig. 1);
- ``temperature_sweep.<format>``: AUROC of each ``_dfb`` variant against the fusion temperature T (Fig. 6);
- ``auroc_bars.<format>``: near/far AUROC of every detector;
- ``tsne.<format>``: a t-SNE of the pooled features of ID test and OOD test images, the K-class
  classifier beside the DFB net (the paper's Fig. 5; :mod:`harness.tsne`, a bounded sample);
- ``report.md``: the results table and every figure with a caption.

Every number a figure shows is recomputed from the cached outputs by the same code the table came
from, and checked against ``results.json`` / ``results.csv``: a figure that disagrees with its own
table raises :class:`ReportConsistencyError` instead of being written.

This module writes the report under the run's read lock; the run view is
:mod:`harness.report_view`, the recomputed numbers :mod:`harness.report_numbers`, the figures
:mod:`harness.report_figures` and report.md's text :mod:`harness.report_markdown`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from dfb_ood.errors import InputError
from dfb_ood.harness import plots
from dfb_ood.harness.export_target import check_report_folder, record_report
from dfb_ood.harness.io import READ_FIX, READ_WAIT_S, own_folder, read_lock, write_text
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.report_figures import FIGURES
from dfb_ood.harness.report_markdown import recorded_figure_format, render_markdown
from dfb_ood.harness.report_numbers import (
    CSV_TOLERANCE,
    TABLE_TOLERANCE,
    ReportConsistencyError,
    check_sweep,
    fit_detector,
    roc_curve,
    table_temperature,
    temperature_sweep,
)
from dfb_ood.harness.report_view import RunView, Section, open_run


def write_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    reporter: Reporter | None = None,
    figure_format: str | None = None,
) -> Path:
    """Write every figure and ``report.md`` for a finished run; returns the path of ``report.md``.

    ``out_dir`` defaults to ``run_dir/report``. Figures that need something the run lacks (a DFB
    variant, the DFB net, pseudo masks) are skipped, and report.md says why instead of linking a
    missing file. The run directory itself is only read. ``figure_format`` is one of
    :data:`harness.plots.FIGURE_FORMATS`; None keeps the format of the report already in
    ``out_dir`` (a rebuild after new results looks like the report it replaces), else PNG.
    Figures of another format left from an earlier report are not deleted, but report.md links
    only the new ones.
    """
    run_dir = Path(run_dir)
    if out_dir is None:  # the run's own report/: a plain folder, never a link planted in the run
        own_folder(run_dir, "report", create=False, hint=", or pass --out to write the report elsewhere")
    if figure_format is None:
        figure_format = (
            recorded_figure_format(Path(out_dir) if out_dir is not None else run_dir / "report") or "png"
        )
    if figure_format not in plots.FIGURE_FORMATS:
        raise InputError(
            f"figure format {figure_format!r} is not one of {', '.join(plots.FIGURE_FORMATS)}; "
            "e.g. --figure-format png"
        )
    reporter = reporter or Reporter(quiet=True)
    # The whole report under the run's shared lock: a bench that starts meanwhile (--overwrite,
    # more steps) waits for it, instead of the report of the old networks landing in the new run.
    with read_lock(run_dir, wait_s=READ_WAIT_S, fix=READ_FIX):
        view = open_run(run_dir, reporter)
        if out_dir is None:
            out = own_folder(run_dir, "report", hint=", or pass --out to write the report elsewhere")
            assert out is not None
        else:
            out = Path(out_dir)
        check_report_folder(out, run_dir)  # a report.md or figure of the user's is never replaced
        out.mkdir(parents=True, exist_ok=True)
        sections = _figures(view, out, figure_format, reporter)
        path = out / "report.md"
        write_text(path, render_markdown(view, sections, out, figure_format))
        record_report(out, run_dir)
    reporter.message(f"report: {path}")
    return path


def _figures(view: RunView, out: Path, figure_format: str, reporter: Reporter) -> list[Section]:
    """Every figure of the report, with progress: ``report: figure 3/7 (roc_energy.png)``.

    On a terminal one bar counts the figures (the file names it wrote as its info); elsewhere (a
    log, a pipe) each figure is one plain line, so a log shows how far the report got; ``--quiet``
    shows neither. A figure the run cannot make is one ``note`` line saying why.
    """
    total = len(FIGURES)
    plain = not reporter.quiet and not reporter.console.is_terminal
    sections: list[Section] = []
    progress = contextlib.nullcontext(None) if plain else reporter.task("report", total=total)
    with progress as bar:
        for number, make in enumerate(FIGURES, start=1):
            section = make(view, out, figure_format)
            names = ", ".join(path.name for path, _ in section.figures) or "skipped"
            if bar is None:
                reporter.message(f"report: figure {number}/{total} ({names})")
            else:
                bar.advance(info=f"figure {number}/{total} ({names})")
            if section.skipped:
                reporter.message(f"report: skipped {section.heading.lower()}: {section.skipped}", "note")
            sections.append(section)
    return sections


# The names the report's callers and tests import from here, wherever they are defined now.
__all__ = [
    "CSV_TOLERANCE",
    "TABLE_TOLERANCE",
    "ReportConsistencyError",
    "RunView",
    "Section",
    "check_sweep",
    "fit_detector",
    "open_run",
    "recorded_figure_format",
    "roc_curve",
    "table_temperature",
    "temperature_sweep",
    "write_report",
]
