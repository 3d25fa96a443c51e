"""``harness bench`` and the stage commands (``train``, ``masks``, ``eval``): the commands that run.

Each parses its options into a :class:`~harness.cli_run_options.RunOptions` (the options they
share, declared once there), checks what it can before any work (``--csv``'s target, the sort
key, ``--launcher``), relaunches itself under torchrun when asked, and then hands the settings to
the pipeline: :func:`harness.run.run_seeds` for ``bench``, :class:`harness.run.Pipeline` up to a
stage for the others. Only rank 0 of a distributed run prints and writes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from dfb_ood.errors import InputError
from dfb_ood.harness.cli_errors import friendly_errors
from dfb_ood.harness.cli_options import (
    CompareOpt,
    CsvOpt,
    FigureFormatOpt,
    Launcher,
    ReportOpt,
    SeedOpt,
    SeedsOpt,
    SortByOpt,
)
from dfb_ood.harness.cli_run_options import RunOptions, with_run_options
from dfb_ood.harness.cli_tables import print_table
from dfb_ood.harness.result_row import ResultRow

console = Console()


def _split_ints(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--seeds takes comma-separated integers like 0,1,2; got {text!r}") from None
    if not seeds or any(seed < 0 for seed in seeds):
        raise InputError(f"--seeds takes non-negative integers like 0 or 0,1,2; got {text!r}")
    from dfb_ood.harness.data.benchmark import check_seed

    return [check_seed(seed, "--seeds") for seed in seeds]


def check_csv_target(csv: Path | None, overwrite: bool = False) -> None:
    """``--csv`` names a file we may write: checked before any work, not after it."""
    from dfb_ood.harness.export_target import check_target

    if csv is None:
        return
    if csv.is_dir():
        raise InputError(f"--csv {csv} is a folder; give a file name, e.g. {csv / 'results.csv'}")
    check_target(csv, overwrite=overwrite, option="--csv")  # a user's or a run's own file: refused
    parent = next((folder for folder in csv.resolve().parents if folder.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"--csv {csv}: {parent} is a file, so no folder can be made there")


def _relaunch_if_asked(launcher: Launcher, nproc: int | None) -> None:
    """With ``--launcher torchrun``, re-run the command line under torchrun and exit with its code.

    A torchrun worker (RANK etc. set) runs the command itself, so the relaunched workers never
    launch again. ``launcher`` is one of :data:`Launcher` (click refuses any other value).
    """
    from dfb_ood.harness import distributed

    if launcher == "none":
        if nproc is not None:
            raise InputError("--nproc only applies with --launcher torchrun")
        return
    if distributed.launched():
        return
    if nproc is None:
        import torch

        nproc = torch.cuda.device_count()
        if nproc == 0:
            raise InputError("no GPU found for --launcher torchrun; pass --nproc N for N CPU processes")
    raise typer.Exit(distributed.relaunch(sys.argv[1:], nproc))


def print_results(
    rows: list[ResultRow], title: str, as_json: bool, sort_by: str | None = None
) -> None:
    """The result rows as a leaderboard on the terminal, or as JSON on stdout."""
    from dfb_ood.harness.leaderboard import aggregate, leaderboard_table

    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    print_table(console, leaderboard_table(aggregate(rows), title=title, sort_by=sort_by))


@friendly_errors
@with_run_options(
    after={"post": ["compare", "seeds"], "search": ["report", "figure_format", "csv", "sort_by"]}
)
def bench(
    run: RunOptions,
    compare: CompareOpt = False,
    seeds: SeedsOpt = "0",
    report: ReportOpt = True,
    figure_format: FigureFormatOpt = None,
    csv: CsvOpt = None,
    sort_by: SortByOpt = None,
) -> None:
    """Train, mask, train dense, evaluate: the whole DFB pipeline, then a leaderboard and a CSV."""
    from dfb_ood.harness.leaderboard import check_sort_by

    check_sort_by(sort_by)  # before any work, and before a torchrun relaunch
    if figure_format is not None and not report:
        raise InputError(
            f"--figure-format {figure_format} sets the report's figures, and --no-report writes none; "
            "drop one of them"
        )
    _relaunch_if_asked(run.launcher, run.nproc)
    from dfb_ood.harness import distributed
    from dfb_ood.harness.evaluate import default_detectors, expand_detectors
    from dfb_ood.harness.export_target import write_export
    from dfb_ood.harness.leaderboard import benchmark_title, to_csv
    from dfb_ood.harness.progress import Reporter
    from dfb_ood.harness.run import run_seeds

    check_csv_target(csv, run.overwrite)
    detectors = expand_detectors(run.post, compare) if run.post else default_detectors()
    settings = run.settings(detectors)
    reporter = Reporter(quiet=run.silent)
    rows, run_dirs = run_seeds(settings, _split_ints(seeds), reporter)
    if not distributed.is_main():
        return  # rank 0 alone writes and prints
    if csv is not None:
        write_export(csv, to_csv(rows), overwrite=run.overwrite, option="--csv")
    title = f"{benchmark_title(rows, run.benchmark)}: {len(detectors)} detectors, seeds {seeds}"
    print_results(rows, title, run.json_out, sort_by)
    if report:
        from dfb_ood.harness.report import write_report

        for run_dir in run_dirs:
            write_report(run_dir, reporter=reporter, figure_format=figure_format)  # names every file


def stage_command(until: str, doc: str) -> Callable[..., None]:
    """The command that runs the pipeline of one seed up to stage ``until``; ``doc`` is its help."""

    def command(run: RunOptions, seed: SeedOpt = 0) -> None:
        _relaunch_if_asked(run.launcher, run.nproc)
        from dfb_ood.harness import distributed
        from dfb_ood.harness.evaluate import default_detectors, expand_detectors
        from dfb_ood.harness.leaderboard import benchmark_title
        from dfb_ood.harness.progress import Reporter
        from dfb_ood.harness.run import Pipeline

        settings = run.settings(expand_detectors(run.post) if run.post else default_detectors(), seed)
        reporter = Reporter(quiet=run.silent)
        pipeline = Pipeline(settings, reporter)
        rows = pipeline.run(until=until)
        if not distributed.is_main():
            return
        if rows:
            print_results(rows, f"{benchmark_title(rows, run.benchmark)}: seed {seed}", run.json_out)
        elif not run.quiet:
            console.print(f"{until} stage done in {escape(str(pipeline.run_dir))}")
        if rows and (pipeline.run_dir / "report" / "report.md").is_file():
            from dfb_ood.harness.report import write_report

            # The report follows the accumulated results, in the figure format it was written in.
            write_report(pipeline.run_dir, reporter=reporter)

    command.__doc__ = doc
    return friendly_errors(with_run_options(after={"post": ["seed"]})(command))
