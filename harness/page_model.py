"""The leaderboard page's model: what the page shows, as plain data, before any HTML.

Why apart from the rendering (:mod:`harness.page_render`): the numbers, best cells, detector
families and figure plan are the page's meaning, and they are embedded as JSON for the page's
script too; keeping them free of markup lets tests and the JSON read the same values the table
shows. Numbers are those of :func:`harness.leaderboard.aggregate` (mean and sample std over
seeds); "best" compares the values as shown (two decimals in percent), so equal-looking cells tie.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfb_ood.harness.errors import RunFolderError
from dfb_ood.harness.io import open_regular_no_follow, read_regular_text
from dfb_ood.harness.leaderboard import NETWORK_LABELS, aggregate, best_value, shown_percent
from dfb_ood.harness.names import name_problem, safe_file_name
from dfb_ood.harness.page_folder import FIGURES
from dfb_ood.harness.provenance import UNKNOWN, run_provenance
from dfb_ood.harness.result_row import ResultRow
from dfb_ood.postprocessors import registry

__all__ = [
    "COLUMNS",
    "VARIANT_TAG",
    "VARIANT_TEXT",
    "Figure",
    "RunFigures",
    "RunSummary",
    "comparison_data",
    "detector_groups",
    "detector_variant",
    "plan_figures",
    "run_summaries",
    "table_blocks",
]

# (metric, header label, higher is better) of the near / far columns.
_METRICS = (("auroc", "AUROC", True), ("fpr95", "FPR@95", False), ("aupr_in", "AUPR-In", True),
            ("aupr_out", "AUPR-Out", True))  # fmt: skip
#: The table's columns in order: key -> label, kind (text / metric), whether higher is better, the
#: near / far group and the results row (dataset) and metric it reads. Metric keys are
#: harness.leaderboard.SORT_KEYS' names (near_auroc, ...), so ``sort_by`` means the same in both.
COLUMNS: dict[str, dict[str, Any]] = {
    "detector": {"label": "detector", "kind": "text", "higher": None, "group": None},
    "net": {"label": "net", "kind": "text", "higher": None, "group": None},
    **{
        f"{group}_{metric}": {
            "label": label,
            "kind": "metric",
            "higher": higher,
            "group": group,
            "dataset": f"{group}_mean",
            "metric": metric,
        }
        for group in ("near", "far")
        for metric, label, higher in _METRICS
    },
    "id_accuracy": {
        "label": "ID acc",
        "kind": "metric",
        "higher": True,
        "group": None,
        "metric": "id_accuracy",
    },
}
#: A detector variant -> how the page's filter names it.
VARIANT_TEXT = {
    "base": "base detector",
    "_dfb": "_dfb (fusion of Eq. 7)",
    "_dfbz": "_dfbz (z-score fusion)",
    "bg": "bg (background logit alone)",
}
#: The tag shown after a DFB detector's name (a base detector has none).
VARIANT_TAG = {"_dfb": "DFB", "_dfbz": "DFBz", "bg": "bg"}


def detector_variant(name: str) -> tuple[str, str]:
    """``(family, variant)`` of a detector name: ``energy_dfbz`` -> ``("energy", "_dfbz")``.

    The variant is ``base``, ``_dfb``, ``_dfbz`` or ``bg``; the family is the base detector, which
    the filter uses so that ``energy`` covers energy, energy_dfb and energy_dfbz. A name the registry
    does not know (a result of another version) still splits by its suffix.
    """
    try:
        base, suffix = registry.split_variant(name)
    except ValueError:
        base, suffix = name, None
        for candidate in sorted(registry.DFB_SUFFIXES, key=len, reverse=True):
            if name.endswith(candidate) and len(name) > len(candidate):
                base, suffix = name[: -len(candidate)], candidate
                break
    if suffix is not None:
        return base, suffix
    return base, ("bg" if base in registry.STANDALONE else "base")


def detector_groups() -> tuple[dict[str, str], list[str]]:
    """Base detector -> what it reads (``harness list detectors``' groups), and the groups in order."""
    from dfb_ood.harness.detectors import detector_catalog

    catalog = detector_catalog()
    return {info.name: group for group, infos in catalog.items() for info in infos}, list(catalog)


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _cell(row: Mapping[str, object] | None, metric: str) -> dict[str, Any] | None:
    if row is None:
        return None
    mean = _finite(row.get(metric))
    if mean is None:
        return None
    std = _finite(row.get(f"{metric}_std")) or 0.0
    return {"mean": mean, "std": std, "seeds": int(row.get("seeds") or 1), "shown": shown_percent(mean)}  # type: ignore[call-overload]


def table_blocks(rows: Sequence[ResultRow], groups: Mapping[str, str]) -> list[dict[str, Any]]:
    """One block per (benchmark, network, FPR convention), detectors in first-seen order."""
    merged = aggregate(list(rows))  # type: ignore[arg-type]
    hyper: dict[tuple, list[str]] = {}
    for row in rows:
        key = (row["benchmark"], row["network"], row["fpr_convention"], row["detector"])
        text = str(row.get("hyperparameters") or "")
        if text and text not in hyper.setdefault(key, []):
            hyper[key].append(text)
    by_block: dict[tuple, dict[str, dict[str, Mapping[str, object]]]] = {}
    for row in merged:
        block_key = (str(row["benchmark"]), str(row["network"]), str(row["fpr_convention"]))
        by_block.setdefault(block_key, {}).setdefault(str(row["detector"]), {})[str(row["dataset"])] = row
    blocks = []
    for (benchmark, network, convention), detectors in by_block.items():
        records = []
        for detector, datasets in detectors.items():
            any_row = datasets.get("near_mean") or datasets.get("far_mean") or next(iter(datasets.values()))
            family, variant = detector_variant(detector)
            role = str(any_row.get("detector_network", ""))
            cells = {
                key: _cell(
                    any_row if spec.get("dataset") is None else datasets.get(spec["dataset"]), spec["metric"]
                )
                for key, spec in COLUMNS.items()
                if spec["kind"] == "metric"
            }
            records.append(
                {
                    "detector": detector,
                    "base": family,
                    "variant": variant,
                    "group": groups.get(family),
                    "net": NETWORK_LABELS.get(role, role),
                    "detector_network": role,
                    "seeds": max(int(r.get("seeds") or 1) for r in datasets.values()),  # type: ignore[call-overload]
                    "hyperparameters": hyper.get((benchmark, network, convention, detector), []),
                    "cells": cells,
                }
            )
        for key, spec in COLUMNS.items():
            if spec["kind"] != "metric":
                continue
            shown = [r["cells"][key]["shown"] for r in records if r["cells"][key] is not None]
            best = best_value(shown, bool(spec["higher"]))
            for record in records:
                cell = record["cells"][key]
                if cell is not None:
                    cell["best"] = cell["shown"] == best
        blocks.append(
            {"benchmark": benchmark, "network": network, "fpr_convention": convention, "rows": records}
        )
    return blocks


def comparison_data(
    reference: str, rows: list[ResultRow], run_dirs: Sequence[Path]
) -> dict[str, Any]:
    """Our rows against a published table, as ``harness leaderboard --reference`` compares them."""
    from dfb_ood.harness.reference import compare_runs, describe_reference_scope

    published, matched = compare_runs(reference, rows, run_dirs)
    return {
        "name": published.name,
        "source": published.source,
        "protocol": published.protocol,
        "scope": describe_reference_scope(published),
        "rows": matched,
    }


@dataclass(frozen=True)
class Figure:
    """One PNG of a run's report/: where it is copied and what the page says about it."""

    source: Path
    target: str  # relative to the page folder, POSIX
    title: str
    caption: str  # markdown-ish: `code` spans become <code>
    size: tuple[int, int] | None


@dataclass(frozen=True)
class RunFigures:
    """A run's figures on the page, or the note saying why it has none."""

    run_dir: Path
    label: str
    figures: tuple[Figure, ...]
    note: str | None  # why there are no figures


def _png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (so the page reserves the space), None if not a PNG."""
    try:
        with open_regular_no_follow(path) as handle:
            head = handle.read(24)
    except (OSError, RunFolderError):
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def _report_captions(report_md: Path) -> dict[str, tuple[str, str]]:
    """File name -> (section title, caption) from a run's report.md (its ``![..](x.png)`` + ``*caption*``)."""
    try:
        lines = read_regular_text(report_md).splitlines()  # a link is not read through
    except (OSError, UnicodeDecodeError, RunFolderError):
        return {}
    found: dict[str, tuple[str, str]] = {}
    heading = ""
    image = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<file>[^)\s]+)\)\s*$")
    for index, line in enumerate(lines):
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            continue
        match = image.match(line.strip())
        if not match:
            continue
        caption = ""
        for following in lines[index + 1 :]:
            if not following.strip():
                continue
            text = following.strip()
            if len(text) > 1 and text.startswith("*") and text.endswith("*"):
                caption = text.strip("*").strip()
            break
        found.setdefault(match["file"], (heading or match["alt"], caption))
    return found


