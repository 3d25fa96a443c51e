"""Tests for harness.metrics, with scikit-learn as the independent reference implementation.

Convention: higher score = more in-distribution. In the sklearn references, ID is label 1 unless a
metric puts OOD in the positive class, in which case OOD is label 1 and the scores are negated.
"""

from __future__ import annotations

import dataclasses
import time
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    auc,
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from dfb_ood.harness.metrics import (
    FPR_CONVENTIONS,
    METRIC_NAMES,
    VARIANT_NAMES,
    OODMetrics,
    aupr_in,
    aupr_out,
    auroc,
    evaluate_ood,
    fpr_at_tpr,
    id_accuracy,
    metric_variants,
)

REL = 1e-12

# --------------------------------------------------------------------------------------------------
# scikit-learn references
# --------------------------------------------------------------------------------------------------


def _labelled(pos, neg):
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    y = np.concatenate([np.ones(pos.size, dtype=int), np.zeros(neg.size, dtype=int)])
    return y, np.concatenate([pos, neg])


def ref_auroc(id_s, ood_s):
    return roc_auc_score(*_labelled(id_s, ood_s))


def ref_ap(pos, neg):
    return average_precision_score(*_labelled(pos, neg))


def ref_trapezoid(pos, neg):
    precision, recall, _ = precision_recall_curve(*_labelled(pos, neg))
    return auc(recall, precision)


def ref_fpr(pos, neg, tpr=0.95):
    """FPR at the first ROC point whose TPR reaches ``tpr``.

    drop_intermediate=False keeps one point per distinct score. With the default (True) sklearn drops
    collinear points, which can remove exactly the first point reaching the target TPR (see
    test_fpr_sklearn_drop_intermediate_would_skip_the_threshold).
    """
    fpr, tpr_curve, _ = roc_curve(*_labelled(pos, neg), drop_intermediate=False)
    return fpr[int(np.argmax(tpr_curve >= tpr))]


def ref_fpr_paper(id_s, ood_s, tpr=0.95):
    return ref_fpr(id_s, ood_s, tpr)


def ref_fpr_openood(id_s, ood_s, tpr=0.95):
    return ref_fpr(-np.asarray(ood_s, dtype=np.float64), -np.asarray(id_s, dtype=np.float64), tpr)


def assert_matches_sklearn(id_s, ood_s):
    id_s = np.asarray(id_s)
    ood_s = np.asarray(ood_s)
    neg_id = -id_s.astype(np.float64)
    neg_ood = -ood_s.astype(np.float64)
    assert auroc(id_s, ood_s) == pytest.approx(ref_auroc(id_s, ood_s), rel=REL, abs=0)
    assert aupr_in(id_s, ood_s) == pytest.approx(ref_ap(id_s, ood_s), rel=REL, abs=0)
    assert aupr_out(id_s, ood_s) == pytest.approx(ref_ap(neg_ood, neg_id), rel=REL, abs=0)
    assert aupr_in(id_s, ood_s, method="trapezoid") == pytest.approx(
        ref_trapezoid(id_s, ood_s), rel=REL, abs=0
    )
    assert aupr_out(id_s, ood_s, method="trapezoid") == pytest.approx(
        ref_trapezoid(neg_ood, neg_id), rel=REL, abs=0
    )
    # FPR values are count / n on both sides: exact equality is expected.
    for tpr in (0.95, 0.5, 0.8, 0.99, 1.0, 1e-9):
        assert fpr_at_tpr(id_s, ood_s, tpr=tpr) == ref_fpr_paper(id_s, ood_s, tpr)
        assert fpr_at_tpr(id_s, ood_s, tpr=tpr, convention="openood") == ref_fpr_openood(id_s, ood_s, tpr)


