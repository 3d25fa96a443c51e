"""Hyper-parameter search reads ID-train, ID-val and OOD-val only, and picks the best grid point."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dfb_ood.harness.evaluate import SetOutputs
from dfb_ood.harness.search import search_detector, validation_view
from dfb_ood.postprocessors.base import Outputs


def make_sets(seed: int, poison_test: bool = False) -> SetOutputs:
    rng = np.random.default_rng(seed)
    k, d = 4, 40
    weight = rng.normal(size=(k + 1, d))
    bias = rng.normal(size=k + 1)
    centres = rng.normal(size=(k, d)) * 3

    def make(n: int, ood: bool) -> Outputs:
        labels = rng.integers(0, k, n)
        features = np.abs(rng.normal(size=(n, d)) * 4 if ood else centres[labels] + rng.normal(size=(n, d)))
        labels = np.full(n, -1) if ood else labels
        logits = features @ weight.T + bias
        return Outputs(
            logits=logits, features=features, labels=labels, weight=weight, bias=bias, background=True
        )

    train, test, val, ood_val = make(200, False), make(60, False), make(60, False), make(50, True)
    sets = SetOutputs(
        train=train, test=test, val=val, ood_val=ood_val, ood={"far": make(50, True)}, groups={}
    )
    if poison_test:
        garbage = np.random.default_rng(99).normal(size=sets.test.logits.shape) * 1e3
        sets.test = replace(sets.test, logits=garbage, features=np.abs(garbage[:, :1].repeat(40, axis=1)))
        sets.ood = {"far": replace(sets.ood["far"], logits=-garbage[:50])}
    return sets


@pytest.mark.parametrize("name", ["knn_dfbz", "vim_dfb", "react", "gen_dfb"])
def test_search_never_reads_test_sets(name):
    dfb = "_dfb" in name
    prepare = (lambda sets: sets) if dfb else strip_background
    network = "dfb" if dfb else "classifier"
    clean = search_detector(name, prepare(make_sets(0)), network=network)
    poisoned = search_detector(name, prepare(make_sets(0, poison_test=True)), network=network)
    assert clean.chosen == poisoned.chosen and clean.best_auroc == poisoned.best_auroc
    valid = [t["auroc"] for t in clean.tried if t["auroc"] is not None]
    assert clean.best_auroc == max(valid) and len(clean.tried) > 1


def strip_background(sets: SetOutputs) -> SetOutputs:
    def strip(o: Outputs) -> Outputs:
        return o.split_background()[0]

    return SetOutputs(train=strip(sets.train), test=strip(sets.test), val=strip(sets.val),
                      ood_val=strip(sets.ood_val), ood={}, groups={})  # fmt: skip


def test_invalid_grid_points_are_recorded_not_dropped():
    result = search_detector("vim", strip_background(make_sets(1)), network="classifier")
    invalid = [t for t in result.tried if t["auroc"] is None]
    assert invalid and all("dim" in t["invalid"] for t in invalid)  # 40-d features: dims >= 40 are invalid
    assert {t["dim"] for t in result.tried if t["auroc"] is not None} == {16, 32}
    assert result.chosen["dim"] in (16, 32)


def test_perturbed_search_asks_for_validation_sets_only():
    sets = strip_background(make_sets(2))
    asked: list[str] = []

    def perturbed(detector, network, set_name):
        asked.append(set_name)
        return {"train": sets.train, "val": sets.val, "ood_val": sets.ood_val}[set_name]

    result = search_detector("odin", sets, network="classifier", perturbed=perturbed)
    assert set(asked) == {"val", "ood_val"}  # ODIN learns nothing from train, and never sees test
    assert set(result.chosen) == {"temperature", "noise"}


def test_search_needs_validation_sets():
    sets = make_sets(3)
    sets.ood_val = None
    with pytest.raises(ValueError, match="needs ID-val and OOD-val"):
        validation_view(sets)
