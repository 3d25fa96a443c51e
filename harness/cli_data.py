"""``harness data``: check that a benchmark's data is in place, and download OpenOOD's.

Thin, like the rest of the CLI: it parses, calls :mod:`harness.data`, prints rich tables, and
exits with the code of the failure (:mod:`harness.errors`: 3 when data is missing), so scripts can
stop before an evaluation that would fail.
The table goes to stdout; errors, and the details of every set that is not usable, to stderr.
Every text that is not ours (paths, names, error messages) is escaped before rich prints it: rich
reads ``[...]`` as markup and would swallow, e.g., ``dfb-ood[download]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dfb_ood.harness.cli_errors import debug_callback, friendly_errors
from dfb_ood.harness.cli_tables import print_table
from dfb_ood.harness.errors import EXIT_MISSING_INPUT, EXIT_SYSTEM

if TYPE_CHECKING:  # harness.data imports torch: only inside the commands, never for --help
    from dfb_ood.harness.data.check import SetReport

data_app = typer.Typer(
    name="data",
    help="Check benchmark data (OpenOOD layout, torchvision sets, image folders) and download OpenOOD's.",
    no_args_is_help=True,
    add_completion=False,
    callback=debug_callback,  # `harness data --debug check ...` as well as `harness data check ... --debug`
)
console = Console(soft_wrap=True)  # long paths stay on one line, copyable
err_console = Console(stderr=True, soft_wrap=True)

_STATUS_STYLE = {"ok": "green", "missing": "red", "bad": "yellow", "error": "red"}
_DATA_ROOT_HELP = (
    "Folder holding benchmark_imglist/, images_classic/, ... (default: $HARNESS_DATA or ./data)."
)
DataRootOpt = Annotated[Path | None, typer.Option("--data-root", help=_DATA_ROOT_HELP)]


@data_app.command("check")
@friendly_errors
def check(
    benchmark: Annotated[
        str, typer.Argument(help="A shipped benchmark name (e.g. cifar10) or a benchmark YAML.")
    ],
    data_root: DataRootOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Decode every image, not a sample per set.")] = False,
    sample: Annotated[
        int, typer.Option("--sample", min=1, help="Images decoded per set without --full.")
    ] = 64,
) -> None:
    """List every set of a benchmark with its size, missing and undecodable files; exit 3 if any."""
    from dfb_ood.harness.data.benchmark import default_data_root, load_benchmark
    from dfb_ood.harness.data.check import check_benchmark

    bench = load_benchmark(benchmark, data_root or default_data_root())
    needs_root = any(s.type in ("imglist", "folder") for s in bench.sets())
    if needs_root and bench.root is not None and not bench.root.is_dir():
        what = "data root" if bench.uses_data_root else "benchmark root"
        hint = f"; {bench.hint}" if bench.hint else ""
        _error(f"{what} {bench.root} does not exist{hint}")
        if bench.uses_data_root:
            err_console.print(
                "Pass --data-root or set $HARNESS_DATA to the folder holding benchmark_imglist/.",
                markup=False,
                highlight=False,
            )
        raise typer.Exit(EXIT_MISSING_INPUT)
    reports = check_benchmark(bench, full=full, sample=sample)
    where = f"data root {bench.data_root}" if bench.uses_data_root else f"root {bench.root}"
    if not needs_root:
        where = "no files needed"
    console.print(_report_table(reports, title=escape(f"{bench.name} ({bench.source}; {where})")))
    problems = [r for r in reports if not r.ok]
    for report in problems:  # what is wrong, and the fix, goes to stderr like every error
        err_console.print(
            f"[bold]{escape(report.role)} {escape(report.name)}[/bold] ({escape(report.source)})",
            highlight=False,
        )
        for line in _details(report):
            err_console.print(f"  {line}", markup=False, highlight=False)
    if problems:
        _error(f"{len(problems)} of {len(reports)} sets are not usable (see the table and the details above)")
        raise typer.Exit(EXIT_MISSING_INPUT)
    console.print(f"[green]All {len(reports)} sets are in place.[/green]")


def _report_table(reports: list[SetReport], title: str) -> Table:
    table = Table(title=title)
    for column, justify in (
        ("role", "left"),
        ("set", "left"),
        ("type", "left"),
        ("count", "right"),
        ("missing", "right"),
        ("undecodable", "right"),
        ("status", "left"),
    ):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in reports:
        count = "?" if r.count is None else str(r.count)
        undecodable = f"{r.undecodable}/{r.checked}" if r.checked else "-"
        style = _STATUS_STYLE[r.status]
        missing = "-" if r.count is None else str(r.missing)
        status = f"[{style}]{escape(r.status)}[/{style}]"
        table.add_row(escape(r.role), escape(r.name), escape(r.type), count, missing, undecodable, status)
    return table


def _details(report: SetReport) -> list[str]:
    lines = []
    if report.error:
        lines.append(f"error: {report.error}")
    if report.missing:
        lines.append(f"{report.missing} missing, e.g.:")
        lines.extend(f"  {example}" for example in report.missing_examples)
    if report.bad_lines:
        lines.append(f"{report.bad_lines} bad list lines, e.g.:")
        lines.extend(f"  {example}" for example in report.bad_line_examples)
    if report.undecodable:
        lines.append(f"{report.undecodable} of {report.checked} decoded images failed, e.g.:")
        lines.extend(f"  {example}" for example in report.undecodable_examples)
    lines.extend(f"overlap: {overlap}" for overlap in report.overlaps)
    if report.hint and report.status in ("missing", "error"):
        lines.append(f"hint: {report.hint}")
    return lines


@data_app.command("download")
@friendly_errors
def download(
    benchmark: Annotated[str, typer.Argument(help="A shipped OpenOOD benchmark name, e.g. cifar10.")],
    data_root: DataRootOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Let archives replace entries that are not theirs.")
    ] = False,
) -> None:
    """Fetch, verify and unpack the OpenOOD v1.5 archives a benchmark needs."""
    from dfb_ood.harness.data.benchmark import default_data_root
    from dfb_ood.harness.data.download import DownloadError, download_benchmark  # lazy: pulls in network code

    root = data_root or default_data_root()
    failed: DownloadError | None = None
    try:
        statuses = download_benchmark(benchmark, root, force=force, console=console)
    except DownloadError as error:
        failed = error
        statuses = list(getattr(error, "statuses", None) or [])
    table = Table(title=escape(f"{benchmark} -> {root}"))
    for column in ("archive", "state", "path"):
        table.add_column(column, overflow="fold")
    for status in statuses:
        table.add_row(escape(str(status.name)), escape(str(status.state)), escape(str(status.path)))
    print_table(console, table)
    if failed is not None:
        _error(failed, "download failed:")
        raise typer.Exit(EXIT_SYSTEM)


def _error(error: BaseException | str, label: str = "error:") -> None:
    """One error on stderr, its text verbatim (escaped: brackets in it are not rich markup)."""
    err_console.print(f"[red]{label}[/red] {escape(str(error))}", highlight=False)
