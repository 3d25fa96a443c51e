"""Is a benchmark's data all there? One report per set, before hours of evaluation are spent.

``check_benchmark`` never raises for missing data: it reports, per set, how many entries it has,
how many files are missing, how many of the decoded ones fail (a sample of ``sample`` images per
set, or all with ``full``), malformed list lines, and a hint how to get what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dfb_ood.harness.data.datasets import (
    _array_source,
    _torchvision_labels,
    generate_shapes,
    open_torchvision,
)
from dfb_ood.harness.data.images import DECODE_ERRORS, ImageDecodeError, decode_rgb
from dfb_ood.harness.data.imglist import (
    FileTable,
    Overlap,
    find_missing,
    find_overlaps,
    read_folder,
    read_imglist,
)
from dfb_ood.harness.data.problems import FIRST_FEW, describe_path
from dfb_ood.harness.data.specs import Benchmark, SetSpec
from dfb_ood.harness.data.tables import check_root, keep_classes, list_subset, map_threads, subset_indices


@dataclass
class SetReport:
    """What :func:`check_benchmark` found for one set."""

    name: str
    role: str
    type: str
    count: int | None = None
    missing: int = 0
    missing_examples: list[str] = field(default_factory=list)
    undecodable: int = 0
    undecodable_examples: list[str] = field(default_factory=list)
    bad_lines: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    checked: int = 0
    error: str | None = None
    hint: str = ""
    source: str = ""
    overlaps: list[str] = field(default_factory=list)  # files this OOD set shares with ID val / test

    @property
    def status(self) -> str:
        """``ok``, ``error`` (the set cannot be read), ``missing`` (files absent) or ``bad``."""
        if self.error is not None:
            return "error"
        if self.missing:
            return "missing"
        if self.undecodable or self.bad_lines or self.overlaps:
            return "bad"
        return "ok"

    @property
    def ok(self) -> bool:
        """True when the set can be used as is."""
        return self.status == "ok"


def check_benchmark(benchmark: Benchmark, full: bool = False, sample: int = 64) -> list[SetReport]:
    """One :class:`SetReport` per set (ID train/val/test, OOD val, near, far), in that order.

    File existence is always checked for every entry; decoding is checked on ``sample`` evenly
    spaced images per set (all of them with ``full``), since decoding ImageNet is slow. An OOD set
    that lists files of the ID val or test set is reported ``bad``, with the count (``overlaps``).
    """
    tables: dict[str, tuple[SetSpec, FileTable]] = {}
    reports = [_check_set(spec, benchmark, full, sample, tables) for spec in benchmark.sets()]
    by_name = {report.name: report for report in reports}
    for overlap in benchmark_overlaps(benchmark, tables):
        by_name[overlap.ood_set].overlaps.append(str(overlap))
    return reports


def benchmark_overlaps(benchmark: Benchmark, tables: dict[str, tuple[SetSpec, FileTable]]) -> list[Overlap]:
    """The files an OOD set shares with the ID val or test set, from the sets' file tables by name."""
    id_sets = [(s.name, s.source, t) for s, t in tables.values() if s.role in ("id_val", "id_test")]
    ood_sets = [(s.name, s.source, t) for s, t in tables.values() if s.is_ood]
    return find_overlaps(id_sets, ood_sets) if id_sets and ood_sets else []


def _hint(spec: SetSpec, benchmark: Benchmark) -> str:
    if spec.type == "torchvision":
        root, name = spec.params["root"], spec.params["dataset"]
        return (
            f"torchvision.datasets.{name}(root={str(root)!r}, download=True), "
            f"or set `download: true` on the set at {spec.source}"
        )
    if spec.type == "shapes":
        return "shapes sets are generated; no download needed"
    if spec.type == "arrays":
        return f"arrays read from {spec.params['file']} (built-in sets ship with the package: reinstall it)"
    if benchmark.hint:
        return benchmark.hint
    if spec.type == "imglist":
        return f"check {spec.params['list']}: its paths are read relative to {spec.params['images']}"
    return f"check the image folder {spec.params['path']}"