# --------------------------------------------------------------------------------------------------
# (a) random scores
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("n_id", "n_ood"), [(10, 10), (37, 211), (1000, 50), (2000, 3000)])
def test_random_normal_matches_sklearn(seed, n_id, n_ood):
    rng = np.random.default_rng(seed)
    id_s = rng.normal(1.0, 1.0, n_id)
    ood_s = rng.normal(0.0, 1.5, n_ood)
    assert_matches_sklearn(id_s, ood_s)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_float32_scores_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    assert_matches_sklearn(
        rng.normal(0.5, 1, 300).astype(np.float32), rng.normal(0, 1, 400).astype(np.float32)
    )


# --------------------------------------------------------------------------------------------------
# (b) adversarial inputs
# --------------------------------------------------------------------------------------------------

_rng = np.random.default_rng(123)
ADVERSARIAL = {
    "all_tied": (np.full(10, 0.5), np.full(7, 0.5)),
    "single_ood": (_rng.normal(size=50), np.array([0.1])),
    "single_id": (np.array([0.1]), _rng.normal(size=50)),
    "single_each": (np.array([0.3]), np.array([0.3])),
    "perfectly_separated": (np.linspace(1, 2, 30), np.linspace(-1, 0.5, 40)),
    "perfectly_reversed": (np.linspace(-1, 0.5, 40), np.linspace(1, 2, 30)),
    "heavy_ties_rounded": (np.round(_rng.normal(0.3, 1, 500), 1), np.round(_rng.normal(0, 1, 700), 1)),
    "integer_scores": (_rng.integers(0, 5, 200), _rng.integers(-2, 4, 150)),
    "boolean_scores": (_rng.random(60) < 0.8, _rng.random(90) < 0.3),
    "signed_zeros": (np.array([0.0, -0.0, 1.0, -1.0]), np.array([-0.0, 0.0, 0.0, 2.0])),
    "huge_magnitudes": (np.array([1e300, -1e300, 5.0, 1e-300]), np.array([1e300, 0.0, -1e300])),
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_adversarial_inputs_match_sklearn(case):
    id_s, ood_s = ADVERSARIAL[case]
    assert_matches_sklearn(id_s, ood_s)


def test_all_tied_values():
    # One threshold only: everything accepted together. AUROC = every pair is a tie = 1/2;
    # AUPR-In = precision at full recall = 10 / 17; FPR = 1 (all OOD accepted with all ID).
    id_s, ood_s = ADVERSARIAL["all_tied"]
    assert auroc(id_s, ood_s) == 0.5
    assert aupr_in(id_s, ood_s) == pytest.approx(10 / 17, rel=REL)
    assert aupr_out(id_s, ood_s) == pytest.approx(7 / 17, rel=REL)
    assert fpr_at_tpr(id_s, ood_s) == 1.0
    assert fpr_at_tpr(id_s, ood_s, convention="openood") == 1.0


def test_perfect_separation_values():
    id_s, ood_s = ADVERSARIAL["perfectly_separated"]
    m = evaluate_ood(id_s, ood_s)
    assert (m.auroc, m.aupr_in, m.aupr_out, m.fpr95) == (1.0, 1.0, 1.0, 0.0)
    assert fpr_at_tpr(id_s, ood_s, convention="openood") == 0.0


def test_perfect_reversal_values():
    # Every OOD sample outranks every ID sample. AUROC = 0, and to keep 95% of the 40 ID samples
    # (k = 38, threshold = 38th largest ID) every OOD sample is accepted: FPR = 1.
    id_s, ood_s = ADVERSARIAL["perfectly_reversed"]
    assert auroc(id_s, ood_s) == 0.0
    assert fpr_at_tpr(id_s, ood_s) == 1.0
    assert fpr_at_tpr(id_s, ood_s, convention="openood") == 1.0
    # AUPR-In: ID recall only starts after all 30 OOD; precision at recall j/40 is j/(30+j).
    expected = sum(Fraction(j, 30 + j) for j in range(1, 41)) / 40
    assert aupr_in(id_s, ood_s) == pytest.approx(float(expected), rel=REL)


def test_auroc_symmetry_and_complement():
    rng = np.random.default_rng(7)
    id_s = np.round(rng.normal(0.5, 1, 300), 1)
    ood_s = np.round(rng.normal(0, 1, 200), 1)
    assert auroc(-ood_s, -id_s) == auroc(id_s, ood_s)
    assert auroc(ood_s, id_s) == pytest.approx(1 - auroc(id_s, ood_s), rel=REL)


def test_openood_is_paper_with_roles_swapped_and_scores_negated():
    rng = np.random.default_rng(11)
    id_s = np.round(rng.normal(0.5, 1, 300), 1)
    ood_s = np.round(rng.normal(0, 1, 200), 1)
    for tpr in (0.95, 0.9, 0.5):
        assert fpr_at_tpr(id_s, ood_s, tpr, "openood") == fpr_at_tpr(-ood_s, -id_s, tpr, "paper")


# --------------------------------------------------------------------------------------------------
# (c) hand-computed cases
# --------------------------------------------------------------------------------------------------

HAND_ID = [0.9, 0.8, 0.7, 0.1]
HAND_OOD = [0.85, 0.2, 0.05]


def test_hand_auroc():
    # Pairs (ID beats OOD?), 4 x 3 = 12 pairs:
    #   0.9 > 0.85, 0.2, 0.05           -> 3
    #   0.8 > 0.2, 0.05 (not 0.85)      -> 2
    #   0.7 > 0.2, 0.05 (not 0.85)      -> 2
    #   0.1 > 0.05 (not 0.85, 0.2)      -> 1
    # AUROC = 8 / 12 = 2/3.
    assert auroc(HAND_ID, HAND_OOD) == pytest.approx(2 / 3, rel=REL)


def test_hand_auroc_with_ties():
    # id = [1, 2, 3], ood = [2, 2, 0]. Pairs: 1 vs (2,2,0) -> 0+0+1; 2 vs (2,2,0) -> 1/2+1/2+1;
    # 3 vs (2,2,0) -> 3. Total 6 of 9 pairs -> 2/3.
    assert auroc([1, 2, 3], [2, 2, 0]) == pytest.approx(2 / 3, rel=REL)


def test_hand_aupr_in_average_precision():
    # Ranking (descending): 0.9 I, 0.85 O, 0.8 I, 0.7 I, 0.2 O, 0.1 I, 0.05 O.
    # ID hits (recall +1/4 each) and precision there: 0.9 -> 1/1, 0.8 -> 2/3, 0.7 -> 3/4, 0.1 -> 4/6.
    # AP = (1 + 2/3 + 3/4 + 2/3) / 4 = (37/12) / 4 = 37/48.
    assert aupr_in(HAND_ID, HAND_OOD) == pytest.approx(37 / 48, rel=REL)


def test_hand_aupr_in_trapezoid():
    # PR points (recall, precision), one per threshold, with (0, 1) prepended:
    #   (0,1) (1/4,1) [0.9] (1/4,1/2) [0.85] (1/2,2/3) [0.8] (3/4,3/4) [0.7] (3/4,3/5) [0.2]
    #   (1,4/6) [0.1] (1,4/7) [0.05]
    # Trapezoids (vertical segments add 0):
    #   1/4*(1+1)/2 = 1/4;  1/4*(1/2+2/3)/2 = 7/48;  1/4*(2/3+3/4)/2 = 17/96;  1/4*(3/5+2/3)/2 = 19/120
    # Sum = (120 + 70 + 85 + 76) / 480 = 351/480.
    assert aupr_in(HAND_ID, HAND_OOD, method="trapezoid") == pytest.approx(351 / 480, rel=REL)


def test_hand_aupr_out():
    # OOD positive, ascending score: 0.05 O, 0.1 I, 0.2 O, 0.7 I, 0.8 I, 0.85 O, 0.9 I.
    # OOD hits and precision there: 0.05 -> 1/1, 0.2 -> 2/3, 0.85 -> 3/6.
    # AP = (1 + 2/3 + 1/2) / 3 = 13/18.
    assert aupr_out(HAND_ID, HAND_OOD) == pytest.approx(13 / 18, rel=REL)


def test_hand_fpr_ties_at_threshold_are_accepted():
    # 20 ID: ten at 5 and ten at 3. tpr=0.95 needs k=19 (19/20 >= 0.95), the 19th largest ID is 3,
    # so t = 3 and OOD >= 3 are {5, 3, 3}: FPR = 3/4 (the two OOD tied with t count as accepted).
    id_s = [5] * 10 + [3] * 10
    ood_s = [5, 3, 3, 1]
    assert fpr_at_tpr(id_s, ood_s, 0.95) == 0.75
    # tpr=0.5 -> k=10 -> t=5 -> OOD >= 5 is {5}: 1/4. tpr=0.4 -> k=8, still t=5.
    assert fpr_at_tpr(id_s, ood_s, 0.5) == 0.25
    assert fpr_at_tpr(id_s, ood_s, 0.4) == 0.25
    # tpr just above 0.5 needs k=11, whose score is 3.
    assert fpr_at_tpr(id_s, ood_s, 0.51) == 0.75
    assert fpr_at_tpr(id_s, ood_s, 0.95) == ref_fpr_paper(id_s, ood_s)


def test_fpr_sklearn_drop_intermediate_would_skip_the_threshold():
    # ID 0..19, OOD tied with ID at 0, 1, 2. k = 19 -> t = 1 (19 ID >= 1), OOD >= 1 = {1, 2}: 2/3.
    # sklearn's default roc_curve drops the (tpr=19/20, fpr=2/3) point because it is collinear with
    # its neighbours (each of thresholds 2, 1, 0 adds one ID and one OOD), and would report 1.0.
    id_s = np.arange(20)
    ood_s = np.array([0, 1, 2])
    assert fpr_at_tpr(id_s, ood_s) == pytest.approx(2 / 3, rel=REL)
    assert fpr_at_tpr(id_s, ood_s) == ref_fpr_paper(id_s, ood_s)
    fpr, tpr, _ = roc_curve(*_labelled(id_s, ood_s))  # drop_intermediate=True
    assert fpr[int(np.argmax(tpr >= 0.95))] == 1.0


# --------------------------------------------------------------------------------------------------
# (d) the two FPR conventions differ
# --------------------------------------------------------------------------------------------------


def test_hand_fpr_conventions_differ():
    # paper: ID positive, 4 ID -> k = 4 (4/4 >= 0.95), t = 0.1 (smallest ID).
    #   OOD >= 0.1 = {0.85, 0.2} -> FPR = 2/3.
    # openood: OOD positive on -score, 3 OOD -> k = 3, all OOD must be caught: flag score <= 0.85.
    #   ID <= 0.85 = {0.8, 0.7, 0.1} -> FPR = 3/4.
    assert fpr_at_tpr(HAND_ID, HAND_OOD) == pytest.approx(2 / 3, rel=REL)
    assert fpr_at_tpr(HAND_ID, HAND_OOD, convention="openood") == 0.75
    assert fpr_at_tpr(HAND_ID, HAND_OOD) == ref_fpr_paper(HAND_ID, HAND_OOD)
    assert fpr_at_tpr(HAND_ID, HAND_OOD, convention="openood") == ref_fpr_openood(HAND_ID, HAND_OOD)
    assert evaluate_ood(HAND_ID, HAND_OOD).fpr95 == pytest.approx(2 / 3, rel=REL)
    assert evaluate_ood(HAND_ID, HAND_OOD, fpr_convention="openood").fpr95 == 0.75


def test_fpr_conventions_differ_on_random_scores():
    rng = np.random.default_rng(5)
    id_s = rng.normal(1, 1, 1000)
    ood_s = rng.normal(0, 2, 1000)
    paper = fpr_at_tpr(id_s, ood_s)
    openood = fpr_at_tpr(id_s, ood_s, convention="openood")
    assert paper != openood
    assert paper == ref_fpr_paper(id_s, ood_s)
    assert openood == ref_fpr_openood(id_s, ood_s)


# --------------------------------------------------------------------------------------------------
# evaluate_ood / OODMetrics / id_accuracy
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", FPR_CONVENTIONS)
def test_evaluate_ood_bundles_the_individual_metrics(convention):
    rng = np.random.default_rng(3)
    id_s = rng.normal(1, 1, 500)
    ood_s = rng.normal(0, 1, 800)
    m = evaluate_ood(id_s, ood_s, fpr_convention=convention)
    assert isinstance(m, OODMetrics)
    assert m.fpr_convention == convention
    assert m.auroc == auroc(id_s, ood_s)
    assert m.aupr_in == aupr_in(id_s, ood_s)
    assert m.aupr_out == aupr_out(id_s, ood_s)
    assert m.fpr95 == fpr_at_tpr(id_s, ood_s, 0.95, convention)
    d = m.as_dict()
    assert tuple(d) == METRIC_NAMES == ("auroc", "aupr_in", "aupr_out", "fpr95")
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in d.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.auroc = 0.0  # type: ignore[misc]


def test_id_accuracy_logits_and_predictions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 7))
    labels = rng.integers(0, 7, 200)
    expected = accuracy_score(labels, logits.argmax(1))
    assert id_accuracy(logits, labels) == expected
    assert id_accuracy(logits.argmax(1), labels) == expected
    assert id_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75
    assert id_accuracy([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], [1, 1, 1]) == pytest.approx(2 / 3, rel=REL)


