"""``harness leaderboard``: merge finished runs' results, show them and export them (nothing recomputed).

The checks of every target (``--csv``, ``--output``, ``--html``) and of the definitions asked for
run before any run folder is read, so a refused option leaves nothing half written; OpenOOD's
per-run tables (``--format openood``) are gathered here into one folder of files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from dfb_ood.errors import InputError
from dfb_ood.harness.cli_bench import check_csv_target, print_results
from dfb_ood.harness.cli_errors import friendly_errors
from dfb_ood.harness.cli_options import (
    OUTPUT,
    TABLES,
    AuprOpt,
    ExportOverwriteOpt,
    FormatOpt,
    LeaderboardConventionOpt,
    OutputOpt,
    SortByOpt,
)
from dfb_ood.harness.cli_tables import print_table
from dfb_ood.harness.result_row import ResultRow

console = Console()


def _check_output_target(output: Path | None, folder: bool, overwrite: bool = False) -> None:
    """``--output`` names a file (or, for openood, a folder) we may write: checked before any work."""
    from dfb_ood.harness.export_target import check_target

    if output is None:
        return
    if not folder:
        check_target(output, overwrite=overwrite, option="--output")  # a user's or a run's file: refused
    if folder and output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file; --format openood writes a folder of tables there")
    if not folder and output.is_dir():
        raise InputError(f"--output {output} is a folder; give a file name, e.g. {output / 'leaderboard.md'}")
    parent = next((p for p in output.resolve().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"--output {output}: {parent} is a file, so no folder can be made there")


@friendly_errors
def leaderboard(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(metavar="RUN_DIR", help="Run directories (several seeds, networks, benchmarks)."),
    ],
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            metavar="FILE",
            rich_help_panel=OUTPUT,
            help="Also write the runs' result rows (every seed, as stored) here.",
        ),
    ] = None,
    per_dataset: Annotated[
        bool, typer.Option(rich_help_panel=TABLES, help="Also show AUROC per OOD set.")
    ] = False,
    reference: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            rich_help_panel=TABLES,
            help="Published numbers to show beside ours: dfb-paper or openood-v1.5.",
        ),
    ] = None,
    sort_by: SortByOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    aupr: AuprOpt = None,
    fpr_convention: LeaderboardConventionOpt = None,
    overwrite: ExportOverwriteOpt = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="DIR",
            rich_help_panel=OUTPUT,
            help="Also write a static page (DIR/index.html: sortable table, near/far and family / DFB "
            "variant filters, each run's report figures, --reference's comparison); no server, no CDN.",
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            rich_help_panel=OUTPUT,
            help="Print the runs' result rows (as stored) as JSON on stdout.",
        ),
    ] = False,
) -> None:
    """Merge and show the results of earlier runs without recomputing anything.

    --fpr-convention and --aupr choose the definitions every table shows (runs record both FPR@95
    conventions and both AUPRs); --csv and --json give the rows as stored, every definition in its
    own column.
    """
    from dfb_ood.harness import export
    from dfb_ood.harness.export_target import write_export
    from dfb_ood.harness.leaderboard import (
        aggregate,
        benchmark_title,
        check_definitions,
        check_mergeable,
        check_sort_by,
        load_run_rows,
        per_dataset_table,
        select_definitions,
        to_csv,
    )
    from dfb_ood.harness.reference import (
        compare_runs,
        comparison_table,
        describe_reference_scope,
        load_reference,
    )

    check_sort_by(sort_by)
    if fmt is not None:
        export.check_format(fmt)
    defaults = export.OPENOOD_DEFINITIONS if fmt == "openood" else {"fpr_convention": None, "aupr": "ap"}
    fpr_convention = fpr_convention or defaults["fpr_convention"]
    aupr = aupr or str(defaults["aupr"])
    check_definitions(fpr_convention, aupr)
    if reference is not None:
        load_reference(reference)  # an unknown name fails before anything is printed or written
    if output is not None and fmt is None:
        raise InputError("--output writes the --format export; pass --format too (e.g. --format markdown)")
    to_stdout = fmt is not None and output is None
    if to_stdout and (json_out or per_dataset or reference is not None):
        others = [name for name, on in (("--json", json_out), ("--per-dataset", per_dataset),
                                        ("--reference", reference is not None)) if on]  # fmt: skip
        raise InputError(
            f"--format {fmt} prints on stdout, and so does {' and '.join(others)}: pass --output FILE for "
            "the export"
        )
    check_csv_target(csv, overwrite)
    _check_output_target(output, folder=fmt == "openood", overwrite=overwrite)
    if html is not None:
        from dfb_ood.harness.html_page import check_page_folder

        check_page_folder(html)  # a folder of the user's own files is refused before anything is read
    stored = [(run_dir, load_run_rows(run_dir)) for run_dir in run_dirs]
    check_mergeable(run_dirs)  # seeds of one experiment only are averaged
    rows = [row for _, run_rows in stored for row in run_rows]  # as stored: --csv, --json
    per_run = [  # in the definitions asked for: every table
        (run_dir, select_definitions(run_rows, fpr_convention, aupr, source=run_dir / "results.csv"))
        for run_dir, run_rows in stored
    ]
    shown = [row for _, run_rows in per_run for row in run_rows]
    title = f"{len(run_dirs)} run(s)"
    exported = None
    if fmt == "openood":
        exported = _export_openood(per_run, output, overwrite)
    elif fmt is not None:
        exported = export.render(export.build_table(shown, title=title, sort_by=sort_by), fmt)
    if csv is not None:
        write_export(csv, to_csv(rows), overwrite=overwrite, option="--csv")
    if html is not None:
        from dfb_ood.harness.html_page import write_leaderboard_page

        page = write_leaderboard_page(
            run_dirs, html, reference, sort_by=sort_by, fpr_convention=fpr_convention, aupr=aupr
        )
        Console(stderr=True).print(f"wrote {escape(str(page))} (open it in a browser)", highlight=False)
    if to_stdout:
        sys.stdout.write(exported or "")
        return
    if output is not None:
        if fmt != "openood":
            write_export(output, exported or "", overwrite=overwrite, option="--output")
        Console(stderr=True).print(f"wrote {escape(str(output))} ({fmt})", highlight=False)
    if json_out and reference is not None:  # one JSON document: our rows and the comparison
        comparison = compare_runs(reference, shown, run_dirs)[1]
        sys.stdout.write(json.dumps({"rows": rows, "comparison": comparison}, indent=2, default=str) + "\n")
        return
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    # the terminal's title names the benchmark(s) by the YAML's name, never a path
    print_results(shown, f"{benchmark_title(shown, title)}: {title}", False, sort_by)
    if per_dataset:
        print_table(console, per_dataset_table(aggregate(shown)))
    if reference is not None:
        published, comparison = compare_runs(reference, shown, run_dirs)
        if not comparison:
            console.print(
                f"No row of these runs matches the reference. {describe_reference_scope(published)}"
            )
        else:
            print_table(console, comparison_table(comparison, f"ours vs {reference}", reference=published))


def _export_openood(
    per_run: list[tuple[Path, list[ResultRow]]], output: Path | None, overwrite: bool = False
) -> str | None:
    """OpenOOD's tables of every run (rows in the definitions to show): returned without --output,
    else written as files.

    Files go to ``OUTPUT/<benchmark>/<network>/seed<k>/ood/<detector>.csv`` with ``manifest.json``
    beside them naming the definitions and each file's run; two runs of the same benchmark,
    network and seed would write the same files and are refused.
    """
    from dfb_ood.harness import export
    from dfb_ood.harness.export_target import write_export_folder

    tables: list[export.OpenOODTable] = []
    sources: dict[str, str] = {}
    for run_dir, run_rows in per_run:
        for table in export.openood_tables(run_rows):
            name = table.relative_path.as_posix()
            if name in sources:
                raise InputError(
                    f"{sources[name]} and {run_dir} both hold {table.title}: export them one at a time, "
                    "each with its own --output"
                )
            sources[name] = str(run_dir)
            tables.append(table)
    if not tables:
        raise InputError("no near- or far-OOD rows in these runs: nothing for OpenOOD's table")
    if output is None:
        return export.openood_text(tables)
    files = {table.relative_path.as_posix(): table.to_csv() for table in tables}
    manifest = export.openood_manifest(tables, sources)
    files["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    # every target is checked before any is written: a user's manifest.json is never replaced
    write_export_folder(output, files, overwrite=overwrite, option="--output")
    return None
