"""The reference YAML's schema: published numbers as data, validated strictly on loading.

The numbers live in ``configs/reference/*.yaml``, copied from the sources together with the
conventions that define them: which FPR@95, which AUPR, which network and image size, how many
seeds. Loading checks every key against our own configs (benchmark set names, detector names,
metric names), because these files are the ground truth of every comparison and a typo would
silently drop rows. Matching our rows against them is :mod:`dfb_ood.harness.reference_compare`;
printing the comparison is :mod:`dfb_ood.harness.reference`.

Values are stored in percent, as printed, so the files can be checked against the sources by eye;
they are converted to fractions in [0, 1] on loading, the unit of our results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfb_ood.errors import InputError
from dfb_ood.harness.config import config_names, configs_root, load_config, load_yaml
from dfb_ood.harness.metrics import FPR_CONVENTIONS, METRIC_NAMES
from dfb_ood.harness.names import name_problem
from dfb_ood.postprocessors import registry

__all__ = [
    "CONVENTION_TEXT",
    "ID_DATASET",
    "ID_NETWORKS",
    "MEAN_DATASETS",
    "METRIC_LABELS",
    "NETWORK_TEXT",
    "Reference",
    "ReferenceEntry",
    "available_references",
    "load_reference",
    "reference_from_file",
]

KIND = "reference"
#: Their mean columns and the dataset name of our row that holds the same mean.
MEAN_DATASETS: dict[str, str] = {"near_mean": "near_mean", "far_mean": "far_mean", "average": "all_mean"}
#: The dataset name of ID-accuracy entries (not an OOD set: the ID test set itself).
ID_DATASET = "id_test"
#: Which of our networks an ID-accuracy entry describes (our rows' ``detector_network``).
ID_NETWORKS = ("classifier", "dfb")
NETWORK_TEXT = {"classifier": "classifier (K)", "dfb": "DFB net (K+1)"}
METRIC_LABELS = {
    "auroc": "AUROC",
    "aupr_in": "AUPR-In",
    "aupr_out": "AUPR-Out",
    "fpr95": "FPR@95",
    "id_accuracy": "ID acc",
}
CONVENTION_TEXT = {
    "paper": "OOD accepted at 95% ID TPR (paper/Hendrycks)",
    "openood": "ID rejected at 95% OOD TPR (OpenOOD v1.5)",
}
_UNITS = {"percent": 100.0, "fraction": 1.0}
_REQUIRED = (
    "name",
    "source",
    "network",
    "network_config",
    "image_size",
    "fpr_convention",
    "aupr",
    "seeds",
    "protocol",
    "unit",
    "methods",
    "tables",
)


@dataclass(frozen=True)
class ReferenceEntry:
    """One published row: a method on one benchmark and one OOD set (or mean), metric -> fraction.

    ``detector`` is our detector name, or ``None`` where we have no such detector (kept so that the
    table stays complete and the scope message can say so). ``dataset`` is our OOD set name,
    ``near_mean`` / ``far_mean``, ``average`` (their mean over all their sets), or ``id_test`` for
    ID accuracy; ``network`` is set only for ID accuracy, naming which of our networks it describes.
    """

    table: str
    benchmark: str
    detector: str | None
    their_name: str
    dataset: str
    their_dataset: str
    metrics: dict[str, float]
    network: str | None = None

    @property
    def our_dataset(self) -> str:
        """The ``dataset`` value of our result row that holds the same quantity."""
        return MEAN_DATASETS.get(self.dataset, self.dataset)


@dataclass(frozen=True)
class Reference:
    """A published set of numbers with everything needed to judge whether ours compare to them."""

    name: str
    source: str
    network: str
    network_config: str
    image_size: int
    fpr_convention: str
    aupr_note: str
    aupr_caveat: str | None
    seeds: int | None
    protocol: str
    methods: dict[str, str | None]
    entries: list[ReferenceEntry]
    titles: dict[str, str] = field(default_factory=dict)
    method_notes: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def benchmarks(self) -> list[str]:
        """Our benchmark names the reference has numbers for, in file order."""
        return list(dict.fromkeys(e.benchmark for e in self.entries))

    @property
    def detectors(self) -> list[str]:
        """Our detector names the reference has numbers for, in file order."""
        return list(dict.fromkeys(e.detector for e in self.entries if e.detector is not None))

    @property
    def unmatched_methods(self) -> list[str]:
        """Their methods that no detector of ours implements (their numbers are kept, never compared)."""
        return [name for name, ours in self.methods.items() if ours is None]


# --------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------


def available_references() -> list[str]:
    """Names of the shipped references (file stems under ``configs/reference/``)."""
    return config_names(KIND)


def load_reference(name: str) -> Reference:
    """A shipped reference by name, e.g. ``load_reference("dfb-paper")``, validated."""
    path = configs_root() / KIND / f"{name}.yaml"
    if name_problem(name) is not None or not path.is_file():  # a plain name: never "../x"
        raise InputError(f"no reference named {name!r}; known: {', '.join(available_references())}")
    return reference_from_file(path)


def reference_from_file(path: str | Path) -> Reference:
    """Read and validate one reference YAML; every error names the file and the offending key.

    Validation is strict because these files are the ground truth of every comparison: a typo in a
    method or set name would silently drop rows, and a value outside [0, 100] would be a wrong fact.
    """
    path = Path(path)
    data = load_yaml(path)
    checker = _Checker(path)
    for key in _REQUIRED:
        checker.require(data, key, key)
    name = checker.string(data["name"], "name")
    if name != path.stem:
        checker.fail("name", f"must equal the file name {path.stem!r}, got {name!r}")
    unit = checker.string(data["unit"], "unit")
    if unit not in _UNITS:
        checker.fail("unit", f"must be one of {', '.join(_UNITS)}, got {unit!r}")
    convention = checker.string(data["fpr_convention"], "fpr_convention")
    if convention not in FPR_CONVENTIONS:
        checker.fail("fpr_convention", f"must be one of {', '.join(FPR_CONVENTIONS)}, got {convention!r}")
    network_config = checker.string(data["network_config"], "network_config")
    if network_config not in config_names("networks"):
        checker.fail("network_config", f"no network config {network_config!r} in configs/networks/")
    image_size = checker.positive_int(data["image_size"], "image_size")
    seeds = None if data["seeds"] is None else checker.positive_int(data["seeds"], "seeds")
    aupr = checker.mapping(data["aupr"], "aupr")
    checker.require(aupr, "definition", "aupr.definition")
    aupr_caveat = aupr.get("caveat")
    methods = _methods(checker, data["methods"])
    notes = checker.mapping(data["method_notes"], "method_notes") if data.get("method_notes") else {}
    for method in notes:
        if method not in methods:
            checker.fail(f"method_notes.{method}", "is not one of the methods")
    entries: list[ReferenceEntry] = []
    titles: dict[str, str] = {}
    tables = data["tables"]
    if not isinstance(tables, list) or not tables:
        checker.fail("tables", "must be a non-empty list of tables")
    for index, table in enumerate(tables):
        entries += _table_entries(checker, table, f"tables[{index}]", methods, _UNITS[unit], titles)
    if data.get("id_accuracy") is not None:
        entries += _id_accuracy_entries(checker, data["id_accuracy"], _UNITS[unit], titles)
    return Reference(
        name=name,
        source=checker.string(data["source"], "source"),
        network=checker.string(data["network"], "network"),
        network_config=network_config,
        image_size=image_size,
        fpr_convention=convention,
        aupr_note=checker.string(aupr["definition"], "aupr.definition"),
        aupr_caveat=None if aupr_caveat is None else checker.string(aupr_caveat, "aupr.caveat"),
        seeds=seeds,
        protocol=checker.string(data["protocol"], "protocol"),
        methods=methods,
        entries=entries,
        titles=titles,
        method_notes={str(k): checker.string(v, f"method_notes.{k}") for k, v in notes.items()},
        path=path,
    )


class _Checker:
    """Raises ``ValueError("<file>: <key>: <problem>")`` so a bad file is fixed in one look."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> None:
        raise InputError(f"{self.path}: {key}: {problem}")

    def require(self, data: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in data:
            self.fail(where, "missing required key")
        return data[key]

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not value:
            self.fail(where, f"must be a non-empty mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def positive_int(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.fail(where, f"must be a positive integer, got {value!r}")
        return int(value)

    def value(self, raw: Any, where: str, scale: float) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            self.fail(where, f"must be a number, got {raw!r}")
        if not 0.0 <= raw <= scale:
            self.fail(where, f"value {raw!r} out of range [0, {scale:g}]")
        return float(raw) / scale


def _methods(checker: _Checker, raw: Any) -> dict[str, str | None]:
    methods: dict[str, str | None] = {}
    for their, ours in checker.mapping(raw, "methods").items():
        if ours is None:
            methods[their] = None
            continue
        ours = checker.string(ours, f"methods.{their}")
        try:
            canonical = registry.canonical_name(ours)
        except ValueError as error:
            checker.fail(f"methods.{their}", str(error))
        if canonical != ours:
            checker.fail(f"methods.{their}", f"use our canonical detector name {canonical!r}, not {ours!r}")
        methods[their] = ours
    return methods


def _benchmark_sets(checker: _Checker, benchmark: str, where: str) -> dict[str, list[str]]:
    """Our benchmark's OOD test sets by group, read from its config (the single source of set names)."""
    if benchmark not in config_names("benchmarks"):
        checker.fail(where, f"no benchmark config {benchmark!r} in configs/benchmarks/")
    ood = load_config("benchmarks", benchmark).get("ood") or {}
    return {group: list((ood.get(group) or {}).keys()) for group in ("near", "far")}


def _table_entries(
    checker: _Checker,
    raw: Any,
    where: str,
    methods: Mapping[str, str | None],
    scale: float,
    titles: dict[str, str],
) -> list[ReferenceEntry]:
    table = checker.mapping(raw, where)
    for key in ("id", "title", "benchmark", "metrics", "columns", "rows"):
        checker.require(table, key, f"{where}.{key}")
    table_id = checker.string(table["id"], f"{where}.id")
    if table_id in titles:
        checker.fail(f"{where}.id", f"duplicate table id {table_id!r}")
    titles[table_id] = checker.string(table["title"], f"{where}.title")
    benchmark = checker.string(table["benchmark"], f"{where}.benchmark")
    sets = _benchmark_sets(checker, benchmark, f"{where}.benchmark")
    metrics = table["metrics"]
    if not isinstance(metrics, list) or not metrics or len(set(metrics)) != len(metrics):
        checker.fail(f"{where}.metrics", f"must be a non-empty list of distinct metrics, got {metrics!r}")
    for metric in metrics:
        if metric not in METRIC_NAMES:
            checker.fail(f"{where}.metrics", f"unknown metric {metric!r}; ours are {', '.join(METRIC_NAMES)}")
    columns = {
        k: checker.string(v, f"{where}.columns.{k}")
        for k, v in checker.mapping(table["columns"], f"{where}.columns").items()
    }
    known = set(sets["near"]) | set(sets["far"])
    for header, dataset in columns.items():
        if dataset not in known and dataset not in MEAN_DATASETS:
            checker.fail(
                f"{where}.columns.{header}",
                f"{dataset!r} is neither an OOD set of {benchmark} ({', '.join(sorted(known))}) "
                f"nor one of {', '.join(MEAN_DATASETS)}",
            )
    per_set = {d for d in columns.values() if d not in MEAN_DATASETS}
    if "average" in columns.values() and per_set != known:
        # "average" is compared with our all_mean, which is over every OOD set of the benchmark.
        checker.fail(
            f"{where}.columns",
            f"an average column must cover exactly {benchmark}'s OOD sets {sorted(known)}, "
            f"got {sorted(per_set)}",
        )
    entries = []
    for their_name, cells in checker.mapping(table["rows"], f"{where}.rows").items():
        if their_name not in methods:
            checker.fail(f"{where}.rows.{their_name}", "is not one of the methods (add it under methods:)")
        cells = checker.mapping(cells, f"{where}.rows.{their_name}")
        for header in cells:
            if header not in columns:
                checker.fail(f"{where}.rows.{their_name}.{header}", "is not one of the columns")
        for header, dataset in columns.items():
            key = f"{where}.rows.{their_name}.{header}"
            cell = checker.require(cells, header, key)
            values = cell if isinstance(cell, list) else [cell]
            if len(values) != len(metrics):
                checker.fail(key, f"expected {len(metrics)} values ({'/'.join(metrics)}), got {cell!r}")
            entries.append(
                ReferenceEntry(
                    table=table_id,
                    benchmark=benchmark,
                    detector=methods[their_name],
                    their_name=their_name,
                    dataset=dataset,
                    their_dataset=header,
                    metrics={m: checker.value(v, f"{key}.{m}", scale) for m, v in zip(metrics, values)},
                )
            )
    return entries


def _id_accuracy_entries(
    checker: _Checker, raw: Any, scale: float, titles: dict[str, str]
) -> list[ReferenceEntry]:
    where = "id_accuracy"
    section = checker.mapping(raw, where)
    for key in ("title", "networks", "columns", "rows"):
        checker.require(section, key, f"{where}.{key}")
    titles[where] = checker.string(section["title"], f"{where}.title")
    networks = checker.mapping(section["networks"], f"{where}.networks")
    for their, ours in networks.items():
        if ours not in ID_NETWORKS:
            checker.fail(
                f"{where}.networks.{their}", f"must be one of {', '.join(ID_NETWORKS)}, got {ours!r}"
            )
    columns = checker.mapping(section["columns"], f"{where}.columns")
    for header, benchmark in columns.items():
        _benchmark_sets(
            checker, checker.string(benchmark, f"{where}.columns.{header}"), f"{where}.columns.{header}"
        )
    entries = []
    for their_name, cells in checker.mapping(section["rows"], f"{where}.rows").items():
        if their_name not in networks:
            checker.fail(f"{where}.rows.{their_name}", "is not one of id_accuracy.networks")
        cells = checker.mapping(cells, f"{where}.rows.{their_name}")
        for header, benchmark in columns.items():
            key = f"{where}.rows.{their_name}.{header}"
            value = checker.value(checker.require(cells, header, key), key, scale)
            entries.append(
                ReferenceEntry(
                    table=where,
                    benchmark=benchmark,
                    detector=None,
                    their_name=their_name,
                    dataset=ID_DATASET,
                    their_dataset=header,
                    metrics={"id_accuracy": value},
                    network=networks[their_name],
                )
            )
    return entries