def test_id_accuracy_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    assert id_accuracy(logits, labels) == pytest.approx(2 / 3, rel=REL)
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([0.0])) == 1.0


def test_large_inputs_are_fast():
    rng = np.random.default_rng(0)
    id_s = rng.normal(1, 1, 100_000)
    ood_s = rng.normal(0, 1, 100_000)
    evaluate_ood(id_s[:1000], ood_s[:1000])  # warm-up
    start = time.perf_counter()
    for convention in FPR_CONVENTIONS:
        evaluate_ood(id_s, ood_s, fpr_convention=convention)
    elapsed = (time.perf_counter() - start) / len(FPR_CONVENTIONS)
    assert elapsed < 1.0, f"evaluate_ood on 100k + 100k scores took {elapsed:.3f}s"


# --------------------------------------------------------------------------------------------------
# (d2) the variants a run records, and OpenOOD's own procedure
# --------------------------------------------------------------------------------------------------


def openood_procedure(id_s, ood_s):
    """openood/evaluators/metrics.py's auc_and_fpr_recall, written out with sklearn (fractions).

    OOD is the positive class on negated scores; FPR is read off sklearn's default ROC curve
    (drop_intermediate=True); AUPR is sklearn's auc over precision_recall_curve.
    """
    conf = np.concatenate([np.asarray(id_s, dtype=np.float64), np.asarray(ood_s, dtype=np.float64)])
    ood = np.concatenate([np.zeros(len(id_s), dtype=int), np.ones(len(ood_s), dtype=int)])
    fpr, tpr, _ = roc_curve(ood, -conf)
    precision_in, recall_in, _ = precision_recall_curve(1 - ood, conf)
    precision_out, recall_out, _ = precision_recall_curve(ood, -conf)
    return {
        "fpr95": fpr[int(np.argmax(tpr >= 0.95))],
        "auroc": auc(fpr, tpr),
        "aupr_in": auc(recall_in, precision_in),
        "aupr_out": auc(recall_out, precision_out),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("n_id", "n_ood"), [(50, 40), (1000, 3000), (2000, 500)])
