"""The leaderboard as one static HTML page (``harness leaderboard RUN... --html DIR``).

Why a static page: results get shared by attaching a folder or publishing it as-is (a CI artifact,
GitHub Pages), where no server runs and nothing may be fetched. So ``DIR/index.html`` holds
everything: inline CSS and vanilla JS (``harness/page/``), the data as JSON inside the page, and
the table already rendered, so that it reads without JavaScript too; the script only reorders and
hides whole rows. A Content-Security-Policy allows no network source at all and runs only the
page's own script and style (by hash), so even a mistake in escaping could not run injected code.
The run reports' PNG figures are copied next to the page and linked relatively.

Numbers are those of :func:`harness.leaderboard.aggregate` (mean and sample std over seeds), shown
in percent with two decimals; "best" and sorting compare the values as shown, as the terminal
table does, so equal-looking cells tie. The FPR@95 convention and the AUPR method are stated on
the page, as every table of this project does.

The folder is the page writer's: it records the files it wrote in a manifest
(:data:`MANIFEST`) and refuses a folder that holds anything else, so that a mistyped ``--html``
never overwrites or deletes a user's files. Every file is written atomically.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
import shutil
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from dfb_ood.harness.errors import RunFolderError
from dfb_ood.harness.io import atomic_write, open_regular_no_follow, read_json, read_regular_text, write_text
from dfb_ood.harness.leaderboard import (
    AUPR_TEXT,
    CONVENTION_TEXT,
    NETWORK_LABELS,
    aggregate,
    best_value,
    check_sort_by,
    load_run_rows,
    select_definitions,
    shown_percent,
)
from dfb_ood.harness.names import name_problem, safe_file_name
from dfb_ood.postprocessors import registry

__all__ = [
    "COLUMNS",
    "INDEX",
    "MANIFEST",
    "PageFolderError",
    "check_page_folder",
    "detector_variant",
    "read_page_data",
    "write_leaderboard_page",
]

INDEX = "index.html"
#: The list of files the page writer wrote into its folder: what it may replace or delete.
MANIFEST = ".harness-page.json"
FIGURES = "figures"
_WRITER = "harness leaderboard --html"
_MANIFEST_VERSION = 1


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
_VARIANT_TEXT = {
    "base": "base detector",
    "_dfb": "_dfb (fusion of Eq. 7)",
    "_dfbz": "_dfbz (z-score fusion)",
    "bg": "bg (background logit alone)",
}
_VARIANT_TAG = {"_dfb": "DFB", "_dfbz": "DFBz", "bg": "bg"}
# An interrupted atomic write's temporary file (networks.atomic names it .NAME.<random>.tmp).
_TEMP_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")


class PageFolderError(ValueError):
    """The page's folder cannot be used: it holds files the page writer did not write, or is a file."""


# --------------------------------------------------------------------------------------------------
# The folder: refuse anything that is not ours
# --------------------------------------------------------------------------------------------------


def _safe_relative(entry: object, manifest: Path) -> str:
    """A manifest entry as a plain relative POSIX path inside the folder, or PageFolderError."""
    path = PurePosixPath(str(entry)) if isinstance(entry, str) else None
    if path is None or not str(entry) or path.is_absolute() or any(p in ("..", ".", "") for p in path.parts):
        raise PageFolderError(
            f"{manifest}: entry {entry!r} is not a file name inside the folder; this manifest was not "
            "written by the page writer. Choose another folder for the page, or remove this one."
        )
    return path.as_posix()


def _read_manifest(out_dir: Path) -> frozenset[str]:
    path = out_dir / MANIFEST
    if not path.exists() and not path.is_symlink():
        return frozenset()
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a regular file")
        record = read_json(path)
        if not isinstance(record, dict) or record.get("writer") != _WRITER:
            raise ValueError(f"no 'writer: {_WRITER}'")
        files = record.get("files")
        if not isinstance(files, list):
            raise ValueError("no list of files")
    except (OSError, ValueError) as error:
        raise PageFolderError(
            f"{path} is not a page manifest ({error}), so the files in {out_dir} cannot be told "
            "apart from yours. Choose another folder for the page, or remove this one."
        ) from None
    return frozenset(_safe_relative(entry, path) for entry in files)