def _check_set(
    spec: SetSpec,
    benchmark: Benchmark,
    full: bool,
    sample: int,
    tables: dict[str, tuple[SetSpec, FileTable]],
) -> SetReport:
    report = SetReport(
        name=spec.name, role=spec.role, type=spec.type, hint=_hint(spec, benchmark), source=spec.source
    )
    try:
        check_root(spec, benchmark)
        if spec.type in ("imglist", "folder"):
            tables[spec.name] = (spec, _check_files(spec, benchmark, report, full, sample))
        elif spec.type == "torchvision":
            _check_torchvision(spec, benchmark, report, full, sample)
        elif spec.type == "arrays":
            arrays = _array_source(spec, benchmark)  # checksum, dtypes, shapes and ID labels checked
            report.count = 0 if arrays is None else len(arrays[0])
        else:
            images, _ = generate_shapes(spec)
            report.count = len(subset_indices(spec, len(images)))  # generated: nothing to decode
    except (OSError, ValueError, ImportError) as error:  # OSError: also a list we may not read
        report.error = str(error)
    return report


def _sample_indices(count: int, full: bool, sample: int) -> np.ndarray:
    if full or count <= sample:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, sample).round().astype(np.int64))


def _check_files(
    spec: SetSpec, benchmark: Benchmark, report: SetReport, full: bool, sample: int
) -> FileTable:
    num_classes = None if spec.is_ood else benchmark.list_classes
    if spec.type == "imglist":
        table, problems = read_imglist(
            spec.params["list"], spec.params["images"], num_classes=num_classes, source=spec.source
        )
        table, problems = list_subset(spec, table, problems)
        table = keep_classes(spec, table, benchmark.list_classes)
        report.bad_lines = len(problems)
        report.bad_line_examples = [str(p) for p in problems[:FIRST_FEW]]
    else:
        table = read_folder(
            spec.params["path"],
            num_classes=num_classes,
            class_names=benchmark.class_names,
            classes=spec.params["classes"],
            source=spec.source,
        )
        table = table.select(subset_indices(spec, len(table)))
    report.count = len(table)
    missing = find_missing(table)
    report.missing = len(missing)
    report.missing_examples = [
        f"{table.origin(i)}: {describe_path(table.paths[i])}" for i in missing[:FIRST_FEW]
    ]
    present = table.select(np.setdiff1d(np.arange(len(table)), missing)) if missing else table
    _check_decoding(present, report, full, sample)
    return present


def _check_decoding(table: FileTable, report: SetReport, full: bool, sample: int) -> None:
    indices = _sample_indices(len(table), full, sample)

    def try_decode(index: int) -> str | None:
        try:
            decode_rgb(table.paths[index], table.origin(index))
        except (ImageDecodeError, FileNotFoundError) as error:
            return str(error)
        return None

    failures = [f for f in map_threads(try_decode, indices) if f is not None]
    report.checked = len(indices)
    report.undecodable = len(failures)
    report.undecodable_examples = failures[:FIRST_FEW]


def _check_torchvision(
    spec: SetSpec, benchmark: Benchmark, report: SetReport, full: bool, sample: int
) -> None:
    dataset = open_torchvision(spec)
    indices = subset_indices(spec, len(dataset))
    report.count = len(indices)
    if not spec.is_ood:
        labels = _torchvision_labels(dataset)
        if labels is not None:
            labels = labels[indices]
            bad = np.flatnonzero((labels < 0) | (labels >= benchmark.num_classes))
            report.bad_lines = len(bad)
            report.bad_line_examples = [
                f"item {int(i)}: label {int(labels[i])} outside 0..{benchmark.num_classes - 1}"
                for i in bad[:FIRST_FEW]
            ]
    failures = []
    chosen = indices[_sample_indices(len(indices), full, sample)]
    for index in chosen:
        try:
            dataset[int(index)]
        except FileNotFoundError as error:
            report.missing += 1
            report.missing_examples.append(str(error))
        except DECODE_ERRORS as error:
            failures.append(f"item {int(index)}: {error}")
    report.checked = len(chosen)
    report.undecodable = len(failures)
    report.undecodable_examples = failures[:FIRST_FEW]
