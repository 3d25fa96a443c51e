"""OOD-detection metrics computed from two 1-D score arrays, implemented directly in numpy.

Convention everywhere: a **higher score means more in-distribution (ID)**. Every metric takes the
scores of the ID test set and the scores of one OOD test set, never a pre-built label vector, so a
caller cannot accidentally flip which class is "positive".

Why our own implementation instead of scikit-learn: the papers we reproduce disagree on small
definitional details (which class is positive for FPR@95, step-wise average precision versus the
trapezoid rule for AUPR). Writing each definition out here makes every choice explicit and testable;
scikit-learn is kept as the independent reference in ``tests/harness/test_metrics.py``.

All functions validate their input through one helper and raise ``ValueError`` instead of ever
returning a silent NaN. Everything is sorting-based (O(n log n)) and computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from dfb_ood.errors import InputError

__all__ = [
    "AUPR_METHODS",
    "FPR_CONVENTIONS",
    "METRIC_NAMES",
    "OODMetrics",
    "VARIANT_NAMES",
    "aupr_in",
    "aupr_out",
    "auroc",
    "evaluate_ood",
    "fpr_at_tpr",
    "id_accuracy",
    "metric_variants",
]

#: Keys of :meth:`OODMetrics.as_dict`, in reporting order. All values are fractions in [0, 1].
METRIC_NAMES: tuple[str, ...] = ("auroc", "aupr_in", "aupr_out", "fpr95")

#: Keys of :func:`metric_variants`: the definitions a run records beside :data:`METRIC_NAMES`, so
#: that a table in the other FPR@95 convention or with OpenOOD's AUPR needs no scores, only the rows.
VARIANT_NAMES: tuple[str, ...] = ("aupr_in_trapezoid", "aupr_out_trapezoid", "fpr95_paper", "fpr95_openood")

#: Valid values of ``convention`` in :func:`fpr_at_tpr` (see there for what each one means).
FPR_CONVENTIONS: tuple[str, ...] = ("paper", "openood")

#: Valid values of ``method`` in :func:`aupr_in` / :func:`aupr_out`.
AUPR_METHODS: tuple[str, ...] = ("ap", "trapezoid")

FprConvention = Literal["paper", "openood"]
AuprMethod = Literal["ap", "trapezoid"]


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _as_array(values: ArrayLike, name: str, *, ndim: int | tuple[int, ...] = 1) -> np.ndarray:
    """Convert ``values`` to a numpy array and reject everything that would make a metric meaningless.

    This is the single entry point for input checking, so that every public function fails the same
    way, with a message naming the offending argument: non-numeric data, wrong dimensionality, an
    empty array (a metric that needs both classes is undefined when one is missing) and NaN/inf
    (a NaN would silently sort to one end and bias every ranking metric).
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must contain real numbers, got an array of dtype {arr.dtype}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise InputError(f"{name} must be a {want} array, got {arr.ndim}-D with shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty (shape {arr.shape}); at least one sample is required")
    if arr.dtype.kind == "f":
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        n_inf = int(np.count_nonzero(np.isinf(arr)))
        if n_nan or n_inf:
            raise InputError(
                f"{name} contains non-finite values: {n_nan} NaN and {n_inf} inf out of {arr.size} entries"
            )
    return arr


