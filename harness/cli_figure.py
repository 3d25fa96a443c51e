"""``harness figure``: figures from finished runs, across several runs (``classes``, the paper's
Fig. 7) or of one run's cached outputs (``tsne``, its Fig. 5); nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from dfb_ood.errors import InputError
from dfb_ood.harness.cli_errors import debug_callback, friendly_errors
from dfb_ood.harness.cli_options import DetectorOpt, QuietOpt

#: harness.tsne.DEFAULT_SAMPLE (a test keeps them equal), spelled out: harness.tsne imports torch.
TSNE_SAMPLE = 300

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
            metavar="RUN_DIR",
            help="Finished run directories of several class counts (e.g. imagenet_subset --classes C).",
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
    ] = TSNE_SAMPLE,
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
        raise InputError("--sets: give OOD test set names, e.g. --sets textures,noise")
    drawn = write_tsne_figure(run_dir, out, sample=sample, seed=seed, sets=names or None, space=space)
    if not quiet:
        shown = ", ".join(f"{count} {name}" for name, count in drawn.counts.items())
        Console(stderr=True).print(
            f"wrote {escape(str(drawn.path))} ({shown} images, {drawn.seconds:.1f} s)", highlight=False
        )