def _foreign_entries(out_dir: Path, ours: frozenset[str]) -> list[str]:
    """Everything under ``out_dir`` that is neither listed in the manifest nor our own leftover.

    A listed name that is now a link or a folder counts as foreign: the user put it there. Leftover
    temporary files of an interrupted atomic write (``.NAME.xxxx.tmp`` beside a listed NAME) are ours.
    """
    folders = {parent.as_posix() for name in ours for parent in PurePosixPath(name).parents} - {"."}
    foreign = []
    for root, dirs, files in os.walk(out_dir):
        rel_root = PurePosixPath(Path(root).relative_to(out_dir).as_posix())
        for name in list(dirs):
            rel = (rel_root / name).as_posix()
            if (Path(root) / name).is_symlink() or rel not in folders:
                foreign.append(rel + ("" if (Path(root) / name).is_symlink() else "/"))
                dirs.remove(name)  # do not list a foreign folder's contents
        for name in files:
            rel = (rel_root / name).as_posix()
            path = Path(root) / name
            if rel in ours or rel == MANIFEST:
                if path.is_symlink():
                    foreign.append(rel)
                continue
            leftover = _TEMP_LEFTOVER.match(name)
            if leftover and (rel_root / leftover["name"]).as_posix() in ours | {INDEX, MANIFEST}:
                continue
            foreign.append(rel)
    return sorted(foreign)


def check_page_folder(out_dir: str | os.PathLike[str]) -> frozenset[str]:
    """Whether the page may be written into ``out_dir``; the files an earlier page write left there.

    A folder that does not exist yet, an empty one, or one that holds only what the page writer
    wrote before (its manifest says which) is fine. Anything else raises :class:`PageFolderError`
    naming the files, before any work is done: the page never replaces or deletes a file it did not
    write. Callers (the CLI) may call this first to fail before loading anything.
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink() and not out_dir.exists():
        raise PageFolderError(f"page folder {out_dir} is a broken link; give a folder, e.g. leaderboard-page")
    if not out_dir.exists():
        parent = next((folder for folder in out_dir.absolute().parents if folder.exists()), None)
        if parent is not None and not parent.is_dir():
            raise PageFolderError(
                f"page folder {out_dir}: {parent} is a file, so no folder can be made there"
            )
        return frozenset()
    if not out_dir.is_dir():
        raise PageFolderError(
            f"page folder {out_dir} is a file; --html takes a folder (it is created), "
            f"e.g. {out_dir.parent / 'leaderboard-page'}"
        )
    ours = _read_manifest(out_dir)
    foreign = _foreign_entries(out_dir, ours)
    if foreign:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PageFolderError(
            f"page folder {out_dir} holds files the leaderboard page did not write ({listed}); the page "
            "is written only into a new or empty folder, or one it wrote before, so that nothing of "
            "yours is replaced. Give another folder, e.g. --html leaderboard-page, or move those files."
        )
    return ours


def _write_manifest(out_dir: Path, files: Iterable[str]) -> None:
    record = {"writer": _WRITER, "version": _MANIFEST_VERSION, "files": sorted(files)}
    write_text(out_dir / MANIFEST, json.dumps(record, indent=2) + "\n")


def _copy_atomic(source: Path, target: Path) -> None:
    """Copy a run's figure: a temporary file beside the target, renamed into place when complete.

    The source is opened without following a link (:func:`harness.io.open_regular_no_follow`): a
    link planted in a run's ``report/`` never puts the file it points at into a published page.
    """
    with open_regular_no_follow(source) as src:
        atomic_write(target, lambda handle: shutil.copyfileobj(src, handle))


def _remove_stale(out_dir: Path, stale: Iterable[str], keep: set[str]) -> None:
    """Delete files an earlier page write made that this one does not (listed in its manifest)."""
    for name in sorted(stale):
        path = out_dir / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
    for path in sorted(out_dir.rglob(".*.tmp")):
        leftover = _TEMP_LEFTOVER.match(path.name)
        rel_parent = path.parent.relative_to(out_dir).as_posix()
        known = keep | set(stale) | {INDEX, MANIFEST}
        if leftover and path.is_file() and PurePosixPath(rel_parent, leftover["name"]).as_posix() in known:
            path.unlink()
    figures = out_dir / FIGURES
    if figures.is_dir() and not figures.is_symlink():
        for folder in sorted((p for p in figures.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
        if not any(figures.iterdir()):
            figures.rmdir()


# --------------------------------------------------------------------------------------------------
# The data: aggregated rows per (benchmark, network, FPR convention)
# --------------------------------------------------------------------------------------------------


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


def _detector_groups() -> tuple[dict[str, str], list[str]]:
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


def _blocks(rows: Sequence[Mapping[str, object]], groups: Mapping[str, str]) -> list[dict[str, Any]]:
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


def _comparison(reference: str, rows: list[dict[str, object]], run_dirs: Sequence[Path]) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Figure:
    source: Path
    target: str  # relative to the page folder, POSIX
    title: str
    caption: str  # markdown-ish: `code` spans become <code>
    size: tuple[int, int] | None


@dataclass(frozen=True)
class _RunFigures:
    run_dir: Path
    label: str
    figures: tuple[_Figure, ...]
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


def _plan_figures(runs: Sequence[tuple[Path, list[dict[str, object]]]]) -> list[_RunFigures]:
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
            planned.append(_RunFigures(run_dir, label, (), note))
            continue
        if not report.is_dir():
            note = f"no report/ in this run: `harness report {run_dir}` makes its figures."
            planned.append(_RunFigures(run_dir, label, (), note))
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
            _Figure(
                source=p,
                target=f"{folder}/{p.name}",
                title=captions.get(p.name, (p.stem, ""))[0],
                caption=captions.get(p.name, ("", ""))[1],
                size=_png_size(p),
            )
            for p in pngs
        )
        note = None if figures else f"report/ of this run holds no PNG figures: `harness report {run_dir}`."
        planned.append(_RunFigures(run_dir, label, figures, note))
    return planned


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Text as HTML (element content and quoted attribute values alike)."""
    return html.escape(str(value), quote=True)