def _slug(text: str) -> str:
    return safe_file_name(re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-."), fallback="run")


def plan_figures(runs: Sequence[tuple[Path, list[ResultRow]]]) -> list[RunFigures]:
    """Which PNGs of each run's report/ to copy where (figures/NN-benchmark-network-seedS/NAME.png)."""
    planned = []
    for number, (run_dir, rows) in enumerate(runs, start=1):
        first = rows[0] if rows else {}
        label = " / ".join(
            str(part) for part in (first.get("benchmark"), first.get("network")) if part not in (None, "")
        )
        seeds = sorted({str(row.get("seed")) for row in rows})
        label = f"{label} / seed {', '.join(seeds)}" if label else run_dir.name
        folder = f"{FIGURES}/{number:02d}-{_slug(label.replace(' / seed ', '-seed').replace(' / ', '-'))}"
        report = run_dir / "report"
        if report.is_symlink():
            note = (
                f"report/ of this run is a symbolic link: not followed (a page copies only a run's own "
                f"files); remove the link and run `harness report {run_dir}`."
            )
            planned.append(RunFigures(run_dir, label, (), note))
            continue
        if not report.is_dir():
            note = f"no report/ in this run: `harness report {run_dir}` makes its figures."
            planned.append(RunFigures(run_dir, label, (), note))
            continue
        # regular files only: a link in report/ (to a secret, say) is never copied into the page
        with os.scandir(report) as entries:
            pngs = [
                Path(entry.path)
                for entry in entries
                if entry.name.lower().endswith(".png")
                and entry.is_file(follow_symlinks=False)
                and not entry.name.startswith(".")
                and name_problem(entry.name) is None
            ]
        captions = _report_captions(report / "report.md")
        order = {name: index for index, name in enumerate(captions)}
        pngs.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
        figures = tuple(
            Figure(
                source=p,
                target=f"{folder}/{p.name}",
                title=captions.get(p.name, (p.stem, ""))[0],
                caption=captions.get(p.name, ("", ""))[1],
                size=_png_size(p),
            )
            for p in pngs
        )
        note = None if figures else f"report/ of this run holds no PNG figures: `harness report {run_dir}`."
        planned.append(RunFigures(run_dir, label, figures, note))
    return planned


@dataclass(frozen=True)
class RunSummary:
    """One line of the page's runs table: where a run is, what it holds, and its provenance."""

    run_dir: Path
    benchmark: object
    network: object
    seeds: str
    detectors: int
    commit: str  # short commit, "+dirty" for uncommitted changes, or "unknown"
    date: str = UNKNOWN  # ISO 8601 UTC: when the run finished (else started), or "unknown"
    versions: str = UNKNOWN  # "dfb-ood 0.1.0, python 3.11.9, torch ..." (harness.provenance)


def run_summaries(runs: Sequence[tuple[Path, list[ResultRow]]]) -> list[RunSummary]:
    """The runs table: each run's benchmark, network, seeds, detector count, date, commit, versions.

    The provenance is :func:`harness.provenance.run_provenance`'s: validated, "unknown" where an
    old or damaged run.json lacks it.
    """
    summaries = []
    for run_dir, rows in runs:
        provenance = run_provenance(run_dir)
        first = rows[0] if rows else {}
        summaries.append(
            RunSummary(
                run_dir=run_dir,
                benchmark=first.get("benchmark", ""),
                network=first.get("network", ""),
                seeds=", ".join(sorted({str(row.get("seed")) for row in rows})),
                detectors=len({row["detector"] for row in rows}),
                commit=provenance.commit_text,
                date=provenance.date,
                versions=provenance.versions_text,
            )
        )
    return summaries
