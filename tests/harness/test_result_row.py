"""ResultRow is the one declaration of results.csv's columns; the metric names must sit in it."""

from __future__ import annotations

from dfb_ood.harness.leaderboard import CSV_COLUMNS, aggregate
from dfb_ood.harness.metrics import METRIC_NAMES, VARIANT_NAMES
from dfb_ood.harness.result_row import RESULT_COLUMNS, ResultRow, SeedMeanRow


def test_the_csv_columns_are_the_declared_row_in_order():
    assert CSV_COLUMNS == RESULT_COLUMNS
    assert RESULT_COLUMNS[:3] == ("benchmark", "network", "seed")
    position = {name: i for i, name in enumerate(RESULT_COLUMNS)}
    for names in (METRIC_NAMES, VARIANT_NAMES):
        assert all(name in position for name in names), names
        assert [position[name] for name in names] == sorted(position[name] for name in names)


def test_every_averaged_metric_has_its_declared_std_column():
    averaged = (*METRIC_NAMES, "id_accuracy", *VARIANT_NAMES)
    declared = set(SeedMeanRow.__annotations__)
    assert {f"{name}_std" for name in averaged} <= declared and "seeds" in declared


def test_aggregate_gives_mean_and_sample_std_over_seeds():
    def row(seed: int, auroc: float) -> ResultRow:
        return ResultRow(
            benchmark="b", network="n", seed=seed, detector="msp", detector_network="classifier",
            dataset="d", group="near", auroc=auroc, aupr_in=0.5, aupr_out=0.5, fpr95=0.5,
            fpr_convention="paper", id_accuracy=0.9, hyperparameters="", aupr_in_trapezoid=0.5,
            aupr_out_trapezoid=0.5, fpr95_paper=0.5, fpr95_openood=0.5,
        )  # fmt: skip

    (merged,) = aggregate([row(0, 0.80), row(1, 0.90), row(2, 0.85)])
    assert merged["seeds"] == 3
    assert abs(merged["auroc"] - 0.85) < 1e-12
    assert abs(merged["auroc_std"] - 0.05) < 1e-12  # sqrt(((-.05)^2 + .05^2 + 0) / 2)
    assert merged["fpr95_std"] == 0.0