# A caption's pieces: a Markdown backslash escape (report.md escapes names read from files, see
# harness.markdown), a `code` span, or plain text.
_CAPTION_PIECE = re.compile(
    r"\\(?P<escaped>[!-/:-@\[-`{-~])|`(?P<code>[^`]+)`|(?P<text>[^`\\]+|.)", re.DOTALL
)


def _inline_code(text: str) -> str:
    """Escaped text with markdown's `code` spans as <code> and its backslash escapes undone."""
    out = []
    for piece in _CAPTION_PIECE.finditer(text):
        if piece["code"] is not None:
            out.append(f"<code>{_e(piece['code'])}</code>")
        else:
            out.append(_e(piece["escaped"] if piece["escaped"] is not None else piece["text"]))
    return "".join(out)


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' (so no '</script>' or '<!--'), ASCII only."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _asset(name: str) -> str:
    text = (resources.files("dfb_ood.harness") / "page" / name).read_text(encoding="utf-8")
    closing = "</script" if name.endswith(".js") else "</style"
    if closing in text.lower():
        raise RuntimeError(
            f"harness/page/{name} contains {closing}>, which would end its inline element early"
        )
    return text


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _metric_cell(key: str, cell: Mapping[str, Any] | None, show_std: bool) -> str:
    spec = COLUMNS[key]
    classes = ["num"]
    if spec["group"]:
        classes.append(f"col-{spec['group']}")
    if key in ("near_auroc", "far_auroc", "id_accuracy"):
        classes.append("first-" + (spec["group"] or "id"))
    if cell is None:
        return f'<td class="{" ".join(classes + ["missing"])}">–</td>'
    std = f'<span class="std">±{_pct(cell["std"])}</span>' if show_std and cell["seeds"] > 1 else ""
    best = ""
    title = ""
    if cell.get("best"):
        classes.append("best")
        best = '<span class="sr-only"> (best)</span>'
        title = ' title="best in this column"'
    return f'<td class="{" ".join(classes)}"{title}>{_pct(cell["mean"])}{std}{best}</td>'


