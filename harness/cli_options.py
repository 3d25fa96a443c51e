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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from dfb_ood.suggest import closest

#: The help panels every command groups its options into (typer's ``rich_help_panel``).
DATA, NETWORK, DETECTORS, OUTPUT, SYSTEM = "Data", "Network and recipe", "Detectors", "Output", "System"
DEFINITIONS, TABLES = "Definitions shown", "Tables"

# The choices below are facts of other modules (harness.export.FORMATS, harness.leaderboard.SORT_KEYS,
# harness.metrics' FprConvention and AuprMethod, postprocessors.dfb.Foreground), spelled out here
# because importing those modules would import torch at the CLI's start (and for --help); a test
# (tests/harness/test_cli_help.py) keeps each equal to its source.
FORMATS: tuple[str, ...] = ("csv", "json", "markdown", "latex", "html", "openood")
SORT_KEYS: tuple[str, ...] = ("near_auroc", "far_auroc", "near_fpr95", "far_fpr95")
FPR_CONVENTIONS: tuple[str, ...] = ("paper", "openood")
AUPR_METHODS: tuple[str, ...] = ("ap", "trapezoid")
FOREGROUNDS: tuple[str, ...] = ("dfb", "classifier")
FprConvention = Literal["paper", "openood"]
AuprMethod = Literal["ap", "trapezoid"]
Foreground = Literal["dfb", "classifier"]


def choice(option: str, values: Sequence[str], metavar: str | None = None) -> dict[str, Any]:
    """The ``typer.Option`` settings of an option with a fixed set of values.

    The option is read as text and checked by our own callback rather than typer's ``Literal``
    coercion, whose refusal carries pydantic's "Value error," prefix; ours names the allowed values
    and the closest ones ("did you mean 'far_auroc'?"). ``--help`` shows the values as the metavar.

    Args:
        option: The option's name in messages (``"--sort-by"``).
        values: The allowed values, in the order ``--help`` lists them.
        metavar: What ``--help`` shows for the value (default: the values, ``[a|b]``).

    Returns:
        Keyword arguments for ``typer.Option`` / ``typer.Argument``: ``metavar``, ``callback`` and
        ``autocompletion``.
    """
    allowed = tuple(values)

    def check(value: object) -> object:
        if value is None:
            return value
        for one in value if isinstance(value, list) else [value]:
            if one not in allowed:
                near = closest(str(one), allowed)
                hint = f"; did you mean {' or '.join(map(repr, near))}?" if near else ""
                raise typer.BadParameter(f"{one!r} is not one of {', '.join(map(repr, allowed))}{hint}")
        return value

    def complete(incomplete: str) -> list[str]:
        return [value for value in allowed if value.startswith(incomplete)]

    check.__name__ = f"check_{option.strip('-').replace('-', '_')}"
    completer: Callable[[str], list[str]] = complete
    return {
        "metavar": metavar or "[" + "|".join(allowed) + "]",
        "callback": check,
        "autocompletion": completer,
    }