def test_variants_equal_openoods_procedure_on_distinct_scores(seed, n_id, n_ood):
    rng = np.random.default_rng(seed)
    id_s, ood_s = rng.normal(1.0, 1.0, n_id), rng.normal(0.0, 1.5, n_ood)
    assert np.unique(np.concatenate([id_s, ood_s])).size == n_id + n_ood
    ours, theirs = metric_variants(id_s, ood_s), openood_procedure(id_s, ood_s)
    assert ours["fpr95_openood"] == theirs["fpr95"]  # count / n on both sides: exact
    assert ours["aupr_in_trapezoid"] == pytest.approx(theirs["aupr_in"], rel=REL, abs=0)
    assert ours["aupr_out_trapezoid"] == pytest.approx(theirs["aupr_out"], rel=REL, abs=0)
    assert auroc(id_s, ood_s) == pytest.approx(theirs["auroc"], rel=REL, abs=0)
    assert ours["fpr95_paper"] == fpr_at_tpr(id_s, ood_s, convention="paper")
    assert set(ours) == set(VARIANT_NAMES)


def test_variants_equal_sklearn_on_tied_scores():
    """Quantised scores (many ties): the trapezoid AUPRs still equal sklearn's, both conventions the
    first ROC point reaching 95% TPR."""
    rng = np.random.default_rng(7)
    id_s, ood_s = np.round(rng.normal(1.0, 1.0, 400), 1), np.round(rng.normal(0.0, 1.0, 300), 1)
    ours = metric_variants(id_s, ood_s)
    assert ours["aupr_in_trapezoid"] == pytest.approx(ref_trapezoid(id_s, ood_s), rel=REL, abs=0)
    assert ours["aupr_out_trapezoid"] == pytest.approx(ref_trapezoid(-ood_s, -id_s), rel=REL, abs=0)
    assert ours["fpr95_openood"] == ref_fpr_openood(id_s, ood_s)
    assert ours["fpr95_paper"] == ref_fpr_paper(id_s, ood_s)


