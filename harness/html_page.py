"""The leaderboard as one static HTML page (``harness leaderboard RUN... --html DIR``).

Why a static page: results get shared by attaching a folder or publishing it as-is (a CI artifact,
GitHub Pages), where no server runs and nothing may be fetched. So ``DIR/index.html`` holds
everything: inline CSS and vanilla JS (``harness/page/``), the data as JSON inside the page, and
the table already rendered, so that it reads without JavaScript too; the script only reorders and
hides whole rows. A Content-Security-Policy allows no network source at all and runs only the
page's own script and style (by hash), so even a mistake in escaping could not run injected code.
The run reports' PNG figures are copied next to the page and linked relatively.

Numbers are those of :func:`harness.leaderboard.aggregate` (mean and sample std over seeds), shown
in percent with two decimals; "best" and sorting compare the values as shown, as the terminal
table does, so equal-looking cells tie. The FPR@95 convention and the AUPR method are stated on
the page, as every table of this project does.

The folder is the page writer's: it records the files it wrote in a manifest
(:data:`MANIFEST`) and refuses a folder that holds anything else, so that a mistyped ``--html``
never overwrites or deletes a user's files. Every file is written atomically.

This module writes the page; what it shows is :mod:`harness.page_model`, its HTML
:mod:`harness.page_render` (a template, ``harness/page/leaderboard.html.j2``), and its folder
guard :mod:`harness.page_folder`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dfb_ood.errors import InputError
from dfb_ood.harness.io import write_text
from dfb_ood.harness.leaderboard import AUPR_TEXT, check_sort_by, load_run_rows, select_definitions
from dfb_ood.harness.page_folder import (
    INDEX,
    MANIFEST,
    WRITER,
    PageFolderError,
    check_page_folder,
    copy_atomic,
    remove_stale,
    write_manifest,
)
from dfb_ood.harness.page_model import (
    COLUMNS,
    comparison_data,
    detector_groups,
    detector_variant,
    plan_figures,
    run_summaries,
    table_blocks,
)
from dfb_ood.harness.page_render import render_page

__all__ = [
    "COLUMNS",
    "INDEX",
    "MANIFEST",
    "PageFolderError",
    "check_page_folder",
    "detector_variant",
    "read_page_data",
    "write_leaderboard_page",
]


def write_leaderboard_page(
    run_dirs: Sequence[Path],
    out_dir: Path,
    reference: str | None = None,
    *,
    sort_by: str | None = None,
    fpr_convention: str | None = None,
    aupr: str = "ap",
) -> Path:
    """Write the leaderboard of ``run_dirs`` as a static page ``out_dir/index.html``; return its path.

    ``run_dirs`` are finished runs (seeds, networks, benchmarks: merged into mean ± std as
    ``harness leaderboard`` does); the PNGs of each run's ``report/`` are copied to
    ``out_dir/figures/``. ``reference`` names published numbers (``dfb-paper``, ``openood-v1.5``)
    to compare with. ``sort_by`` (a :data:`harness.leaderboard.SORT_KEYS` name) sets the initial
    order; the reader can re-sort by any column. ``fpr_convention`` (None: each run's own) and
    ``aupr`` (``ap`` or ``trapezoid``) choose the definitions shown, as ``harness leaderboard``'s
    options do (:func:`harness.leaderboard.select_definitions`).

    ``out_dir`` must be new, empty, or a folder this function wrote before (see
    :func:`check_page_folder`); what it wrote before and no longer writes is removed.
    """
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    if not run_dirs:
        raise InputError("no run directories given; name at least one finished run, e.g. runs/cifar10/seed0")
    check_sort_by(sort_by)
    out_dir = Path(out_dir)
    previous = check_page_folder(out_dir)
    if reference is not None:
        from dfb_ood.harness.reference import load_reference

        load_reference(reference)  # an unknown name fails before anything is read or written
    runs = [
        (
            run_dir,
            select_definitions(load_run_rows(run_dir), fpr_convention, aupr, source=run_dir / "results.csv"),
        )
        for run_dir in run_dirs
    ]
    rows = [row for _, run_rows in runs for row in run_rows]
    if not rows:
        raise InputError(
            f"the runs {', '.join(map(str, run_dirs))} hold no result rows; run `harness bench` first"
        )
    groups, group_order = detector_groups()
    blocks = table_blocks(rows, groups)
    comparison = comparison_data(reference, rows, run_dirs) if reference is not None else None
    figures = plan_figures(runs)
    page = render_page(
        runs, blocks, group_order, figures, run_summaries(runs), comparison, sort_by, AUPR_TEXT[aupr]
    )

    planned = {INDEX} | {figure.target for run in figures for figure in run.figures}
    out_dir.mkdir(parents=True, exist_ok=True)
    # First list everything this write may leave behind, so that an interrupted write never leaves
    # files the next call would take for the user's.
    write_manifest(out_dir, previous | planned)
    for run in figures:
        for figure in run.figures:
            copy_atomic(figure.source, out_dir / figure.target)
    write_text(out_dir / INDEX, page)
    remove_stale(out_dir, previous - planned, planned)
    write_manifest(out_dir, planned)
    return out_dir / INDEX


def read_page_data(page: str | os.PathLike[str]) -> dict[str, Any]:
    """The data embedded in a written page (``index.html`` or its folder): for tests and scripts."""
    path = Path(page)
    if path.is_dir():
        path = path / INDEX
    text = path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="leaderboard-data">(.*?)</script>', text, re.S)
    if match is None:
        raise InputError(f"{path} is not a leaderboard page (no embedded data); write it with {WRITER}")
    return json.loads(match.group(1))
