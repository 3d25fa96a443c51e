"""Evaluation over cached outputs: which network each detector reads, the rows, the mean rows."""

from __future__ import annotations

import numpy as np
import pytest

from dfb_ood.harness.evaluate import (
    SetOutputs,
    default_detectors,
    evaluate_detectors,
    expand_detectors,
    network_of,
)
from dfb_ood.harness.metrics import auroc
from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.registry import create


def synthetic(seed: int, k: int = 3, background: bool = False, shift: float = 0.0) -> SetOutputs:
    rng = np.random.default_rng(seed)

    def make(n: int, ood: bool) -> Outputs:
        columns = k + int(background)
        logits = (
            rng.normal(size=(n, columns)) + (0.0 if ood else 2.0) * np.eye(columns)[rng.integers(0, k, n)]
        )
        if background:
            logits[:, k] += shift if not ood else -shift
        labels = np.full(n, -1) if ood else logits[:, :k].argmax(axis=1)
        return Outputs(logits=logits, labels=labels, background=background)

    ood = {"near_set": make(40, True), "far_set": make(45, True)}
    groups = {"near_set": "near", "far_set": "far"}
    return SetOutputs(
        train=make(80, False),
        test=make(50, False),
        val=make(40, False),
        ood_val=make(30, True),
        ood=ood,
        groups=groups,
    )


def test_expand_detectors_resolves_all_aliases_and_compare():
    assert expand_detectors(["ebo_dfb,msp"], compare=True) == ["energy", "energy_dfb", "msp"]
    assert "knn_dfbz" in expand_detectors(["all"])
    assert default_detectors()[-1] == "bg" and "vim_dfbz" in default_detectors()
    with pytest.raises(ValueError, match="unknown detector"):
        expand_detectors(["nope"])
    assert network_of("msp") == "classifier" and network_of("msp_dfb") == "dfb" and network_of("bg") == "dfb"


def test_rows_and_means_match_direct_metrics():
    outputs = {"classifier": synthetic(0), "dfb": synthetic(1, background=True, shift=2.0)}
    rows, reports = evaluate_detectors(["msp", "bg"], outputs)
    assert [r["dataset"] for r in rows] == ["near_set", "far_set", "near_mean", "far_mean", "all_mean"] * 2
    msp = create("msp")
    expected = auroc(msp.score(outputs["classifier"].test), msp.score(outputs["classifier"].ood["far_set"]))
    assert rows[1]["auroc"] == pytest.approx(expected)
    assert rows[4]["auroc"] == pytest.approx((rows[0]["auroc"] + rows[1]["auroc"]) / 2)
    assert rows[5]["detector_network"] == "dfb" and reports[1].network == "dfb"


def test_foreground_from_the_classifier_reuses_its_outputs():
    outputs = {"classifier": synthetic(0), "dfb": synthetic(1, background=True, shift=2.0)}
    rows, reports = evaluate_detectors(
        ["msp_dfbz"], outputs, overrides={"msp_dfbz": {"foreground": "classifier"}}
    )
    assert reports[0].network == "classifier+dfb" and rows[0]["detector_network"] == "classifier+dfb"
    clf, dfb = outputs["classifier"], outputs["dfb"]

    def attach(fg: Outputs, bg: Outputs) -> Outputs:
        return Outputs(logits=fg.logits, labels=fg.labels, bg_logit=bg.logits[:, -1])

    reference = create("msp_dfbz", foreground="classifier").fit(
        attach(clf.train, dfb.train), attach(clf.val, dfb.val)
    )
    expected = auroc(
        reference.score(attach(clf.test, dfb.test)),
        reference.score(attach(clf.ood["near_set"], dfb.ood["near_set"])),
    )
    assert rows[0]["auroc"] == pytest.approx(expected)
    missing = {"classifier": synthetic(0)}
    with pytest.raises(ValueError, match="needs the dfb network"):
        evaluate_detectors(["msp_dfbz"], missing, overrides={"msp_dfbz": {"foreground": "classifier"}})