def test_openoods_procedure_can_skip_the_first_point_on_tied_scores():
    """Documented difference (fpr_at_tpr's docstring): OOD 0..19, ID tied with OOD at 0, -1, -2 in
    the openood convention's orientation. The first ROC point reaching 95% of OOD has FPR 2/3; sklearn's
    default curve drops it as collinear and OpenOOD's code reads 1.0 at the next kept point."""
    ood_s = -np.arange(20.0)
    id_s = -np.array([0.0, 1.0, 2.0])
    assert fpr_at_tpr(id_s, ood_s, convention="openood") == pytest.approx(2 / 3, rel=REL)
    assert openood_procedure(id_s, ood_s)["fpr95"] == 1.0


# --------------------------------------------------------------------------------------------------
# (e) bad inputs
# --------------------------------------------------------------------------------------------------

SCORE_FUNCTIONS = {
    "auroc": auroc,
    "aupr_in": aupr_in,
    "aupr_out": aupr_out,
    "fpr_at_tpr": fpr_at_tpr,
    "evaluate_ood": evaluate_ood,
}
GOOD = np.array([0.1, 0.5, 0.9])

BAD_SCORES = [
    ("empty_id", np.array([]), GOOD, r"id_scores is empty"),
    ("empty_ood", GOOD, [], r"ood_scores is empty"),
    (
        "nan_id",
        np.array([0.1, np.nan, np.nan, 0.3]),
        GOOD,
        r"id_scores contains non-finite values: 2 NaN and 0 inf",
    ),
    (
        "inf_ood",
        GOOD,
        np.array([np.inf, -np.inf, 1.0]),
        r"ood_scores contains non-finite values: 0 NaN and 2 inf",
    ),
    ("nan_and_inf", GOOD, np.array([np.nan, np.inf]), r"ood_scores .* 1 NaN and 1 inf out of 2"),
    ("2d_id", np.ones((3, 2)), GOOD, r"id_scores must be a 1-D array, got 2-D with shape \(3, 2\)"),
    ("2d_column_ood", GOOD, np.ones((3, 1)), r"ood_scores must be a 1-D array, got 2-D"),
    ("scalar_id", np.float64(0.3), GOOD, r"id_scores must be a 1-D array, got 0-D"),
    ("string_ood", GOOD, np.array(["a", "b"]), r"ood_scores must contain real numbers"),
    ("complex_id", np.array([1 + 1j]), GOOD, r"id_scores must contain real numbers"),
]