# --- which run: benchmark, detectors, recipe, network, seeds -------------------------------------
DetectorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--post",
        "-p",
        metavar="NAMES",
        rich_help_panel=DETECTORS,
        help="Detector(s): repeat or comma-separate; 'all' for every one.",
    ),
]
BenchOpt = Annotated[
    str,
    typer.Option(
        "--benchmark",
        "--id",
        "-b",
        metavar="NAME",
        rich_help_panel=DATA,
        help="Shipped benchmark name or a YAML path.",
    ),
]
RecipeOpt = Annotated[
    str,
    typer.Option(
        metavar="NAME",
        rich_help_panel=NETWORK,
        help="Training recipe name or YAML path (see `harness list recipes`).",
    ),
]
NetworkOpt = Annotated[
    str | None, typer.Option(metavar="NAME", rich_help_panel=NETWORK, help="Network (default: the recipe's).")
]
SeedsOpt = Annotated[
    str,
    typer.Option(
        metavar="LIST", rich_help_panel=NETWORK, help="Comma-separated seeds; several give mean ± std."
    ),
]
SeedOpt = Annotated[int, typer.Option(metavar="N", rich_help_panel=NETWORK, help="Seed.")]
CompareOpt = Annotated[
    bool, typer.Option(rich_help_panel=DETECTORS, help="Add the base detector of every DFB variant.")
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        metavar="DEVICE", rich_help_panel=SYSTEM, help="cuda, cuda:1, cpu (default: cuda when available)."
    ),
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(metavar="DIR", rich_help_panel=DATA, help="Data root (default $HARNESS_DATA or ./data)."),
]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        rich_help_panel=NETWORK,
        help="A trained K-class classifier to use instead of training one.",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(metavar="DIR", rich_help_panel=OUTPUT, help="Run directory; default: runs/NAME/NET/seedK."),
]
ConventionOpt = Annotated[
    str,  # one of FprConvention, checked by choice()
    typer.Option(
        **choice("--fpr-convention", FPR_CONVENTIONS),
        rich_help_panel=DETECTORS,
        help="FPR@95 convention: paper (OOD accepted at 95% ID TPR) or openood (ID rejected at 95% OOD TPR).",
    ),
]
ForegroundOpt = Annotated[
    str,  # one of Foreground
    typer.Option(
        **choice("--foreground", FOREGROUNDS),
        rich_help_panel=DETECTORS,
        help="Foreground score of DFB variants: dfb (the DFB net's first K logits, the paper) or "
        "classifier (the K-class classifier's outputs, reused from its cached pass).",
    ),
]
ClassesOpt = Annotated[
    int | None,
    typer.Option(
        "--classes",
        min=1,
        metavar="N",
        rich_help_panel=DATA,
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
        metavar="N",
        rich_help_panel=DATA,
        help="Seed of the class draw of --classes (not the run seed); default: the YAML's id_classes.seed.",
    ),
]
SearchOpt = Annotated[
    bool,
    typer.Option(
        rich_help_panel=DETECTORS,
        help="Choose hyper-parameters on ID-val vs OOD-val (each detector's grid in its config YAML), "
        "never on test.",
    ),
]

# --- how it runs: training overrides, data streaming, processes ----------------------------------
StepsOpt = Annotated[
    int | None,
    typer.Option(
        metavar="N", rich_help_panel=NETWORK, help="Override the recipe's training steps (quick tries)."
    ),
]
BatchOpt = Annotated[
    int | None, typer.Option(metavar="N", rich_help_panel=NETWORK, help="Override the recipe's batch size.")
]
Launcher = Literal["none", "torchrun"]
LauncherOpt = Annotated[
    str,  # one of Launcher
    typer.Option(
        **choice("--launcher", ("none", "torchrun")),
        rich_help_panel=SYSTEM,
        help="none: run in this process (or as the torchrun worker that started it); torchrun: run "
        "this command again under torchrun with --nproc processes on this node (data-parallel training, "
        "sharded forward passes). For several nodes start `torchrun ... -m dfb_ood bench ...` yourself.",
    ),
]
NprocOpt = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        rich_help_panel=SYSTEM,
        help="Processes for --launcher torchrun (default: this node's GPU count).",
    ),
]
InMemoryOpt = Annotated[
    float | None,
    typer.Option(
        metavar="MIB",
        rich_help_panel=DATA,
        help="File-backed sets larger than this many MiB decoded are streamed from their files by "
        "worker processes (training, masks and evaluation passes) instead of held in memory (default: "
        "$HARNESS_IN_MEMORY_MB, else 4096; 0 streams every list or folder set). Results are the same.",
    ),
]
DataWorkersOpt = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        rich_help_panel=DATA,
        help="Worker processes that decode a streamed set "
        "(default: $HARNESS_DATA_WORKERS, else min(4, CPUs)).",
    ),
]
SkipBadOpt = Annotated[
    bool,
    typer.Option(
        "--skip-bad",
        metavar="",
        rich_help_panel=DATA,
        help="Drop missing or undecodable images (and bad list lines) with a warning naming each, "
        "instead of stopping at the first.",
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        metavar="",
        rich_help_panel=OUTPUT,
        help="Replace the results of a run folder made with other settings (otherwise refused). Never "
        "writes into a folder of files harness did not write.",
    ),
]

