"""One row of a results table: a detector's metrics on one OOD set (or a group's mean) in one run.

Why a declared type: rows travel from the evaluation through results.csv/results.json to the
leaderboard, the report, the page and every export. As plain ``dict[str, object]`` each reader
had to guess a column's type (and silence the type checker); ``ResultRow`` names every column
with its type once, and the CSV's column order is this declaration's order (``RESULT_COLUMNS``).
It is a ``TypedDict``, so a row is still the dict that ``csv.DictWriter`` and ``json`` write:
nothing on disk changes. ``total=False`` because a row is completed in steps (the evaluation
gives the metrics, the run adds benchmark, network and seed) and older CSVs lack the optional
columns.
"""

from __future__ import annotations

from typing import TypedDict


class ResultRow(TypedDict, total=False):
    """The columns of results.csv, in order. Metrics are fractions in [0, 1] (the tables print
    percent); ``fpr95`` follows ``fpr_convention``, ``fpr95_paper``/``fpr95_openood`` give both."""

    benchmark: str
    network: str
    seed: int
    detector: str
    detector_network: str  # classifier, dfb or classifier+dfb: which network's outputs it read
    dataset: str  # an OOD set's name, or <group>_mean
    group: str  # near, far, or <group>_mean
    auroc: float
    aupr_in: float
    aupr_out: float
    fpr95: float
    fpr_convention: str  # paper or openood
    id_accuracy: float
    hyperparameters: str  # the searched values as JSON, empty when nothing was searched
    aupr_in_trapezoid: float
    aupr_out_trapezoid: float
    fpr95_paper: float
    fpr95_openood: float


RESULT_COLUMNS: tuple[str, ...] = tuple(ResultRow.__annotations__)


class SeedMeanRow(ResultRow, total=False):
    """A row averaged over seeds (:func:`harness.leaderboard.aggregate`): each metric is the mean,
    ``<metric>_std`` the sample standard deviation (0 for one seed), None where a run lacks it."""

    seeds: int
    auroc_std: float | None
    aupr_in_std: float | None
    aupr_out_std: float | None
    fpr95_std: float | None
    id_accuracy_std: float | None
    aupr_in_trapezoid_std: float | None
    aupr_out_trapezoid_std: float | None
    fpr95_paper_std: float | None
    fpr95_openood_std: float | None
