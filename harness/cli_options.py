"""The ``harness`` commands' option types: each option's names, help text and choices, declared once.

Every type here is an ``Annotated`` alias that a command uses as a parameter's annotation (the
default stays at the parameter, as Typer wants it), so an option that several commands take
(``--post``, ``--quiet``, ``--sort-by`` ...) reads the same under every ``--help``. A choice list
that is a fact of another module (the export formats, the leaderboard's sort keys) is taken from
that module, so a value added there is a choice here; the figure formats are the one exception
(see :data:`FigureFormat`).

This module imports nothing heavy: ``harness --help`` reads it, and must stay quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from dfb_ood.harness.export import FORMATS
from dfb_ood.harness.leaderboard import SORT_KEYS
from dfb_ood.harness.metrics import AuprMethod, FprConvention
from dfb_ood.postprocessors.dfb import Foreground

# --- which run: benchmark, detectors, recipe, network, seeds -------------------------------------
DetectorOpt = Annotated[
    list[str] | None,
    typer.Option("--post", "-p", help="Detector(s): repeat or comma-separate; 'all' for every one."),
]
BenchOpt = Annotated[
    str, typer.Option("--benchmark", "--id", "-b", help="Shipped benchmark name or a YAML path.")
]
RecipeOpt = Annotated[
    str, typer.Option(help="Training recipe name or YAML path (see `harness list recipes`).")
]
NetworkOpt = Annotated[str | None, typer.Option(help="Network (default: the recipe's).")]
SeedsOpt = Annotated[str, typer.Option(help="Comma-separated seeds; several give mean ± std.")]
SeedOpt = Annotated[int, typer.Option(help="Seed.")]
CompareOpt = Annotated[bool, typer.Option(help="Add the base detector of every DFB variant.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cuda, cuda:1, cpu (default: cuda when available).")]
DataRootOpt = Annotated[Path | None, typer.Option(help="Data root (default $HARNESS_DATA or ./data).")]
CheckpointOpt = Annotated[
    Path | None, typer.Option(help="A trained K-class classifier to use instead of training one.")
]
OutOpt = Annotated[
    Path | None, typer.Option(help="Run directory (default runs/<benchmark>/<network>/seed<k>).")
]
ConventionOpt = Annotated[
    FprConvention,
    typer.Option(
        help="FPR@95 convention: paper (OOD accepted at 95% ID TPR) or openood (ID rejected at 95% OOD TPR)."
    ),
]
ForegroundOpt = Annotated[
    Foreground,
    typer.Option(
        help="Foreground score of DFB variants: dfb (the DFB net's first K logits, the paper) or "
        "classifier (the K-class classifier's outputs, reused from its cached pass)."
    ),
]
ClassesOpt = Annotated[
    int | None,
    typer.Option(
        "--classes",
        min=1,
        help="Class-subset benchmarks (imagenet_subset): train and test on this many ID classes, drawn "
        "from the benchmark's classes with --class-seed (the paper's Fig. 7: 200, 300, 500, 1000). "
        "Default: the YAML's id_classes.count. The drawn classes are written into run.json.",
    ),
]
ClassSeedOpt = Annotated[
    int | None,
    typer.Option(
        "--class-seed",
        min=0,
        help="Seed of the class draw of --classes (not the run seed); default: the YAML's id_classes.seed.",
    ),
]
SearchOpt = Annotated[
    bool,
    typer.Option(
        help="Choose hyper-parameters on ID-val vs OOD-val (configs/postprocessors grids), never test."
    ),
]

# --- how it runs: training overrides, data streaming, processes ----------------------------------
StepsOpt = Annotated[int | None, typer.Option(help="Override the recipe's training steps (quick tries).")]
BatchOpt = Annotated[int | None, typer.Option(help="Override the recipe's batch size.")]
Launcher = Literal["none", "torchrun"]
LauncherOpt = Annotated[
    Launcher,
    typer.Option(
        help="none: run in this process (or as the torchrun worker that started it); torchrun: run "
        "this command again under torchrun with --nproc processes on this node (data-parallel training, "
        "sharded forward passes). For several nodes start `torchrun ... -m dfb_ood bench ...` yourself."
    ),
]
NprocOpt = Annotated[
    int | None, typer.Option(help="Processes for --launcher torchrun (default: this node's GPU count).")
]
InMemoryOpt = Annotated[
    float | None,
    typer.Option(
        help="File-backed sets larger than this many MiB decoded are streamed from their files by "
        "worker processes (training, masks and evaluation passes) instead of held in memory (default: "
        "$HARNESS_IN_MEMORY_MB, else 4096; 0 streams every list or folder set). Results are the same.",
    ),
]
DataWorkersOpt = Annotated[
    int | None,
    typer.Option(
        help="Worker processes that decode a streamed set "
        "(default: $HARNESS_DATA_WORKERS, else min(4, CPUs)).",
    ),
]
SkipBadOpt = Annotated[
    bool,
    typer.Option(
        "--skip-bad",
        help="Drop missing or undecodable images (and bad list lines) with a warning naming each, "
        "instead of stopping at the first.",
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace the results of a run folder made with other settings (otherwise refused). Never "
        "writes into a folder of files harness did not write.",
    ),
]

# --- what it prints and writes -------------------------------------------------------------------
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Also write the results CSV here.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result rows as JSON on stdout.")]
ReportOpt = Annotated[bool, typer.Option(help="Write figures and report.md into each run directory.")]
# The values come from the leaderboard's own table of sort keys, so a key added there is a choice here.
SortBy = Literal[tuple(SORT_KEYS)]  # type: ignore[valid-type]
SortByOpt = Annotated[
    SortBy | None,
    typer.Option(
        help="Sort the leaderboard by this metric: AUROC descending, FPR@95 ascending; default: the "
        "detectors' order. The best value of each metric is bold either way."
    ),
]
# The formats of harness.plots.FIGURE_FORMATS (a test keeps them equal), spelled out here: taking them
# from harness.plots would import matplotlib at the CLI's start (and for --help).
FigureFormat = Literal["png", "pdf", "svg"]
FigureFormatOpt = Annotated[
    FigureFormat | None,
    typer.Option(
        help="File format of the report's figures: png (embedded in report.md), svg (embedded, "
        "vector) or pdf (vector, linked from report.md: markdown cannot embed it). Default: the "
        "format of the report already there (a rebuild keeps it), else png."
    ),
]

# --- harness leaderboard: exports and the definitions shown --------------------------------------
# The exporter's own list of formats, so a format added there is a choice here.
ExportFormat = Literal[FORMATS]  # type: ignore[valid-type]
FormatOpt = Annotated[
    ExportFormat | None,
    typer.Option(
        "--format",
        help="Export the leaderboard as csv, json, markdown, latex or html (one table, mean ± std over "
        "seeds, best cells marked), or openood (per run and detector, the table OpenOOD v1.5's evaluator "
        "returns). Default: the table on the terminal.",
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Write the --format export here (a file; for openood a folder) instead of stdout; the "
        "terminal then shows the usual leaderboard.",
    ),
]
AuprOpt = Annotated[
    AuprMethod | None,
    typer.Option(
        "--aupr",
        help="AUPR shown: ap (average precision) or trapezoid (OpenOOD's rule). Default: ap; with "
        "--format openood: trapezoid.",
    ),
]
LeaderboardConventionOpt = Annotated[
    FprConvention | None,
    typer.Option(
        "--fpr-convention",
        help="FPR@95 shown: paper or openood. Default: each run's own; with --format openood: openood.",
    ),
]
ExportOverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an existing --output / --csv file that harness did not write (otherwise refused). A "
        "run folder's own files are never replaced.",
    ),
]
