"""Published numbers (the DFB paper's tables, OpenOOD v1.5's leaderboard) and honest comparisons.

This module is the public face of the feature and its presentation: what a reference covers
(:func:`describe_reference_scope`) and ours vs theirs as a terminal table whose caption footnotes
every caveat (:func:`comparison_table`) instead of dropping it. The YAML schema and its loading are
:mod:`dfb_ood.harness.reference_schema`; matching a run's rows to the published numbers is
:mod:`dfb_ood.harness.reference_compare`. Their public names are re-exported here, so callers import
everything reference-related from one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from dfb_ood.harness.reference_compare import compare, compare_runs
from dfb_ood.harness.reference_schema import (
    ID_DATASET,
    METRIC_LABELS,
    Reference,
    ReferenceEntry,
    available_references,
    load_reference,
    reference_from_file,
)

__all__ = [
    "METRIC_LABELS",
    "Reference",
    "ReferenceEntry",
    "available_references",
    "compare",
    "compare_runs",
    "comparison_table",
    "describe_reference_scope",
    "load_reference",
    "reference_from_file",
]


def describe_reference_scope(reference: Reference) -> str:
    """What a reference covers, for the message shown when none of a run's rows match it."""
    sets: dict[str, list[str]] = {}
    for entry in reference.entries:
        if entry.dataset != ID_DATASET and entry.detector is not None:
            names = sets.setdefault(entry.benchmark, [])
            if entry.our_dataset not in names:
                names.append(entry.our_dataset)
    metrics = dict.fromkeys(m for e in reference.entries if e.dataset != ID_DATASET for m in e.metrics)
    parts = [
        f"{reference.name} covers {', '.join(reference.benchmarks)} for {', '.join(reference.detectors)}",
        "rows matched by benchmark + detector + dataset: "
        + "; ".join(f"{bench}: {', '.join(names)}" for bench, names in sets.items()),
        f"metrics {', '.join(metrics)}",
    ]
    if any(e.dataset == ID_DATASET for e in reference.entries):
        parts.append("ID accuracy of the classifier and the DFB net")
    if reference.unmatched_methods:
        parts.append(f"{', '.join(reference.unmatched_methods)} have no detector of ours (never compared)")
    parts.append(f"their network {reference.network} ({reference.network_config}), {reference.image_size} px")
    return ". ".join(parts) + "."


# --------------------------------------------------------------------------------------------------
# Terminal table
# --------------------------------------------------------------------------------------------------


def comparison_table(
    comparison_rows: Sequence[Mapping[str, Any]], title: str, reference: Reference | None = None
) -> Table:
    """Ours vs theirs in percent with the difference, each caveat footnoted once in the caption.

    Caveats repeat across most rows (same network, same convention); numbering them once and marking
    rows keeps the table readable without letting a single incomparable number pass unflagged.
    With ``reference``, the caption also states its source and protocol, which hold for every row.
    """
    notes: list[str] = []
    for row in comparison_rows:
        for caveat in row.get("caveats", []):
            if caveat not in notes:
                notes.append(caveat)
    multi = len({(r["benchmark"], r["network"]) for r in comparison_rows}) > 1
    table = Table(title=title, caption_justify="left")
    if multi:
        table.add_column("benchmark / network")
    for column in ("detector", "theirs as", "dataset", "metric", "ours %", "theirs %", "diff (pp)", "notes"):
        right = column in ("ours %", "theirs %", "diff (pp)")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for row in comparison_rows:
        marks = ",".join(str(i) for i in sorted(notes.index(c) + 1 for c in row.get("caveats", [])))
        cells = [
            str(row["detector"]),
            str(row["their_name"]),
            str(row["dataset"])
            if row["dataset"] == row["their_dataset"]
            else f"{row['dataset']} ({row['their_dataset']})",
            METRIC_LABELS.get(str(row["metric"]), str(row["metric"])),
            f"{100 * float(row['ours']):.2f}",
            f"{100 * float(row['theirs']):.2f}",
            f"{100 * float(row['difference']):+.2f}",
            marks or "-",
        ]
        table.add_row(*([f"{row['benchmark']} / {row['network']}"] if multi else []), *cells)
    lines = [
        "Percent; diff = ours - theirs in percentage points; higher AUROC/AUPR/accuracy and lower FPR@95 "
        "are better."
    ]
    if any(r["dataset"] == "all_mean" for r in comparison_rows):
        lines.append("all_mean vs Average: both plain means over the same OOD sets of the benchmark.")
    if reference is not None:
        lines.append(f"Theirs: {reference.source}. {reference.protocol}")
    if not comparison_rows:
        lines.append("No row of ours matches this reference.")
    lines += [f"[{i}] {note}" for i, note in enumerate(notes, start=1)]
    table.caption = "\n".join(lines)
    return table
