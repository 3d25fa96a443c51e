"""Matching a run's result rows to published numbers, with every reason they may not compare.

A bare "ours 93.1 vs theirs 93.8" invites the reader to compare numbers that measure different
things (the two FPR@95 conventions can differ by tens of points), so :func:`compare` returns every
difference together with a list of the reasons it may not be like for like (convention, network,
image size, seeds, protocol, AUPR definition). The published side is a
:class:`~dfb_ood.harness.reference_schema.Reference`; printing the result is
:func:`dfb_ood.harness.reference.comparison_table`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from dfb_ood.harness.config import config_names, load_config
from dfb_ood.harness.metrics import METRIC_NAMES
from dfb_ood.harness.reference_schema import (
    CONVENTION_TEXT,
    ID_DATASET,
    ID_NETWORKS,
    NETWORK_TEXT,
    Reference,
    ReferenceEntry,
    load_reference,
)

__all__ = ["compare", "compare_runs"]


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
