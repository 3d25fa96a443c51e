"""``harness list``: the registered detectors (grouped by what they read, with their search grids),
networks, training recipes and benchmarks, as tables on the terminal.

Apart from the app so that what a listing shows (and how a detector's variants are described) is
read in one place; everything it lists is looked up in the registries at the time it runs.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dfb_ood.harness.cli_errors import friendly_errors
from dfb_ood.harness.cli_options import choice
from dfb_ood.harness.cli_tables import print_table

console = Console()


def _detector_table() -> Table:
    """The base detectors grouped by what they read, with their search grids, then ``bg``."""
    from dfb_ood.harness.detectors import detector_catalog
    from dfb_ood.postprocessors import registry

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
    from dfb_ood.postprocessors import registry

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


@friendly_errors
def list_things(
    what: Annotated[
        str,
        typer.Argument(
            **choice("WHAT", ("detectors", "networks", "recipes", "benchmarks", "all"), "WHAT"),
            help="What to list: detectors, networks, recipes, benchmarks or all.",
        ),
    ] = "all",
) -> None:
    """List the registered detectors, networks, training recipes and benchmarks."""
    from dfb_ood.harness.config import load_config
    from dfb_ood.harness.data.benchmark import available_benchmarks
    from dfb_ood.harness.recipes import available_recipes, load_recipe
    from dfb_ood.networks import available_networks

    if what in ("detectors", "all"):
        print_table(console, _detector_table())
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
        print_table(console, table)
    if what in ("recipes", "all"):
        table = Table(title="Training recipes")
        table.add_column("name")
        table.add_column("description")
        for name in available_recipes():
            table.add_row(name, load_recipe(name).description)
        print_table(console, table)
    if what in ("benchmarks", "all"):
        table = Table(title="Benchmarks (or pass your own YAML with --benchmark my.yaml)")
        table.add_column("name")
        table.add_column("description")
        for name in available_benchmarks():
            table.add_row(name, str(load_config("benchmarks", name).get("description", "")))
        print_table(console, table)