@pytest.mark.parametrize("func", sorted(SCORE_FUNCTIONS))
@pytest.mark.parametrize(
    ("id_s", "ood_s", "match"), [c[1:] for c in BAD_SCORES], ids=[c[0] for c in BAD_SCORES]
)
def test_bad_scores_raise(func, id_s, ood_s, match):
    with pytest.raises(ValueError, match=match):
        SCORE_FUNCTIONS[func](id_s, ood_s)


@pytest.mark.parametrize("tpr", [0, 0.0, -0.1, 1.0000001, 1.5, float("nan"), float("inf")])
def test_tpr_out_of_range_raises(tpr):
    with pytest.raises(ValueError, match=r"tpr must be in \(0, 1\]"):
        fpr_at_tpr(GOOD, GOOD, tpr=tpr)


def test_tpr_not_a_number_raises():
    with pytest.raises(ValueError, match=r"tpr must be a number in \(0, 1\]"):
        fpr_at_tpr(GOOD, GOOD, tpr="high")  # type: ignore[arg-type]


def test_unknown_fpr_convention_raises():
    with pytest.raises(ValueError, match=r"convention must be one of 'paper', 'openood'; got 'OpenOOD'"):
        fpr_at_tpr(GOOD, GOOD, convention="OpenOOD")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"fpr_convention must be one of 'paper', 'openood'; got 'hendrycks'"
    ):
        evaluate_ood(GOOD, GOOD, fpr_convention="hendrycks")  # type: ignore[arg-type]


