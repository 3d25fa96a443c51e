"""The ``harness`` command line (Typer). Thin: parses, calls, prints.

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
from typing import Annotated, Literal

import typer
from dfb_ood.harness.cli_bench import bench, check_csv_target, print_results, stage_command
from dfb_ood.harness.cli_data import data_app
from dfb_ood.harness.cli_errors import (
    DEBUG_STATE,
    DebugAnnotation,
    debug_callback,
    exit_codes_epilog,
    friendly_errors,
)
from dfb_ood.harness.cli_options import (
    AuprOpt,
    DetectorOpt,
    ExportOverwriteOpt,
    FigureFormatOpt,
    FormatOpt,
    JsonOpt,
    LeaderboardConventionOpt,
    OutputOpt,
    QuietOpt,
    SortByOpt,
)
from dfb_ood.harness.tsne import DEFAULT_SAMPLE
from dfb_ood.postprocessors import registry
from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Benchmark harness for out-of-distribution detection, featuring DFB."""
    DEBUG_STATE["debug"] = debug


def _detector_table() -> Table:
    """The base detectors grouped by what they read, with their search grids, then ``bg``."""
    from dfb_ood.harness.detectors import detector_catalog

    table = Table(title="Detectors (higher score = more in-distribution), grouped by what they read")
    for column in ("reads", "detector", "fusion", "fits", "grid (--search)"):
        table.add_column(column)
    for reads, infos in detector_catalog().items():
        for index, info in enumerate(infos):
            table.add_row(
                reads if index == 0 else "",
                info.name,
                info.fusion,
                "yes" if info.fits else "no",
                ", ".join(info.grid) or "-",
                end_section=index == len(infos) - 1,
            )
    for name in registry.STANDALONE:
        detector = registry.create(name)
        table.add_row("background logit", name, detector.fusion_kind, "no", "-")
    return table


def _detector_notes() -> list[str]:
    """The lines under the detector table: DFB variants, the columns' meaning, aliases."""
    from dfb_ood.harness.detectors import detector_defaults, search_grid

    base = next(iter(registry.BASES))
    adds = {}  # the wrapper's searched parameters, per variant
    for suffix in registry.DFB_SUFFIXES:
        keys = [key for key in search_grid(base + suffix) if key not in search_grid(base)]
        adds[suffix] = ", ".join(keys) or "nothing"
    temperature = detector_defaults(base + "_dfb").get("fusion_temperature")
    aliases = ", ".join(f"{alias} -> {target}" for alias, target in registry.ALIASES.items())
    return [
        f"Each base also as <base>_dfb (Eq. 7 fusion, T {temperature}; grid adds {adds['_dfb']}) and "
        f"<base>_dfbz (z-score fusion on ID-val; grid adds {adds['_dfbz']}). "
        f"{', '.join(registry.STANDALONE)} (the DFB net's background logit alone): no variants.",
        "reads: logits, pooled features, head (weight and bias); network pass: logits from the "
        "detector's own pass through the network (ODIN's perturbed input, RankFeat's rank-1-removed "
        "feature map). fits: learns from ID outputs first. grid: the "
        "parameters --search chooses on ID-val vs OOD-val (configs/postprocessors/<name>.yaml).",
        f"Aliases: {aliases}.",
    ]


@app.command("list")
@friendly_errors
def list_things(
    what: Annotated[
        Literal["detectors", "networks", "recipes", "benchmarks", "all"],
        typer.Argument(help="What to list."),
    ] = "all",
) -> None:
    """List the registered detectors, networks, training recipes and benchmarks."""
    from dfb_ood.harness.config import load_config
    from dfb_ood.harness.data.benchmark import available_benchmarks
    from dfb_ood.harness.recipes import available_recipes, load_recipe
    from dfb_ood.networks import available_networks

    if what in ("detectors", "all"):
        console.print(_detector_table())
        for line in _detector_notes():
            console.print(line, highlight=False)
    if what in ("networks", "all"):
        table = Table(title="Networks")
        table.add_column("name")
        table.add_column("description")
        for name in available_networks():
            table.add_row(name, str(load_config("networks", name).get("description", "")))
        table.add_row(
            "timm:<model>", "any timm CNN (pretrained from your Hugging Face cache or --checkpoint)"
        )
        console.print(table)
    if what in ("recipes", "all"):
        table = Table(title="Training recipes")
        table.add_column("name")
        table.add_column("description")
        for name in available_recipes():
            table.add_row(name, load_recipe(name).description)
        console.print(table)
    if what in ("benchmarks", "all"):
        table = Table(title="Benchmarks (or pass your own YAML with --benchmark my.yaml)")
        table.add_column("name")
        table.add_column("description")
        for name in available_benchmarks():
            table.add_row(name, str(load_config("benchmarks", name).get("description", "")))
        console.print(table)


