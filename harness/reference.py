"""Published numbers (the DFB paper's tables, OpenOOD v1.5's leaderboard) as data, and honest comparisons.

The numbers live in ``configs/reference/*.yaml``, copied from the sources together with the
conventions that define them: which FPR@95, which AUPR, which network and image size, how many
seeds. A bare "ours 93.1 vs theirs 93.8" invites the reader to compare numbers that measure
different things (the two FPR@95 conventions can differ by tens of points), so :func:`compare`
returns every difference together with a list of the reasons it may not be like for like, and
:func:`comparison_table` prints those reasons under the table instead of dropping them.

Values are stored in percent, as printed, so the files can be checked against the sources by eye;
they are converted to fractions in [0, 1] on loading, the unit of our results.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from dfb_ood.harness.config import config_names, configs_root, load_config, load_yaml
from dfb_ood.harness.metrics import FPR_CONVENTIONS, METRIC_NAMES
from dfb_ood.harness.names import name_problem
from dfb_ood.postprocessors import registry
from rich.table import Table

__all__ = [
    "Reference",
    "ReferenceEntry",
    "available_references",
    "compare",
    "comparison_table",
    "describe_reference_scope",
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
        raise ValueError(f"no reference named {name!r}; known: {', '.join(available_references())}")
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
        raise ValueError(f"{self.path}: {key}: {problem}")

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
# Comparison
# --------------------------------------------------------------------------------------------------


def _merge_seeds(rows: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Our rows, one per (benchmark, network, detector, dataset, convention), seeds averaged.

    A caller may pass one run, several seeds' raw rows, or rows already aggregated (with ``seeds``);
    all three end up as one mean per key with the number of seeds behind it, weighted accordingly.
    """
    merged: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = (
            str(row.get("benchmark", "")),
            str(row.get("network", "")),
            str(row.get("detector", "")),
            str(row.get("dataset", "")),
            str(row.get("fpr_convention", "")),
        )
        weight = int(row.get("seeds") or 1)
        target = merged.get(key)
        if target is None:
            target = merged[key] = {**row, "seeds": 0, "_sums": {}}
        for metric in (*METRIC_NAMES, "id_accuracy"):
            value = _number(row.get(metric))
            if value is not None:
                total, count = target["_sums"].get(metric, (0.0, 0))
                target["_sums"][metric] = (total + weight * value, count + weight)
        target["seeds"] += weight
    for target in merged.values():
        for metric, (total, count) in target.pop("_sums").items():
            target[metric] = total / count
    return merged


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _our_sets(merged: Mapping[tuple, Mapping[str, Any]]) -> dict[tuple, dict[str, set[str]]]:
    """Per (benchmark, network, detector, convention): the OOD sets our rows hold, by group."""
    found: dict[tuple, dict[str, set[str]]] = {}
    for (bench, net, det, dataset, conv), row in merged.items():
        if dataset.endswith("_mean"):
            continue
        group = str(row.get("group") or "")
        if group not in ("near", "far"):
            group = "near" if dataset in _expected_sets(bench).get("near_mean", frozenset()) else "far"
        found.setdefault((bench, net, det, conv), {}).setdefault(group, set()).add(dataset)
    return found


@cache
def _expected_sets(benchmark: str) -> dict[str, frozenset[str]]:
    """The OOD sets each of our mean rows stands for on a benchmark (none for an unknown benchmark).

    Cached: it is asked once per result row, and the shipped configs do not change during a run.
    """
    if benchmark not in config_names("benchmarks"):
        return {}
    ood = load_config("benchmarks", benchmark).get("ood") or {}
    near, far = frozenset((ood.get("near") or {}).keys()), frozenset((ood.get("far") or {}).keys())
    return {"near_mean": near, "far_mean": far, "all_mean": near | far}


def _common_caveats(
    reference: Reference, network: str, seeds: int, run_info: Mapping[str, Any] | None
) -> list[str]:
    """Caveats that hold for every number of one of our (benchmark, network) runs."""
    info = dict(run_info or {})
    caveats = []
    ours_net = str(network or info.get("network") or "")
    theirs = f"theirs {reference.network} ({reference.network_config})"
    if not ours_net:
        caveats.append(f"network not recorded for our run; {theirs}")
    elif ours_net != reference.network_config:
        caveats.append(f"network differs: ours {ours_net}, {theirs}")
    size = info.get("eval_size")
    if size is None:
        caveats.append(f"image size not checked (no eval_size for our run); theirs {reference.image_size} px")
    elif int(size) != reference.image_size:
        caveats.append(f"image size differs: ours {int(size)} px, theirs {reference.image_size} px")
    ours_seeds = int(info.get("seeds") or seeds)
    if reference.seeds is None:
        caveats.append(f"number of seeds: ours {ours_seeds}, theirs not stated")
    elif ours_seeds != reference.seeds:
        caveats.append(f"number of seeds differs: ours {ours_seeds}, theirs {reference.seeds}")
    return caveats


def compare_runs(
    name: str, rows: list[dict[str, object]], run_dirs: Sequence[Path]
) -> tuple[Reference, list[dict[str, Any]]]:
    """Runs' rows matched to the published table ``name``, with every reason they may not compare.

    The network and image size behind the caveats are read from the first run's ``run.json``;
    the FPR convention and the number of seeds from the rows. ``harness leaderboard
    --reference`` and its ``--html`` page both compare through here.
    """
    from dfb_ood.harness.io import read_json

    reference = load_reference(name)
    first = Path(run_dirs[0]) / "run.json"
    record = read_json(first) if first.is_file() else {}
    run_info = {
        "network": record.get("network"),
        "eval_size": record.get("eval_size"),
        "fpr_convention": rows[0]["fpr_convention"] if rows else None,
        "seeds": len({row["seed"] for row in rows}),
    }
    return reference, compare(rows, reference, run_info=run_info)