def _header(key: str) -> str:
    spec = COLUMNS[key]
    if spec["kind"] == "text":
        return (
            f'<th scope="col" class="text" data-column="{key}"><button type="button">'
            f'<span class="grp">&nbsp;</span><span class="arrow">{_e(spec["label"])}</span></button></th>'
        )
    group = spec["group"]
    classes = [f"col-{group}"] if group else []
    if key in ("near_auroc", "far_auroc", "id_accuracy"):
        classes.append("first-" + (group or "id"))
    direction = "↑" if spec["higher"] else "↓"
    better = "higher is better" if spec["higher"] else "lower is better"
    return (
        f'<th scope="col" class="{" ".join(classes)}" data-column="{key}" title="{better}; click to sort">'
        f'<button type="button"><span class="grp">{_e(group) if group else "&nbsp;"}</span>'
        f'<span class="arrow">{_e(spec["label"])} {direction}</span></button></th>'
    )


def _block_table(index: int, block: Mapping[str, Any], multi: bool, aupr_text: str) -> str:
    rows = block["rows"]
    seeds = sorted({r["seeds"] for r in rows})
    searched = any(r["hyperparameters"] for r in rows)
    uneven = len(seeds) > 1
    heads = [_header(key) for key in COLUMNS]
    if uneven:
        heads.append('<th scope="col">seeds</th>')
    if searched:
        heads.append('<th scope="col" class="text">searched hyper-parameters</th>')
    body = []
    for number, row in enumerate(rows):
        variant = row["variant"]
        tag = (
            f'<span class="tag tag-{variant}">{_VARIANT_TAG[variant]}</span>'
            if variant in _VARIANT_TAG
            else ""
        )
        cells = [
            f'<td class="text"><span class="name">{_e(row["detector"])}</span>{tag}</td>',
            f'<td class="text" title="{_e(row["detector_network"])}">{_e(row["net"])}</td>',
        ]
        cells += [
            _metric_cell(key, row["cells"][key], show_std=True)
            for key, spec in COLUMNS.items()
            if spec["kind"] == "metric"
        ]
        if uneven:
            cells.append(f'<td class="num">{row["seeds"]}</td>')
        if searched:
            cells.append(f'<td class="hp">{"<br>".join(_e(t) for t in row["hyperparameters"])}</td>')
        body.append(
            f'<tr class="variant-{_e(variant)}" data-row="{number}" data-detector="{_e(row["detector"])}">'
            + "".join(cells)
            + "</tr>"
        )
    convention = CONVENTION_TEXT.get(
        block["fpr_convention"], f"FPR@95 convention {block['fpr_convention']!r}"
    )
    if uneven:
        spread = "mean ± sample std over the seeds each detector has (seeds column)"
    elif seeds == [1]:
        spread = "one seed (no std)"
    else:
        spread = f"mean ± sample std over {seeds[0]} seeds"
    caption = (
        f"Percent, {spread}. {convention}. {aupr_text}. Shaded bold: the best value of a column "
        "(compared as shown, ties all marked), over every detector of this table whatever the filters."
    )
    title = f"{block['benchmark']} / {block['network']}"
    heading = f"<h2>{_e(title)}" + (f" <small>({_e(convention)})</small>" if multi else "") + "</h2>"
    return (
        f'<section class="block">{heading}<div class="table-wrap">'
        f'<table class="leaderboard" data-block="{index}" data-benchmark="{_e(block["benchmark"])}" '
        f'data-network="{_e(block["network"])}">'
        f"<caption>{_e(caption)}</caption>"
        f"<thead><tr>{''.join(heads)}</tr></thead><tbody>{''.join(body)}</tbody></table></div></section>"
    )


def _controls(blocks: Sequence[Mapping[str, Any]], group_order: Sequence[str]) -> str:
    rows = [row for block in blocks for row in block["rows"]]
    families = list(dict.fromkeys(row["base"] for row in rows))
    groups = [g for g in group_order if any(row["group"] == g for row in rows)]
    variants = [v for v in _VARIANT_TEXT if any(row["variant"] == v for row in rows)]
    options = ['<option value="">all detectors</option>']
    options.append('<optgroup label="base detector, with its DFB variants">')
    options += [f'<option value="base:{_e(f)}">{_e(f)}</option>' for f in families]
    options.append("</optgroup>")
    if groups:
        options.append('<optgroup label="what it reads (harness list detectors)">')
        options += [f'<option value="group:{_e(g)}">{_e(g)}</option>' for g in groups]
        options.append("</optgroup>")
    variant_boxes = "".join(
        f'<label><input type="checkbox" name="variant" value="{_e(v)}" checked>'
        f'<span class="swatch swatch-{_e(v)}"></span>{_e(_VARIANT_TEXT[v])}</label>'
        for v in variants
    )
    return (
        '<div class="controls" id="controls">'
        "<fieldset><legend>Columns</legend>"
        '<label><input type="checkbox" name="ood-group" value="near" checked> near-OOD</label>'
        '<label><input type="checkbox" name="ood-group" value="far" checked> far-OOD</label></fieldset>'
        f'<label>Family <select id="family">{"".join(options)}</select></label>'
        f"<fieldset><legend>Variant</legend>{variant_boxes}</fieldset>"
        '<button type="button" id="reset">Reset</button>'
        '<span class="status" id="status" aria-live="polite"></span></div>'
    )


