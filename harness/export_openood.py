"""OpenOOD v1.5's per-run tables (``harness leaderboard --format openood``), from result rows.

Why apart from the leaderboard table: OpenOOD's ``Evaluator.eval_ood`` DataFrame is one table per
run and detector (``openood/evaluation_api/evaluator.py``), rows per OOD set and group mean,
columns ``FPR@95, AUROC, AUPR_IN, AUPR_OUT, ACC``, written as OpenOOD's scripts write it. With
OpenOOD's definitions the header is exactly OpenOOD's; any other definition is named in the header
so the file cannot pass for OpenOOD's numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dfb_ood.errors import InputError
from dfb_ood.harness.export_table import single_value
from dfb_ood.harness.leaderboard import (
    AUPR_LABELS,
    AUPR_TEXT,
    CONVENTION_TEXT,
)
from dfb_ood.harness.names import safe_file_name
from dfb_ood.harness.provenance import RunProvenance
from dfb_ood.harness.result_row import ResultRow

#: OpenOOD v1.5's column names, in its order.
OPENOOD_COLUMNS: tuple[str, ...] = ("FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT", "ACC")
#: The definitions OpenOOD v1.5 uses: the default of ``--format openood``.
OPENOOD_DEFINITIONS = {"fpr_convention": "openood", "aupr": "trapezoid"}


@dataclass(frozen=True)
class OpenOODTable:
    """OpenOOD v1.5's ``eval_ood`` table of one detector on one run, in percent (full precision)."""

    benchmark: str
    network: str
    seed: str
    detector: str
    index: list[str]  # near sets, "nearood", far sets, "farood"
    values: list[list[float]]  # per index row: FPR@95, AUROC, AUPR_IN, AUPR_OUT, ACC (percent)
    fpr_convention: str
    aupr: str

    @property
    def header(self) -> list[str]:
        """OpenOOD's column names; a definition other than OpenOOD's is named beside its column."""
        fpr = "FPR@95" if self.fpr_convention == "openood" else f"FPR@95 ({self.fpr_convention})"
        if self.aupr == "trapezoid":
            aupr = ["AUPR_IN", "AUPR_OUT"]
        else:
            aupr = [f"AUPR_IN ({AUPR_LABELS[self.aupr]})", f"AUPR_OUT ({AUPR_LABELS[self.aupr]})"]
        return [fpr, "AUROC", *aupr, "ACC"]

    def to_csv(self) -> str:
        """As OpenOOD's scripts write it: ``DataFrame.to_csv(path, float_format='{:.2f}'.format)``."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["", *self.header])  # the unnamed index column
        for name, values in zip(self.index, self.values, strict=True):
            writer.writerow([name, *(f"{value:.2f}" for value in values)])
        return buffer.getvalue()

    @property
    def relative_path(self) -> Path:
        """``<benchmark>/<network>/seed<k>/ood/<detector>.csv``: the runs' layout, OpenOOD's ``ood/``."""
        parts = [_path_part(self.benchmark), _path_part(self.network), _path_part(f"seed{self.seed}")]
        return Path(*parts, "ood", f"{_path_part(self.detector)}.csv")

    @property
    def title(self) -> str:
        return f"{self.benchmark} / {self.network} / seed {self.seed} / {self.detector}"


def _path_part(text: str) -> str:
    """A name safe as one path component (a ``timm:`` network, a results row's benchmark name)."""
    return safe_file_name(text)


def openood_tables(rows: Sequence[ResultRow]) -> list[OpenOODTable]:
    """OpenOOD's table for every (run, detector) of result rows, in the rows' order.

    ``rows`` are per-seed rows (not aggregated) whose ``fpr95`` / ``aupr_*`` hold the definitions to
    show (:func:`harness.leaderboard.select_definitions`). ``nearood`` / ``farood`` are the
    ``near_mean`` / ``far_mean`` rows (plain means over the group's sets, as OpenOOD's); a group
    without sets has neither rows nor mean, where OpenOOD would show a mean of nothing. ACC is the
    ID accuracy of the network the detector read, repeated on every row as OpenOOD does.
    """
    runs: dict[tuple[str, str, str, str], list[Mapping[str, object]]] = {}
    for row in rows:
        key = (str(row["benchmark"]), str(row["network"]), str(row["seed"]), str(row["detector"]))
        runs.setdefault(key, []).append(row)
    tables = []
    for (benchmark, network, seed, detector), members in runs.items():
        datasets = [str(row["dataset"]) for row in members]
        if len(set(datasets)) != len(datasets):
            raise InputError(
                f"{benchmark} / {network} / seed {seed} / {detector} has several rows for one OOD set: the "
                "rows come from several runs of the same benchmark, network and seed; export them one run "
                "at a time"
            )
        convention = single_value(members, "fpr_convention", "FPR@95 conventions", "pass --fpr-convention")
        aupr = single_value(members, "aupr_method", "AUPR definitions", "pass --aupr")
        if aupr == "":
            aupr = "ap"
        index: list[str] = []
        values: list[list[float]] = []
        for group, mean_name in (("near", "nearood"), ("far", "farood")):
            sets = [row for row in members if row.get("group") == group]
            mean = next((row for row in members if row["dataset"] == f"{group}_mean"), None)
            for row in [*sets, *([mean] if sets and mean is not None else [])]:
                index.append(mean_name if row is mean else str(row["dataset"]))
                values.append([100 * float(row[key]) for key in ("fpr95", "auroc", "aupr_in", "aupr_out")])  # type: ignore[arg-type]
                values[-1].append(100 * float(row["id_accuracy"]))  # type: ignore[arg-type]
        if not index:
            continue  # rows without any near or far set (nothing OpenOOD would show)
        tables.append(OpenOODTable(benchmark, network, seed, detector, index, values, convention, aupr))
    return tables


def openood_text(tables: Sequence[OpenOODTable], runs: Sequence[RunProvenance] = ()) -> str:
    """Every table for a terminal or a pipe: a ``#`` line naming run and detector above each CSV.

    ``runs`` (the runs' provenance) adds one ``# run NAME: date ..., commit ..., versions`` line per
    run under the first line.
    """
    if not tables:
        return ""
    first = tables[0]
    lines = [
        "# OpenOOD v1.5 evaluator tables (percent), one per run and detector; "
        f"{CONVENTION_TEXT[first.fpr_convention]}; {AUPR_TEXT[first.aupr]}",
        *(f"# run {' '.join(run.summary().split())}" for run in runs),
    ]
    for table in tables:
        lines += ["", f"# {table.title}", table.to_csv().rstrip("\n")]
    return "\n".join(lines) + "\n"


def openood_manifest(
    tables: Sequence[OpenOODTable],
    sources: Mapping[str, str],
    runs: Mapping[str, RunProvenance] | None = None,
) -> dict[str, object]:
    """What a folder of OpenOOD tables holds: the definitions, and each file's run and detector.

    ``sources`` maps a table's relative path to the run directory it came from; ``runs`` (run
    directory -> its provenance, :func:`harness.provenance.run_provenance`) adds a ``runs`` entry:
    each run's dates, commit and versions. The tables themselves stay exactly OpenOOD's files.
    """
    first = tables[0] if tables else None
    extra = {"runs": {run_dir: run.as_dict() for run_dir, run in runs.items()}} if runs else {}
    return {
        **extra,
        "format": "openood",
        "description": "OpenOOD v1.5 Evaluator.eval_ood tables (percent), one per run and detector",
        "columns": list(first.header) if first else list(OPENOOD_COLUMNS),
        "fpr_convention": first.fpr_convention if first else None,
        "fpr_convention_text": CONVENTION_TEXT[first.fpr_convention] if first else None,
        "aupr": first.aupr if first else None,
        "aupr_text": AUPR_TEXT[first.aupr] if first else None,
        "files": {
            table.relative_path.as_posix(): {
                "run_dir": sources.get(table.relative_path.as_posix(), ""),
                "benchmark": table.benchmark,
                "network": table.network,
                "seed": table.seed,
                "detector": table.detector,
            }
            for table in tables
        },
    }


__all__ = [
    "OPENOOD_COLUMNS",
    "OPENOOD_DEFINITIONS",
    "OpenOODTable",
    "openood_manifest",
    "openood_tables",
    "openood_text",
]
