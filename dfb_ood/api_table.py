"""The Python API's result table: detectors fitted and scored on outputs, metrics as OpenOOD shows them.

Why its own module: the CLI's results rows hold fractions and many columns; a Python user wants
OpenOOD v1.5's table (one row per detector and OOD set plus near/far means, metrics in percent)
as a pandas DataFrame. The rows come from the same evaluation the CLI runs
(:func:`dfb_ood.harness.evaluate.evaluate_detectors`), so the numbers are the CLI's. Without
pandas the same table is a list of dicts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dfb_ood.errors import InputError, UnknownNameError
from dfb_ood.harness.detector_spec import CLASSIFIER
from dfb_ood.harness.evaluate import SetOutputs, evaluate_detectors, expand_detectors
from dfb_ood.harness.result_row import ResultRow
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.base import Outputs

#: The table's metric columns (percent) and the results-row field each one shows.
METRIC_COLUMNS: dict[str, str] = {
    "AUROC": "auroc",
    "AUPR_IN": "aupr_in",
    "AUPR_OUT": "aupr_out",
    "FPR@95": "fpr95",
    "ACC": "id_accuracy",
}
#: The table's leading columns, copied from the rows as they are.
KEY_COLUMNS: tuple[str, ...] = ("detector", "detector_network", "dataset", "group")


def table_records(rows: Iterable[ResultRow]) -> list[dict[str, Any]]:
    """The result rows as OpenOOD-style records: names, then metrics in percent.

    Args:
        rows: result rows, as ``results.csv`` holds them (metrics as fractions).

    Returns:
        One dict per row: ``seed`` when the rows have one, :data:`KEY_COLUMNS`, ``fpr_convention``,
        then :data:`METRIC_COLUMNS` as 100 x the row's fraction.
    """
    records = []
    for row in rows:
        record: dict[str, Any] = {"seed": row["seed"]} if "seed" in row else {}
        record.update({key: row[key] for key in KEY_COLUMNS})  # type: ignore[literal-required]
        record.update({column: 100.0 * float(row[field]) for column, field in METRIC_COLUMNS.items()})  # type: ignore[literal-required]
        record["fpr_convention"] = row["fpr_convention"]
        records.append(record)
    return records


def results_table(rows: Iterable[ResultRow]) -> Any:
    """The result rows as OpenOOD v1.5's table: a pandas DataFrame, or records without pandas.

    Args:
        rows: result rows (fractions), from the evaluation or a run's ``results.csv``.

    Returns:
        A ``pandas.DataFrame`` with the columns of :func:`table_records` when pandas is
        installed, else the list of dicts itself.
    """
    records = table_records(rows)
    try:
        import pandas
    except ImportError:
        return records
    return pandas.DataFrame.from_records(records)


def _ood_sets(ood: Mapping[str, Any]) -> tuple[dict[str, Outputs], dict[str, str]]:
    """``{name: Outputs}`` or ``{"near"|"far": {name: Outputs}}`` -> (sets, set -> group)."""
    sets: dict[str, Outputs] = {}
    groups: dict[str, str] = {}
    for key, value in ood.items():
        if isinstance(value, Outputs):
            sets[key], groups[key] = value, "far"
        elif isinstance(value, Mapping) and key in ("near", "far"):
            for name, outputs in value.items():
                if not isinstance(outputs, Outputs):
                    raise InputError(f"ood[{key!r}][{name!r}] must be Outputs, got {type(outputs).__name__}")
                if name in sets:
                    raise InputError(f"OOD set {name!r} is given twice; give each set one name")
                sets[name], groups[name] = outputs, key
        else:
            raise InputError(
                f"ood[{key!r}] must be Outputs, or a group 'near'/'far' mapping set names to Outputs"
            )
    if not sets:
        raise InputError("no OOD sets given: pass ood={'name': outputs} or {'near': {...}, 'far': {...}}")
    return sets, groups


def detector_names(detectors: str | Sequence[str]) -> list[str]:
    """Detector names (a comma list or a sequence, aliases allowed) checked and made canonical.

    Args:
        detectors: ``"msp,vim"``, ``["msp", "ebo_dfb"]`` or ``"all"``.

    Returns:
        The canonical names, each once, in the order given.

    Raises:
        UnknownNameError: a name is not registered; the message suggests the closest known names.
    """
    requested = [detectors] if isinstance(detectors, str) else list(detectors)
    known = registry.available(include_aliases=True)
    for item in requested:
        for raw in str(item).split(","):
            name = raw.strip().lower()
            if not name or name == "all":
                continue
            try:
                registry.canonical_name(name)
            except InputError:
                close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise UnknownNameError(
                    f"unknown detector {raw.strip()!r}{hint} (`harness list detectors` shows them all)"
                ) from None
    return expand_detectors(requested)


def evaluate_outputs(
    detectors: str | Sequence[str],
    train: Outputs,
    test: Outputs,
    ood: Mapping[str, Any],
    *,
    val: Outputs | None = None,
    ood_val: Outputs | None = None,
    fpr_convention: str = "paper",
) -> Any:
    """Fit the named detectors on ID outputs, score ID test and every OOD set, return the table.

    The evaluation is the CLI's own (:func:`dfb_ood.harness.evaluate.evaluate_detectors`): each
    detector is fitted on ``train`` (with ``val`` / ``ood_val`` when it uses them), and a higher
    score means more in-distribution. Detectors that read a DFB network's outputs (``*_dfb``,
    ``*_dfbz``, ``bg``) or need their own network pass (ODIN with noise) are for
    :class:`dfb_ood.api.Evaluator`, which runs the whole pipeline.

    Args:
        detectors: names (``"msp"``, ``"vim"``, ``"msp,energy"``, ``"all"`` is refused here).
        train: ID training outputs the detectors fit on.
        test: ID test outputs (with labels, for the ``ACC`` column).
        ood: OOD test outputs by set name, or grouped ``{"near": {...}, "far": {...}}`` (ungrouped sets
            count as far).
        val: ID validation outputs, optional.
        ood_val: OOD validation outputs, optional.
        fpr_convention: ``"paper"`` (FPR of OOD samples at 95% TPR of ID, the DFB paper's) or
            ``"openood"`` (OpenOOD v1.5's: OOD is the positive class, the fraction of ID flagged
            at 95% of OOD caught); both are defined in :func:`dfb_ood.harness.metrics.fpr_at_tpr`.

    Returns:
        :func:`results_table` of one row per detector and OOD set, plus ``near_mean``,
        ``far_mean`` and ``all_mean`` rows.

    Raises:
        UnknownNameError: a detector name is not registered (the message lists the known ones).
        InputError: the outputs do not fit together, ``test`` has no labels, or a detector needs a
            DFB network or its own pass.
    """
    names = detector_names(detectors)
    if test.labels is None:
        raise InputError("test outputs need labels for the ID accuracy; give a loader of (images, labels)")
    sets, groups = _ood_sets(ood)
    sets_of = SetOutputs(train=train, test=test, val=val, ood_val=ood_val, ood=sets, groups=groups)
    outputs = {CLASSIFIER: sets_of}
    rows, _reports = evaluate_detectors(names, outputs, fpr_convention=fpr_convention)
    return results_table(rows)