def compare(
    rows: Sequence[Mapping[str, Any]],
    reference: Reference,
    run_info: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Our result rows against a reference: one row per matched (detector, dataset, metric).

    ``rows`` are results.csv rows (benchmark, network, detector, dataset, metrics as fractions,
    fpr_convention, ...). They match a reference entry by benchmark + detector + dataset: our per-set
    rows against their per-set numbers, our ``near_mean`` / ``far_mean`` against theirs, and our
    ``all_mean`` against the paper's Average (both plain means over the same four OOD sets of
    cifar10_dfb / cifar100_dfb; the loader checks the sets agree). ID accuracy matches by the network
    a row's detector reads (``detector_network``). ``run_info`` (optional: network, eval_size,
    fpr_convention, seeds) describes our run where the rows do not.

    Each output row carries ``caveats``: every known reason the two numbers are not like for like
    (FPR@95 convention, network, image size, seeds, protocol, AUPR definition). Numbers are never
    hidden for being incomparable; they are flagged. No match at all gives an empty list.
    """
    merged = _merge_seeds(rows)
    our_sets = _our_sets(merged)
    info = dict(run_info or {})
    by_key: dict[tuple, list[dict[str, Any]]] = {}
    for (bench, _net, det, dataset, _conv), row in merged.items():
        by_key.setdefault((bench, det, dataset), []).append(row)
    expected = {b: _expected_sets(b) for b in reference.benchmarks}
    out: list[dict[str, Any]] = []
    for entry in reference.entries:
        if entry.dataset == ID_DATASET or entry.detector is None:
            continue
        for row in by_key.get((entry.benchmark, entry.detector, entry.our_dataset), []):
            network, recorded = str(row.get("network", "")), str(row.get("fpr_convention", ""))
            convention = recorded or str(info.get("fpr_convention") or "")
            shared = _common_caveats(reference, network, int(row["seeds"]), info)
            held = our_sets.get((entry.benchmark, network, entry.detector, recorded), {})
            protocol = _protocol_caveats(reference, entry, held, expected[entry.benchmark])
            for metric, theirs in entry.metrics.items():
                ours = _number(row.get(metric))
                if ours is None:
                    continue
                caveats = []
                if metric == "fpr95" and convention != reference.fpr_convention:
                    mine = CONVENTION_TEXT.get(convention, convention or "not recorded")
                    theirs_text = CONVENTION_TEXT[reference.fpr_convention]
                    caveats.append(f"FPR@95 convention differs: ours {mine}, theirs {theirs_text}")
                if metric.startswith("aupr") and reference.aupr_caveat:
                    caveats.append(reference.aupr_caveat)
                out.append(
                    _comparison_row(reference, entry, row, metric, ours, theirs, caveats + shared + protocol)
                )
    out += _compare_accuracy(merged, reference, info)
    return out


def _protocol_caveats(
    reference: Reference,
    entry: ReferenceEntry,
    ours: Mapping[str, set[str]],
    expected: Mapping[str, frozenset[str]],
) -> list[str]:
    caveats = []
    note = reference.method_notes.get(entry.their_name)
    if note:
        caveats.append(f"benchmark protocol differs: {note}")
    want = expected.get(entry.our_dataset)
    if want is not None and ours:
        # Our mean is over the sets our rows hold; flag when they are not the sets the mean stands for.
        if entry.our_dataset == "all_mean":
            have = set().union(*ours.values())
        else:
            have = set(ours.get(entry.our_dataset.removesuffix("_mean"), set()))
        if have != want:
            caveats.append(
                f"benchmark protocol differs: our {entry.our_dataset} on {entry.benchmark} is over "
                f"{', '.join(sorted(have)) or 'no sets'}, theirs over {', '.join(sorted(want))}"
            )
    return caveats


def _compare_accuracy(
    merged: Mapping[tuple, Mapping[str, Any]], reference: Reference, info: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """ID accuracy: per (benchmark, network), the first row whose detector reads the compared network."""
    first: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for (bench, net, _det, _dataset, _conv), row in merged.items():
        role = str(row.get("detector_network", ""))
        if role in ID_NETWORKS and _number(row.get("id_accuracy")) is not None:
            first.setdefault((bench, net, role), row)
    out = []
    for entry in reference.entries:
        if entry.dataset != ID_DATASET:
            continue
        for (bench, net, role), row in first.items():
            if bench != entry.benchmark or role != entry.network:
                continue
            caveats = _common_caveats(reference, net, int(row["seeds"]), info)
            ours, theirs = float(row["id_accuracy"]), entry.metrics["id_accuracy"]
            out.append(_comparison_row(reference, entry, row, "id_accuracy", ours, theirs, caveats))
    return out


def _comparison_row(
    reference: Reference,
    entry: ReferenceEntry,
    row: Mapping[str, Any],
    metric: str,
    ours: float,
    theirs: float,
    caveats: list[str],
) -> dict[str, Any]:
    return {
        "reference": reference.name,
        "table": entry.table,
        "benchmark": entry.benchmark,
        "network": str(row.get("network", "")),
        "detector": entry.detector if entry.detector is not None else NETWORK_TEXT[str(entry.network)],
        "their_name": entry.their_name,
        "dataset": entry.our_dataset,
        "their_dataset": entry.their_dataset,
        "metric": metric,
        "ours": ours,
        "theirs": theirs,
        "difference": ours - theirs,
        "fpr_convention": str(row.get("fpr_convention", "")) if metric == "fpr95" else None,
        "their_fpr_convention": reference.fpr_convention if metric == "fpr95" else None,
        "seeds": int(row.get("seeds") or 1),
        "caveats": list(dict.fromkeys(caveats)),
    }


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