@pytest.mark.parametrize("func", [aupr_in, aupr_out])
def test_unknown_aupr_method_raises(func):
    with pytest.raises(ValueError, match=r"method must be one of 'ap', 'trapezoid'; got 'trapz'"):
        func(GOOD, GOOD, method="trapz")


BAD_ACCURACY = [
    ("length_mismatch_preds", np.array([0, 1, 2]), np.array([0, 1]), r"3 predictions but 2 labels"),
    ("length_mismatch_logits", np.zeros((4, 3)), np.array([0, 1]), r"4 predictions but 2 labels"),
    ("empty_preds", np.array([], dtype=int), np.array([], dtype=int), r"logits_or_predictions is empty"),
    ("empty_logits", np.zeros((0, 5)), np.array([], dtype=int), r"logits_or_predictions is empty"),
    ("empty_labels", np.array([0, 1]), np.array([], dtype=int), r"labels is empty"),
    ("zero_classes", np.zeros((3, 0)), np.array([0, 1, 2]), r"zero classes"),
    ("float_1d", np.array([0.2, 0.9]), np.array([0, 1]), r"1-D logits_or_predictions must hold integer"),
    ("float_labels", np.array([0, 1]), np.array([0.0, 1.0]), r"labels must hold integer class indices"),
    ("3d_logits", np.zeros((2, 3, 4)), np.array([0, 1]), r"must be a 1-D or 2-D array, got 3-D"),
    ("2d_labels", np.array([0, 1]), np.array([[0], [1]]), r"labels must be a 1-D array"),
    ("nan_logits", np.array([[0.1, np.nan], [0.3, 0.2]]), np.array([0, 1]), r"1 NaN and 0 inf"),
]


@pytest.mark.parametrize(
    ("preds", "labels", "match"), [c[1:] for c in BAD_ACCURACY], ids=[c[0] for c in BAD_ACCURACY]
)
def test_bad_accuracy_inputs_raise(preds, labels, match):
    with pytest.raises(ValueError, match=match):
        id_accuracy(preds, labels)