# --- what it prints and writes -------------------------------------------------------------------
CsvOpt = Annotated[
    Path | None,
    typer.Option("--csv", metavar="FILE", rich_help_panel=OUTPUT, help="Also write the results CSV here."),
]
QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", metavar="", rich_help_panel=OUTPUT, help="No progress bars or messages."),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", metavar="", rich_help_panel=OUTPUT, help="Print the result rows as JSON on stdout."
    ),
]
ReportOpt = Annotated[
    bool, typer.Option(rich_help_panel=OUTPUT, help="Write figures and report.md into each run directory.")
]
# The values come from the leaderboard's own table of sort keys, so a key added there is a choice here.
SortBy = Literal["near_auroc", "far_auroc", "near_fpr95", "far_fpr95"]  # type: ignore[valid-type]
SortByOpt = Annotated[
    str | None,  # one of SortBy
    typer.Option(
        **choice("--sort-by", SORT_KEYS, "KEY"),
        rich_help_panel=OUTPUT,
        help="Sort the leaderboard by KEY: near_auroc or far_auroc (descending), near_fpr95 or "
        "far_fpr95 (ascending); default: the detectors' order. The best value of each metric is bold "
        "either way.",
    ),
]
# The formats of harness.plots.FIGURE_FORMATS (a test keeps them equal), spelled out here: taking them
# from harness.plots would import matplotlib at the CLI's start (and for --help).
FigureFormat = Literal["png", "pdf", "svg"]
FigureFormatOpt = Annotated[
    str | None,  # one of FigureFormat
    typer.Option(
        **choice("--figure-format", ("png", "pdf", "svg")),
        rich_help_panel=OUTPUT,
        help="File format of the report's figures: png (embedded in report.md), svg (embedded, "
        "vector) or pdf (vector, linked from report.md: markdown cannot embed it). Default: the "
        "format of the report already there (a rebuild keeps it), else png.",
    ),
]

# --- harness leaderboard: exports and the definitions shown --------------------------------------
# The exporter's own list of formats, so a format added there is a choice here.
ExportFormat = Literal["csv", "json", "markdown", "latex", "html", "openood"]  # type: ignore[valid-type]
FormatOpt = Annotated[
    str | None,  # one of ExportFormat
    typer.Option(
        "--format",
        **choice("--format", FORMATS, "FORMAT"),
        rich_help_panel=OUTPUT,
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
        metavar="PATH",
        rich_help_panel=OUTPUT,
        help="Write the --format export here (a file; for openood a folder) instead of stdout; the "
        "terminal then shows the usual leaderboard.",
    ),
]
AuprOpt = Annotated[
    str | None,  # one of AuprMethod
    typer.Option(
        "--aupr",
        **choice("--aupr", AUPR_METHODS),
        rich_help_panel=DEFINITIONS,
        help="AUPR shown: ap (average precision) or trapezoid (OpenOOD's rule). Default: ap; with "
        "--format openood: trapezoid.",
    ),
]
LeaderboardConventionOpt = Annotated[
    str | None,  # one of FprConvention
    typer.Option(
        "--fpr-convention",
        **choice("--fpr-convention", FPR_CONVENTIONS),
        rich_help_panel=DEFINITIONS,
        help="FPR@95 shown: paper or openood. Default: each run's own; with --format openood: openood.",
    ),
]
ExportOverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        metavar="",
        rich_help_panel=OUTPUT,
        help="Replace an existing --output / --csv file that harness did not write (otherwise refused). A "
        "run folder's own files are never replaced.",
    ),
]


def _flags_show_no_type() -> None:
    """``--help`` lists a flag (``--quiet``, ``--help``, ``--install-completion``) without ``<bool>``.

    Typer 0.29 prints every option's type in the help's type column, a flag's as ``<bool>``, which
    reads as if the flag took a value. Its own options (``--help``, the completion ones) cannot be
    given a metavar, so the type column is left empty for every flag here, once, for every command.
    """
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_flags_hidden", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._flags_hidden = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()