def _comparison_section(comparison: Mapping[str, Any]) -> str:
    rows = comparison["rows"]
    parts = [f"<h2>Ours vs {_e(comparison['name'])}</h2>"]
    parts.append(f'<p class="notes">Theirs: {_e(comparison["source"])}. {_e(comparison["protocol"])}</p>')
    if not rows:
        parts.append(f"<p>No row of these runs matches the reference. {_e(comparison['scope'])}</p>")
        return '<section id="comparison">' + "".join(parts) + "</section>"
    notes: list[str] = []
    for row in rows:
        for caveat in row.get("caveats", []):
            if caveat not in notes:
                notes.append(caveat)
    from dfb_ood.harness.reference import METRIC_LABELS

    multi = len({(r["benchmark"], r["network"]) for r in rows}) > 1
    heads = (["benchmark / network"] if multi else []) + [
        "detector", "theirs as", "dataset", "metric", "ours %", "theirs %", "diff (pp)", "notes"
    ]  # fmt: skip
    body = []
    for row in rows:
        marks = ",".join(str(i) for i in sorted(notes.index(c) + 1 for c in row.get("caveats", [])))
        dataset = (
            row["dataset"]
            if row["dataset"] == row["their_dataset"]
            else (f"{row['dataset']} ({row['their_dataset']})")
        )
        cells = ([f"<td>{_e(row['benchmark'])} / {_e(row['network'])}</td>"] if multi else []) + [
            f"<td>{_e(row['detector'])}</td>",
            f"<td>{_e(row['their_name'])}</td>",
            f"<td>{_e(dataset)}</td>",
            f"<td>{_e(METRIC_LABELS.get(str(row['metric']), row['metric']))}</td>",
            f'<td class="num">{_pct(float(row["ours"]))}</td>',
            f'<td class="num">{_pct(float(row["theirs"]))}</td>',
            f'<td class="num">{100 * float(row["difference"]):+.2f}</td>',
            f"<td>{_e(marks or '-')}</td>",
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    parts.append(
        '<table class="plain"><thead><tr>'
        + "".join(f'<th scope="col">{_e(h)}</th>' for h in heads)
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )
    parts.append(
        '<p class="notes">Percent; diff = ours - theirs in percentage points; higher AUROC / AUPR / '
        "accuracy and lower FPR@95 are better. Numbers are never hidden for being incomparable: the "
        "notes say why a pair may not be like for like.</p>"
    )
    if notes:
        parts.append('<ol class="notes">' + "".join(f"<li>{_e(note)}</li>" for note in notes) + "</ol>")
    return '<section id="comparison">' + "".join(parts) + "</section>"


def _figures_section(runs: Sequence[_RunFigures]) -> str:
    parts = ["<h2>Report figures</h2>"]
    for number, run in enumerate(runs):
        summary = f"{_e(run.label)} <small>({_e(run.run_dir)}, {len(run.figures)} figures)</small>"
        if run.note is not None:
            parts.append(
                f'<div class="run-missing"><h3>{_e(run.label)} <small>({_e(run.run_dir)})</small></h3>'
                f'<p class="no-report">{_inline_code(run.note)}</p></div>'
            )
            continue
        figures = []
        for figure in run.figures:
            href = quote(figure.target)
            size = f' width="{figure.size[0]}" height="{figure.size[1]}"' if figure.size else ""
            # A very wide figure (the AUROC bars) gets the whole row instead of a grid cell.
            wide = ' class="wide"' if figure.size and figure.size[0] > 2.5 * figure.size[1] else ""
            caption = f"<br>{_inline_code(figure.caption)}" if figure.caption else ""
            figures.append(
                f'<figure{wide}><a href="{_e(href)}"><img src="{_e(href)}" alt="{_e(figure.title)}" '
                f'loading="lazy"{size}></a><figcaption><span class="fig-title">{_e(figure.title)}</span>'
                f"<code>{_e(PurePosixPath(figure.target).name)}</code>{caption}</figcaption></figure>"
            )
        opened = " open" if number == 0 else ""
        parts.append(
            f'<details class="run"{opened}><summary>{summary}</summary>'
            f'<div class="figures">{"".join(figures)}</div></details>'
        )
    return '<section id="figures">' + "".join(parts) + "</section>"


def _runs_section(runs: Sequence[tuple[Path, list[dict[str, object]]]]) -> str:
    body = []
    for run_dir, rows in runs:
        record_path = run_dir / "run.json"
        commit = ""
        if record_path.is_file() or record_path.is_symlink():
            try:
                commit = str(read_json(record_path, follow_symlinks=False).get("git_commit") or "")[:10]
            except (OSError, ValueError, AttributeError, RunFolderError):
                commit = "(run.json unreadable)"
        first = rows[0] if rows else {}
        seeds = ", ".join(sorted({str(row.get("seed")) for row in rows}))
        body.append(
            f"<tr><td><code>{_e(run_dir)}</code></td><td>{_e(first.get('benchmark', ''))}</td>"
            f"<td>{_e(first.get('network', ''))}</td><td>{_e(seeds)}</td>"
            f"<td>{len({row['detector'] for row in rows})}</td><td><code>{_e(commit)}</code></td></tr>"
        )
    heads = ("run directory", "benchmark", "network", "seed", "detectors", "commit")
    return (
        '<section id="runs"><h2>Runs</h2><table class="plain"><thead><tr>'
        + "".join(f'<th scope="col">{h}</th>' for h in heads)
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></section>"
    )


def _render(
    runs: Sequence[tuple[Path, list[dict[str, object]]]],
    blocks: list[dict[str, Any]],
    group_order: Sequence[str],
    figures: Sequence[_RunFigures],
    comparison: Mapping[str, Any] | None,
    sort_by: str | None,
    aupr_text: str,
) -> str:
    css, script = _asset("leaderboard.css"), _asset("leaderboard.js")
    data = {
        "version": 1,
        "columns": COLUMNS,
        "blocks": blocks,
        "sort": {"column": sort_by} if sort_by else None,
        "comparison": comparison,
        "aupr": aupr_text,
        "fpr_conventions": {b["fpr_convention"]: CONVENTION_TEXT.get(b["fpr_convention"]) for b in blocks},
    }
    names = list(dict.fromkeys(f"{b['benchmark']} / {b['network']}" for b in blocks))
    seeds = sorted(
        {int(r.get("seed", 0)) for _, rows in runs for r in rows if str(r.get("seed", "")).isdigit()}
    )
    title = "OOD leaderboard: " + "; ".join(names)
    conventions = sorted({b["fpr_convention"] for b in blocks})
    lede = (
        f"{sum(len(b['rows']) for b in blocks)} rows from {len(runs)} run(s)"
        + (f", seeds {', '.join(map(str, seeds))}" if seeds else "")
        + ". Click a column header to sort (best first; again to reverse); the filters hide rows, "
        "never change the numbers. Detector scores: higher = more in-distribution."
    )
    legend = [
        *(f"{CONVENTION_TEXT.get(c, f'FPR@95 convention {c!r}')}." for c in conventions),
        f"{aupr_text}.",
        "AUROC, AUPR and ID accuracy: higher is better (↑); FPR@95: lower is better (↓). near / far: the "
        "mean over the benchmark's near- / far-OOD sets.",
        'net: K = the K-class classifier, K+1 = the DFB net, "K, bg" = classifier foreground + DFB '
        "background. Coloured left edge and tag: base detector, _dfb, _dfbz, bg.",
    ]
    csp = (
        "default-src 'none'; img-src 'self' file:; "
        f"style-src {_csp_hash(css)}; script-src {_csp_hash(script)}; base-uri 'none'; form-action 'none'"
    )
    sections = "".join(
        _block_table(i, block, len(conventions) > 1, aupr_text) for i, block in enumerate(blocks)
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f'<meta name="generator" content="dfb-ood {_WRITER}">'
        f"<title>{_e(title)}</title>\n<style>{css}</style></head>\n"
        f'<body><main id="leaderboard"><h1>{_e(title)}</h1><p class="lede">{_e(lede)}</p>'
        f'<ul class="conventions">{"".join(f"<li>{_e(item)}</li>" for item in legend)}</ul>'
        + _controls(blocks, group_order)
        + "<noscript><p>Sorting and filters need JavaScript; the tables are complete without it.</p>"
        + "</noscript>"
        + sections
        + (_comparison_section(comparison) if comparison is not None else "")
        + _figures_section(figures)
        + _runs_section(runs)
        + f"<footer>Written by <code>{_WRITER}</code>: a static page, nothing fetched from any server."
        + "</footer>"
        + "</main>\n"
        + f'<script type="application/json" id="leaderboard-data">{_script_json(data)}</script>\n'
        + f"<script>{script}</script>\n</body></html>\n"
    )


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def write_leaderboard_page(
    run_dirs: Sequence[Path],
    out_dir: Path,
    reference: str | None = None,
    *,
    sort_by: str | None = None,
    fpr_convention: str | None = None,
    aupr: str = "ap",
) -> Path:
    """Write the leaderboard of ``run_dirs`` as a static page ``out_dir/index.html``; return its path.

    ``run_dirs`` are finished runs (seeds, networks, benchmarks: merged into mean ± std as
    ``harness leaderboard`` does); the PNGs of each run's ``report/`` are copied to
    ``out_dir/figures/``. ``reference`` names published numbers (``dfb-paper``, ``openood-v1.5``)
    to compare with. ``sort_by`` (a :data:`harness.leaderboard.SORT_KEYS` name) sets the initial
    order; the reader can re-sort by any column. ``fpr_convention`` (None: each run's own) and
    ``aupr`` (``ap`` or ``trapezoid``) choose the definitions shown, as ``harness leaderboard``'s
    options do (:func:`harness.leaderboard.select_definitions`).

    ``out_dir`` must be new, empty, or a folder this function wrote before (see
    :func:`check_page_folder`); what it wrote before and no longer writes is removed.
    """
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    if not run_dirs:
        raise ValueError("no run directories given; name at least one finished run, e.g. runs/cifar10/seed0")
    check_sort_by(sort_by)
    out_dir = Path(out_dir)
    previous = check_page_folder(out_dir)
    if reference is not None:
        from dfb_ood.harness.reference import load_reference

        load_reference(reference)  # an unknown name fails before anything is read or written
    runs = [
        (
            run_dir,
            select_definitions(load_run_rows(run_dir), fpr_convention, aupr, source=run_dir / "results.csv"),
        )
        for run_dir in run_dirs
    ]
    rows = [row for _, run_rows in runs for row in run_rows]
    if not rows:
        raise ValueError(
            f"the runs {', '.join(map(str, run_dirs))} hold no result rows; run `harness bench` first"
        )
    groups, group_order = _detector_groups()
    blocks = _blocks(rows, groups)
    comparison = _comparison(reference, rows, run_dirs) if reference is not None else None
    figures = _plan_figures(runs)
    page = _render(runs, blocks, group_order, figures, comparison, sort_by, AUPR_TEXT[aupr])

    planned = {INDEX} | {figure.target for run in figures for figure in run.figures}
    out_dir.mkdir(parents=True, exist_ok=True)
    # First list everything this write may leave behind, so that an interrupted write never leaves
    # files the next call would take for the user's.
    _write_manifest(out_dir, previous | planned)
    for run in figures:
        for figure in run.figures:
            _copy_atomic(figure.source, out_dir / figure.target)
    write_text(out_dir / INDEX, page)
    _remove_stale(out_dir, previous - planned, planned)
    _write_manifest(out_dir, planned)
    return out_dir / INDEX


def read_page_data(page: str | os.PathLike[str]) -> dict[str, Any]:
    """The data embedded in a written page (``index.html`` or its folder): for tests and scripts."""
    path = Path(page)
    if path.is_dir():
        path = path / INDEX
    text = path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="leaderboard-data">(.*?)</script>', text, re.S)
    if match is None:
        raise ValueError(f"{path} is not a leaderboard page (no embedded data); write it with {_WRITER}")
    return json.loads(match.group(1))