app.command()(bench)
app.command("train")(
    stage_command("dense", "Stages 1-3: train the classifier, make masks, train the DFB net.")
)
app.command("masks")(
    stage_command("masks", "Stages 1-2: the classifier and the pseudo masks (with a preview PNG).")
)
app.command("eval")(stage_command("evaluate", "All stages, reusing whatever a run directory already holds."))


def _check_output_target(output: Path | None, folder: bool, overwrite: bool = False) -> None:
    """``--output`` names a file (or, for openood, a folder) we may write: checked before any work."""
    from dfb_ood.harness.export_target import check_target

    if output is None:
        return
    if not folder:
        check_target(output, overwrite=overwrite, option="--output")  # a user's or a run's file: refused
    if folder and output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; --format openood writes a folder of tables there")
    if not folder and output.is_dir():
        raise ValueError(f"--output {output} is a folder; give a file name, e.g. {output / 'leaderboard.md'}")
    parent = next((p for p in output.resolve().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"--output {output}: {parent} is a file, so no folder can be made there")


@app.command()
@friendly_errors
def leaderboard(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Run directories (several seeds, networks, benchmarks).")
    ],
    csv: Annotated[
        Path | None,
        typer.Option("--csv", help="Also write the runs' result rows (every seed, as stored) here."),
    ] = None,
    per_dataset: Annotated[bool, typer.Option(help="Also show AUROC per OOD set.")] = False,
    reference: Annotated[
        str | None, typer.Option(help="Published numbers to show beside ours: dfb-paper or openood-v1.5.")
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
            help="Also write a static page (DIR/index.html: sortable table, near/far and family / DFB "
            "variant filters, each run's report figures, --reference's comparison); no server, no CDN.",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the runs' result rows (as stored) as JSON on stdout.")
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
        raise ValueError("--output writes the --format export; pass --format too (e.g. --format markdown)")
    to_stdout = fmt is not None and output is None
    if to_stdout and (json_out or per_dataset or reference is not None):
        others = [name for name, on in (("--json", json_out), ("--per-dataset", per_dataset),
                                        ("--reference", reference is not None)) if on]  # fmt: skip
        raise ValueError(
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
    print_results(shown, title, False, sort_by)
    if per_dataset:
        console.print(per_dataset_table(aggregate(shown)))
    if reference is not None:
        published, comparison = compare_runs(reference, shown, run_dirs)
        if not comparison:
            console.print(
                f"No row of these runs matches the reference. {describe_reference_scope(published)}"
            )
        else:
            console.print(comparison_table(comparison, f"ours vs {reference}", reference=published))


def _export_openood(
    per_run: list[tuple[Path, list[dict[str, object]]]], output: Path | None, overwrite: bool = False
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
                raise ValueError(
                    f"{sources[name]} and {run_dir} both hold {table.title}: export them one at a time, "
                    "each with its own --output"
                )
            sources[name] = str(run_dir)
            tables.append(table)
    if not tables:
        raise ValueError("no near- or far-OOD rows in these runs: nothing for OpenOOD's table")
    if output is None:
        return export.openood_text(tables)
    files = {table.relative_path.as_posix(): table.to_csv() for table in tables}
    manifest = export.openood_manifest(tables, sources)
    files["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    # every target is checked before any is written: a user's manifest.json is never replaced
    write_export_folder(output, files, overwrite=overwrite, option="--output")
    return None


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
            table.add_column(column, overflow="fold")
        colours = {"intact": "green", "stale": "yellow", "damaged": "red"}
        for check in checks:
            status = f"[{colours[check.status]}]{check.status}[/{colours[check.status]}]"
            table.add_row(escape(check.stage), escape(check.file), status, escape(check.detail))
        console.print(table)
        console.print(", ".join(f"{count} {status}" for status, count in counts.items()), highlight=False)
        if counts["stale"] or counts["damaged"]:
            console.print(
                "Stale or damaged artifacts are recomputed by the next `harness bench` with the run's "
                "options (in run.json); nothing was changed."
            )
    if counts["stale"] or counts["damaged"]:
        raise typer.Exit(EXIT_RUN_FOLDER)


figure_app = typer.Typer(
    name="figure",
    help="Figures from finished runs: across several runs, or of one run's cached outputs (nothing is "
    "recomputed).",
    no_args_is_help=True,
    add_completion=False,
    callback=debug_callback,
)


@figure_app.command("classes")
@friendly_errors
def figure_classes(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Finished run directories of several class counts (e.g. imagenet_subset --classes C)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The figure file; .png, .pdf or .svg.")],
    post: DetectorOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """AUROC (near and far) against the number of ID classes, per detector: the paper's Fig. 7.

    Reads each run's class count from run.json and its near/far mean AUROC from results.csv;
    runs of one count (seeds, class draws) are averaged, their std drawn as error bars.
    """
    from dfb_ood.harness.class_study import write_class_figure
    from dfb_ood.harness.evaluate import expand_detectors

    detectors = expand_detectors(post) if post else None
    written = write_class_figure(list(run_dirs), out, detectors)
    if not quiet:
        Console(stderr=True).print(f"wrote {escape(str(written))}", highlight=False)


@figure_app.command("tsne")
@friendly_errors
def figure_tsne(
    run_dir: Annotated[
        Path, typer.Argument(help="A finished run directory (`harness bench --out RUN`) with a DFB net.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The figure file; .png, .pdf or .svg (default RUN/report/tsne.<the report's format, "
            "else png>).",
        ),
    ] = None,
    sample: Annotated[
        int,
        typer.Option(
            "--sample",
            help="At most this many ID test images (even over the classes) and as many OOD test "
            "images per group, near and far (even over its sets); at least 2.",
        ),
    ] = DEFAULT_SAMPLE,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample and of the t-SNE.")] = 0,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--sets",
            help="OOD test sets to show: repeat or comma-separate (default: every near and far set).",
        ),
    ] = None,
    space: Annotated[
        str,
        typer.Option(
            "--space",
            help="What to embed: features (pooled), logits, or auto: features unless both networks "
            "share them (a frozen backbone), then logits.",
        ),
    ] = "auto",
    quiet: QuietOpt = False,
) -> None:
    """t-SNE of pooled features, the K-class classifier beside the DFB net: the paper's Fig. 5.

    Reads the run's cached outputs (outputs/classifier and outputs/dfb: ID test and OOD test
    sets), L2-normalises each feature and embeds a seeded, stratified sample with scikit-learn's
    TSNE; ID test images coloured by class, OOD images grey/black. Nothing is recomputed.
    """
    from dfb_ood.harness.data.benchmark import check_seed
    from dfb_ood.harness.tsne import write_tsne_figure

    check_seed(seed, "--seed")
    names = [name.strip() for value in sets or [] for name in value.split(",") if name.strip()]
    if sets is not None and not names:
        raise ValueError("--sets: give OOD test set names, e.g. --sets textures,noise")
    drawn = write_tsne_figure(run_dir, out, sample=sample, seed=seed, sets=names or None, space=space)
    if not quiet:
        shown = ", ".join(f"{count} {name}" for name, count in drawn.counts.items())
        Console(stderr=True).print(
            f"wrote {escape(str(drawn.path))} ({shown} images, {drawn.seconds:.1f} s)", highlight=False
        )


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
