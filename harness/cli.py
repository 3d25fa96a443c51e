"""The ``harness`` command line (Typer): the app, its small commands, and the console-script entry point.

Thin: parses, calls, prints. The commands that run the pipeline are in :mod:`harness.cli_bench`
(their shared options in :mod:`harness.cli_run_options`), the listings in :mod:`harness.cli_list`,
the leaderboard in :mod:`harness.cli_leaderboard`, the figures in :mod:`harness.cli_figure` and
``harness data`` in :mod:`harness.cli_data`; every option type is declared in
:mod:`harness.cli_options`. This module puts them together into :data:`app`, in the order
``harness --help`` lists them.

Errors a user can fix (a missing file, a bad YAML, an unknown name) print as one readable line on
stderr with the fix, and the process exits with the code of that kind of failure (the table in
:mod:`harness.errors`, printed under ``harness --help``); ``--debug``, before or after the
subcommand, shows the traceback instead. Options with a fixed set of values are ``Literal`` types,
so ``--help`` lists the values and a wrong one is click's usage error (exit 2, on stderr, naming
the allowed values) before any code of ours runs.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dfb_ood.harness.cli_bench import bench, stage_command
from dfb_ood.harness.cli_data import data_app
from dfb_ood.harness.cli_errors import (
    DEBUG_STATE,
    DebugAnnotation,
    exit_codes_epilog,
    friendly_errors,
)
from dfb_ood.harness.cli_figure import figure_app
from dfb_ood.harness.cli_leaderboard import leaderboard
from dfb_ood.harness.cli_list import list_things
from dfb_ood.harness.cli_options import FigureFormatOpt, JsonOpt, QuietOpt
from dfb_ood.harness.cli_tables import print_table

app = typer.Typer(
    name="harness",
    help="Benchmark harness for out-of-distribution detection, featuring DFB.",
    epilog=exit_codes_epilog(),
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
)
console = Console()


def version_text() -> str:
    """``harness --version``: this package's version and torch's, the two a bug report needs first.

    Read from the installed distributions' metadata (importing torch would take seconds).
    """

    def installed(distribution: str) -> str:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (
        f"harness {installed('dfb-ood')} (dfb-ood; torch {installed('torch')}, "
        f"Python {platform.python_version()})"
    )


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(version_text() + "\n")
        raise typer.Exit()


@app.callback()
def _root(
    debug: DebugAnnotation = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            metavar="",
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Benchmark harness for out-of-distribution detection, featuring DFB."""
    DEBUG_STATE["debug"] = debug


app.command("list")(list_things)
app.command()(bench)
app.command("train")(
    stage_command("dense", "Stages 1-3: train the classifier, make masks, train the DFB net.")
)
app.command("masks")(
    stage_command("masks", "Stages 1-2: the classifier and the pseudo masks (with a preview PNG).")
)
app.command("eval")(stage_command("evaluate", "All stages, reusing whatever a run directory already holds."))
app.command()(leaderboard)


@app.command()
@friendly_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[Path | None, typer.Option(help="Where to write (default RUN_DIR/report).")] = None,
    figure_format: FigureFormatOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Figures (score distributions, ROC, masks, temperature sweep, AUROC bars) and report.md."""
    from dfb_ood.harness.progress import Reporter
    from dfb_ood.harness.report import write_report

    # It names every file it writes.
    write_report(run_dir, out, reporter=Reporter(quiet=quiet), figure_format=figure_format)


@app.command()
@friendly_errors
def verify(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    json_out: JsonOpt = False,
) -> None:
    """Re-check every artifact of a run against its record: intact, stale or damaged (exit 4 if any not)."""
    from dfb_ood.harness.errors import EXIT_RUN_FOLDER
    from dfb_ood.harness.verify import as_records, summary, verify_run

    checks = verify_run(run_dir)
    counts = summary(checks)
    if json_out:
        sys.stdout.write(json.dumps({"checks": as_records(checks), "summary": counts}, indent=2) + "\n")
    else:
        table = Table(title=f"verify {escape(str(run_dir))}")
        for column in ("stage", "file", "status", "detail"):
            table.add_column(column)
        colours = {"intact": "green", "stale": "yellow", "damaged": "red"}
        for check in checks:
            status = f"[{colours[check.status]}]{check.status}[/{colours[check.status]}]"
            table.add_row(escape(check.stage), escape(check.file), status, escape(check.detail))
        print_table(console, table)
        console.print(", ".join(f"{count} {status}" for status, count in counts.items()), highlight=False)
        if counts["stale"] or counts["damaged"]:
            console.print(
                "Stale or damaged artifacts are recomputed by the next `harness bench` with the run's "
                "options (in run.json); nothing was changed."
            )
    if counts["stale"] or counts["damaged"]:
        raise typer.Exit(EXIT_RUN_FOLDER)


app.add_typer(data_app, name="data")
app.add_typer(figure_app, name="figure")


#: The exit status of a command whose reader went away (``harness list | head -1``): 128 + SIGPIPE,
#: what a shell reports for a Unix tool the closed pipe ended.
EXIT_BROKEN_PIPE = 141


def _occupy_closed_std_streams() -> None:
    """Give a standard stream that was closed at start (``harness list >&-``) ``/dev/null`` instead.

    Python sets such a stream to None, so a plain ``sys.stdout.write`` would be a traceback; and
    the closed descriptor number would go to the next file the process opens (a lock file, an
    artifact being written), where anything printed to "stdout" (by us or a child process) would
    then land. Occupying the number with ``/dev/null`` first keeps those files what they are.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False))  # noqa: SIM115


def _broken_pipe(error: BaseException) -> bool:
    """Whether an exit came from writing to a pipe whose reader had gone (click exits 1 on it)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, BrokenPipeError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _quiet_broken_pipe() -> None:
    """End quietly after a broken pipe: no traceback, no "Exception ignored" at the final flush.

    Whatever is still buffered for stdout can never be delivered, so stdout is pointed at
    ``/dev/null`` (the interpreter's last flush then succeeds) and the process exits with
    :data:`EXIT_BROKEN_PIPE`, as a Unix tool ended by the closed pipe would.
    """
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real descriptor behind stdout (a test's capture)
        pass
    finally:
        os.close(null)
    raise SystemExit(EXIT_BROKEN_PIPE)


def main() -> None:
    """Console-script entry point; a closed or broken stdout ends quietly (see :data:`EXIT_BROKEN_PIPE`)."""
    _occupy_closed_std_streams()
    try:
        app()
    except SystemExit as done:
        if _broken_pipe(done):
            _quiet_broken_pipe()
        try:
            sys.stdout.flush()  # the reader may have gone after the last write: find out here
        except BrokenPipeError:
            _quiet_broken_pipe()
        raise
    except BrokenPipeError:
        _quiet_broken_pipe()