def _scores_pair(id_scores: ArrayLike, ood_scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate both score arrays and return them as float64 (ties and order are preserved exactly)."""
    id_arr = _as_array(id_scores, "id_scores").astype(np.float64, copy=False)
    ood_arr = _as_array(ood_scores, "ood_scores").astype(np.float64, copy=False)
    return id_arr, ood_arr


def _check_tpr(tpr: float) -> float:
    """A target rate of 0 would accept nothing and a rate above 1 is unreachable, so both are rejected."""
    try:
        value = float(tpr)
    except (TypeError, ValueError) as exc:
        raise InputError(f"tpr must be a number in (0, 1], got {tpr!r}") from exc
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise InputError(f"tpr must be in (0, 1], got {tpr!r}")
    return value


def _check_choice(value: str, valid: tuple[str, ...], name: str) -> None:
    if value not in valid:
        raise InputError(f"{name} must be one of {', '.join(repr(v) for v in valid)}; got {value!r}")


# --------------------------------------------------------------------------------------------------
# Core computations on (positive, negative) score arrays, higher = more positive
# --------------------------------------------------------------------------------------------------


def _auroc_core(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative, ties counting one half.

    Counted exactly in integers (Mann-Whitney U): for each positive, the number of negatives strictly
    below it plus half the number tied with it. Only the final division is rounded.
    """
    neg_sorted = np.sort(neg)
    below = np.searchsorted(neg_sorted, pos, side="left")
    below_or_tied = np.searchsorted(neg_sorted, pos, side="right")
    twice_u = 2 * int(below.sum()) + int((below_or_tied - below).sum())
    return twice_u / (2 * pos.size * neg.size)


def _pr_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and true-positive count at every distinct threshold, from the highest score down.

    Samples with equal scores are indistinguishable to any threshold, so they enter the ranking
    together: one point per distinct score value, not per sample (otherwise the result would depend
    on the arbitrary order of tied samples).
    """
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size, dtype=np.int64), np.zeros(neg.size, dtype=np.int64)])
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    # Last index of every run of equal scores (== compares -0.0 and 0.0 as equal, as it should).
    run_ends = np.append(np.flatnonzero(scores[1:] != scores[:-1]), scores.size - 1)
    true_pos = np.cumsum(is_pos[order])[run_ends]
    predicted_pos = run_ends + 1
    precision = true_pos / predicted_pos
    return precision, true_pos


def _aupr_core(pos: np.ndarray, neg: np.ndarray, method: str) -> float:
    precision, true_pos = _pr_points(pos, neg)
    # Recall gain at each threshold, kept as an integer count of new positives and divided by the
    # number of positives once at the end: a perfect ranking then gives exactly 1.0, not 1 - 1e-16.
    gain = np.diff(true_pos, prepend=0)
    if method == "ap":
        # Average precision: sum over thresholds of (recall gain) * (precision there). A step
        # function, so it never interpolates optimistically between operating points.
        return float(np.sum(gain * precision) / pos.size)
    # Trapezoid rule over the same PR points, anchored at (recall=0, precision=1) like the curve
    # returned by sklearn's precision_recall_curve, on which OpenOOD-style numbers are computed.
    p = np.concatenate([[1.0], precision])
    return float(np.sum(gain * (p[1:] + p[:-1])) / (2.0 * pos.size))


def _fpr_at_tpr_core(pos: np.ndarray, neg: np.ndarray, tpr: float) -> float:
    """Fraction of negatives accepted at the largest threshold that accepts >= ``tpr`` of positives.

    "Accepted" means score >= threshold. The threshold ``t`` is the largest value with
    ``mean(pos >= t) >= tpr``; it is always one of the positive scores. With the positives sorted in
    descending order and k the smallest 1-based rank with ``k / n >= tpr`` (compared in floating
    point exactly as written, the way a ROC curve's TPR is compared), the threshold is the k-th
    largest positive: at least k positives are >= it, and any larger t accepts at most k - 1.
    Ties at the threshold are therefore all accepted, positives and negatives alike.
    This is the first point of the ROC curve (one point per distinct score) whose TPR reaches ``tpr``.
    """
    n = pos.size
    fractions = np.arange(1, n + 1, dtype=np.float64) / n
    k = int(np.argmax(fractions >= tpr))  # 0-based; exists because fractions[-1] == 1.0 >= tpr
    threshold = np.sort(pos)[::-1][k]
    return int(np.count_nonzero(neg >= threshold)) / neg.size


# --------------------------------------------------------------------------------------------------
# Public metrics
# --------------------------------------------------------------------------------------------------


def auroc(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the ROC curve with ID as the positive class.

    Computed as the Mann-Whitney statistic: the probability that a random ID sample scores higher
    than a random OOD sample, an ID/OOD tie counting one half. This is exactly the trapezoidal area
    under the ROC curve (equal to ``sklearn.metrics.roc_auc_score``) but needs no curve, and it is
    symmetric: swapping roles and negating scores gives the same value.
    """
    id_arr, ood_arr = _scores_pair(id_scores, ood_scores)
    return _auroc_core(id_arr, ood_arr)


def aupr_in(id_scores: ArrayLike, ood_scores: ArrayLike, method: AuprMethod = "ap") -> float:
    """Area under the precision-recall curve with ID as the positive class (scores used as they are).

    ``method="ap"`` (default) is *average precision*, the step-wise sum ``sum_k (R_k - R_{k-1}) P_k``
    over distinct thresholds, identical to ``sklearn.metrics.average_precision_score``. We default to
    it because the trapezoid rule linearly interpolates precision between operating points, which is
    not achievable by any classifier and overestimates the area.

    ``method="trapezoid"`` integrates the same PR points, with (recall 0, precision 1) prepended, by
    the trapezoid rule, i.e. ``sklearn.metrics.auc(recall, precision)`` on the output of
    ``precision_recall_curve``. OpenOOD reports this variant; use it to compare with OpenOOD numbers.

    The value depends on the ID/OOD size ratio (the baseline is the ID fraction), unlike AUROC.
    """
    _check_choice(method, AUPR_METHODS, "method")
    id_arr, ood_arr = _scores_pair(id_scores, ood_scores)
    return _aupr_core(id_arr, ood_arr, method)


def aupr_out(id_scores: ArrayLike, ood_scores: ArrayLike, method: AuprMethod = "ap") -> float:
    """Area under the precision-recall curve with OOD as the positive class (scores negated).

    Same definitions as :func:`aupr_in` (``"ap"`` = average precision, the default, or
    ``"trapezoid"``); reported separately because PR curves, unlike ROC curves, are not symmetric in
    the two classes: this one measures how clean the set of samples flagged as OOD is.
    """
    _check_choice(method, AUPR_METHODS, "method")
    id_arr, ood_arr = _scores_pair(id_scores, ood_scores)
    return _aupr_core(-ood_arr, -id_arr, method)


def fpr_at_tpr(
    id_scores: ArrayLike,
    ood_scores: ArrayLike,
    tpr: float = 0.95,
    convention: FprConvention = "paper",
) -> float:
    """False positive rate at a fixed true positive rate (FPR@95 for the default ``tpr=0.95``).

    Two conventions are in use in the literature, and they give different numbers on the same scores,
    so the caller must choose explicitly:

    ``"paper"`` (Hendrycks & Gimpel; the DFB paper): ID is positive. The threshold ``t`` is the largest
    value such that ``mean(id_scores >= t) >= tpr``; the result is ``mean(ood_scores >= t)``, the
    fraction of OOD samples still accepted as ID when 95% of ID samples are kept. Samples tied with
    the threshold are accepted. This equals the FPR at the first point of
    ``sklearn.metrics.roc_curve(y, s, drop_intermediate=False)`` (y = 1 for ID) whose TPR is >= tpr.

    ``"openood"`` (OpenOOD v1.5, since Aug 2023): OOD is positive and scores are negated: the
    threshold is the largest ``u`` with ``mean(-ood_scores >= u) >= tpr`` (95% of OOD caught) and the
    result is ``mean(-id_scores >= u)``, the fraction of ID samples wrongly flagged as OOD. It is the
    same computation with roles swapped, which is how it is implemented.

    OpenOOD's own code (``openood/evaluators/metrics.py``) reads the point off
    ``roc_curve(..., drop_intermediate=True)``, sklearn's default, which drops points lying on one
    straight segment of equal steps. When every score is distinct the two agree exactly (a dropped
    first point then sits on a vertical segment, whose kept end has the same FPR); when tied scores
    put several ROC points on a sloped segment, OpenOOD can skip the first point reaching ``tpr``
    and report a larger FPR than this function (see ``tests/harness/test_metrics.py``).
    """
    _check_choice(convention, FPR_CONVENTIONS, "convention")
    target = _check_tpr(tpr)
    id_arr, ood_arr = _scores_pair(id_scores, ood_scores)
    if convention == "paper":
        return _fpr_at_tpr_core(id_arr, ood_arr, target)
    return _fpr_at_tpr_core(-ood_arr, -id_arr, target)


def id_accuracy(logits_or_predictions: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 classification accuracy on the ID test set, as a fraction in [0, 1].

    Accepts either (N, C) logits (or probabilities; the argmax is taken) or (N,) integer class
    predictions. A 1-D float array is rejected rather than guessed at, because it is far more likely
    to be a vector of OOD scores passed by mistake than a vector of predictions.
    """
    preds = _as_array(logits_or_predictions, "logits_or_predictions", ndim=(1, 2))
    if preds.ndim == 2:
        if preds.shape[1] == 0:
            raise InputError(f"logits_or_predictions has zero classes (shape {preds.shape})")
        preds = np.argmax(preds, axis=1)
    elif preds.dtype.kind not in "iu":
        raise InputError(
            "1-D logits_or_predictions must hold integer class indices, got dtype "
            f"{preds.dtype}; pass (N, C) logits to have the argmax taken"
        )
    label_arr = _as_array(labels, "labels")
    if label_arr.dtype.kind not in "iu":
        raise InputError(f"labels must hold integer class indices, got dtype {label_arr.dtype}")
    if preds.shape[0] != label_arr.shape[0]:
        raise InputError(f"length mismatch: {preds.shape[0]} predictions but {label_arr.shape[0]} labels")
    return int(np.count_nonzero(preds == label_arr)) / label_arr.shape[0]


@dataclass(frozen=True)
class OODMetrics:
    """The standard metric set for one (ID, OOD) pair, all fractions in [0, 1] (not percent).

    A dataclass rather than a dict so that the FPR convention, which changes the meaning of
    ``fpr95``, travels with the numbers without making the numeric mapping mixed-type.
    """

    auroc: float
    aupr_in: float
    aupr_out: float
    fpr95: float
    fpr_convention: str

    def as_dict(self) -> dict[str, float]:
        """The numeric metrics keyed by :data:`METRIC_NAMES` (the convention is an attribute only)."""
        return {name: getattr(self, name) for name in METRIC_NAMES}


def evaluate_ood(
    id_scores: ArrayLike, ood_scores: ArrayLike, fpr_convention: FprConvention = "paper"
) -> OODMetrics:
    """Compute AUROC, AUPR-In, AUPR-Out (average precision) and FPR@95 for one (ID, OOD) pair.

    Inputs are validated once up front so a bad array fails before any metric is computed.
    """
    _check_choice(fpr_convention, FPR_CONVENTIONS, "fpr_convention")
    id_arr, ood_arr = _scores_pair(id_scores, ood_scores)
    return OODMetrics(
        auroc=auroc(id_arr, ood_arr),
        aupr_in=aupr_in(id_arr, ood_arr),
        aupr_out=aupr_out(id_arr, ood_arr),
        fpr95=fpr_at_tpr(id_arr, ood_arr, tpr=0.95, convention=fpr_convention),
        fpr_convention=fpr_convention,
    )


def metric_variants(id_scores: ArrayLike, ood_scores: ArrayLike) -> dict[str, float]:
    """The other definitions of the same numbers, keyed by :data:`VARIANT_NAMES` (fractions).

    AUPR-In / AUPR-Out by the trapezoid rule (OpenOOD v1.5's definition; :func:`evaluate_ood`
    reports average precision) and FPR@95 in both conventions. Scores are never stored, so the
    evaluation computes these beside the main metrics; a leaderboard can then show any definition
    of any earlier run without recomputing anything.
    """
    id_arr, ood_arr = _scores_pair(id_scores, ood_scores)
    return {
        "aupr_in_trapezoid": _aupr_core(id_arr, ood_arr, "trapezoid"),
        "aupr_out_trapezoid": _aupr_core(-ood_arr, -id_arr, "trapezoid"),
        "fpr95_paper": fpr_at_tpr(id_arr, ood_arr, tpr=0.95, convention="paper"),
        "fpr95_openood": fpr_at_tpr(id_arr, ood_arr, tpr=0.95, convention="openood"),
    }
