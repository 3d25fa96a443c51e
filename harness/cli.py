"""The ``harness`` command line (Typer). Thin: parses, calls, prints."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from postprocessors import registry

app = typer.Typer(
    name="harness",
    help="Benchmark harness for out-of-distribution detection, featuring DFB.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@app.callback()
def _root() -> None:
    """Benchmark harness for out-of-distribution detection, featuring DFB."""


@app.command("list")
def list_things() -> None:
    """List the registered detectors: fusion type, what they read, and their DFB variants."""
    table = Table(title="Detectors (higher score = more in-distribution)")
    for column in ("name", "fusion", "reads", "own pass", "DFB variants"):
        table.add_column(column)
    for name in [*registry.BASES, *registry.STANDALONE]:
        detector = registry.create(name)
        reads = "background logit" if name == "bg" else "logits"
        if detector.requires_features:
            reads += ", features"
        if detector.requires_head:
            reads += ", head"
        variants = "" if name in registry.STANDALONE else " ".join(name + s for s in registry.DFB_SUFFIXES)
        table.add_row(name, detector.fusion_kind, reads, "yes" if detector.needs_network else "no", variants)
    console.print(table)
    aliases = ", ".join(f"{alias} -> {target}" for alias, target in registry.ALIASES.items())
    console.print(f"Aliases: {aliases}. _dfb: Eq. 7 fusion (T 2.5); _dfbz: z-score fusion on ID-val.")


def main() -> None:
    """Console-script entry point."""
    app()
