"""RMDS, SHE, fDBD, Residual, NNGuide and Relation against pytorch-ood 0.4 and plain numpy.

pytorch-ood scores grow with outlierness; ours grow with in-distribution-ness, so every comparison
negates (and, where the definitions differ on purpose, rescales) pytorch-ood's output. Where it has
no peer (Residual, Relation) the score is recomputed from its formula with plain numpy loops. The
data are small and random, with ``logits == features @ W.T + b`` exactly in float64, so that a peer
recomputing the logits from the head sees the same numbers we do.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from pytorch_ood.detector import RMD as PodRMD
from pytorch_ood.detector import SHE as PodSHE
from pytorch_ood.detector import NNGuide as PodNNGuide
from pytorch_ood.detector import fDBD as PodFDBD
from scipy.special import logsumexp as scipy_logsumexp
from scipy.special import softmax as scipy_softmax
from sklearn.covariance import EmpiricalCovariance

from dfb_ood.harness.detectors import build_detector
from dfb_ood.postprocessors._numerics import PSD_RCOND
from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.dfb import DFBWrapper
from dfb_ood.postprocessors.fdbd import FDBD
from dfb_ood.postprocessors.mds import Mahalanobis
from dfb_ood.postprocessors.nnguide import NNGuide
from dfb_ood.postprocessors.registry import BASES, available, create
from dfb_ood.postprocessors.relation import Relation
from dfb_ood.postprocessors.residual import Residual
from dfb_ood.postprocessors.rmds import RelativeMahalanobis
from dfb_ood.postprocessors.she import SHE
from dfb_ood.postprocessors.vim import ViM

K, D = 4, 12
NEW = {
    "rmds": RelativeMahalanobis,
    "she": SHE,
    "fdbd": FDBD,
    "residual": Residual,
    "nnguide": NNGuide,
    "relation": Relation,
}
SMALL = {"nnguide": {"k": 5}, "residual": {"dim": 4}}  # settings that fit 60-sample training sets
CLASS_SIZED = {
    "rmds": ("means_", 0),
    "she": ("patterns_", 0),
    "fdbd": ("boundary_norms_", 1),
    "relation": ("bank_probs_", 1),
}


def _outputs(features: np.ndarray, weight: np.ndarray, bias: np.ndarray, labels=None) -> Outputs:
    return Outputs(
        logits=features @ weight.T + bias, features=features, labels=labels, weight=weight, bias=bias
    )


@pytest.fixture(scope="module")
def data() -> dict[str, Outputs]:
    """ID features around K class centres (ReLU'd, like pooled features), a noisy nearest-centroid head
    (about 90% of the training samples correctly classified), OOD features wider and shifted."""
    rng = np.random.default_rng(12)
    centres = np.abs(rng.normal(size=(K, D))) * 2.0
    weight = centres + 0.3 * rng.normal(size=(K, D))
    bias = -0.5 * np.sum(centres**2, axis=1) + 0.2 * rng.normal(size=K)

    def id_split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % K
        return np.maximum(centres[labels] + 0.9 * rng.normal(size=(n, D)), 0.0), labels

    train_x, train_y = id_split(300)
    test_x, test_y = id_split(80)
    ood_x = np.maximum(2.5 * rng.normal(size=(80, D)) + 0.5, 0.0)
    return {
        "train": _outputs(train_x, weight, bias, train_y),
        "test": _outputs(test_x, weight, bias, test_y),
        "ood": _outputs(ood_x, weight, bias),
    }


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _evals(data: dict[str, Outputs]) -> list[Outputs]:
    return [data["test"], data["ood"]]


def _head(outputs: Outputs, dtype: torch.dtype = torch.float64):
    weight, bias = _t(outputs.weight).to(dtype), _t(outputs.bias).to(dtype)
    return lambda z: z @ weight.T + bias


# -------------------------------------------------------------------------------------------- RMDS


def test_rmds_matches_openood_recipe_with_sklearn(data: dict[str, Outputs]) -> None:
    """OpenOOD v1.5's recipe: EmpiricalCovariance of the class-centred features and of all features
    centred on their mean, pinv precisions; score = max_k -(d_k - d_0). Float64 throughout."""
    train = data["train"]
    labels = train.labels
    means = np.stack([train.features[labels == c].mean(axis=0) for c in range(K)])
    within = EmpiricalCovariance().fit(train.features - means[labels])
    whole = EmpiricalCovariance().fit(train.features)
    detector = RelativeMahalanobis().fit(train)
    np.testing.assert_allclose(detector.background_mean_, whole.location_, rtol=1e-12, atol=1e-12)
    for split in _evals(data):
        d_k = np.stack([within.mahalanobis(split.features - m) for m in means], axis=1)
        d_0 = whole.mahalanobis(split.features)  # subtracts location_ itself
        expected = np.max(-(d_k - d_0[:, None]), axis=1)
        np.testing.assert_allclose(detector.score(split), expected, rtol=1e-8, atol=1e-8)


def test_rmds_matches_pytorch_ood(data: dict[str, Outputs]) -> None:
    """pytorch-ood's RMD is ``min_k (d_k - d_0)`` with both scatters not divided by N and a 1e-6 ridge
    before a plain inverse, so ``ours = -N * theirs`` up to the ridge. The ridge shrinks each distance
    by at most the factor ``eps = 1e-6 / (smallest scatter eigenvalue)`` (about 1e-8 here), so the
    difference ``d_0 - min_k d_k`` may move by up to ``eps * (d_0 + min_k d_k)``: that is the bound
    checked, with a factor 2 for round-off. Its buffers are created in the default dtype, set to
    float64 here."""
    train = data["train"]
    ours = RelativeMahalanobis().fit(train)
    mds = Mahalanobis().fit(train)
    n = len(train)
    within = train.features - ours.means_[train.labels]
    whole = train.features - ours.background_mean_
    smallest = min(np.linalg.eigvalsh(within.T @ within)[0], np.linalg.eigvalsh(whole.T @ whole)[0])
    eps = 1e-6 / smallest
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        pod = PodRMD(None).fit_features(_t(train.features), _t(train.labels))
        theirs = [pod.predict_features(_t(split.features)).numpy() for split in _evals(data)]
    finally:
        torch.set_default_dtype(previous)
    for split, their in zip(_evals(data), theirs):
        bound = 2.0 * eps * (ours.background_distance(split.features) - mds.score(split))
        assert np.all(np.abs(ours.score(split) + n * their) <= bound)


def test_rmds_is_mds_plus_background_distance(data: dict[str, Outputs]) -> None:
    train = data["train"]
    rmds = RelativeMahalanobis().fit(train)
    mds = Mahalanobis().fit(train)
    for split in _evals(data):
        np.testing.assert_allclose(
            rmds.score(split), mds.score(split) + rmds.background_distance(split.features), rtol=1e-12
        )


def test_rmds_by_hand() -> None:
    """Class means (0, 0) and (0, 10), each class spread along x only.

    Class-centred features (+-1, 0): covariance diag(1, 0), whose pinv ignores y, so both class
    distances of the query (3, 1) are 3^2 = 9. All features centred on (0, 5): (+-1, +-5) with no
    correlation, covariance diag(1, 25): d_0 = 9 + 4^2 / 25. Score d_0 - min_k d_k = 16 / 25: only the
    y offset, which the class structure does not explain, remains.
    """
    features = np.array([[-1.0, 0.0], [1.0, 0.0], [-1.0, 10.0], [1.0, 10.0]])
    train = Outputs(logits=np.zeros((4, 2)), features=features, labels=np.array([0, 0, 1, 1]))
    detector = RelativeMahalanobis().fit(train)
    np.testing.assert_allclose(detector.precision_, np.diag([1.0, 0.0]), atol=1e-12)
    np.testing.assert_allclose(detector.background_precision_, np.diag([1.0, 1.0 / 25.0]), atol=1e-12)
    query = Outputs(logits=np.zeros((1, 2)), features=np.array([[3.0, 1.0]]))
    np.testing.assert_allclose(detector.score(query), [16.0 / 25.0], atol=1e-12)


# ------------------------------------------------------------ Mahalanobis and RMDS, rank-deficient

INFORMATIVE = 20  # the dimensions that vary; the others are dead, constant or float32 noise
U32 = 2.0**-24  # float32 unit round-off
GAUSSIANS = {"mds": Mahalanobis, "rmds": RelativeMahalanobis}


@pytest.fixture(scope="module")
def rank_deficient() -> dict[str, Outputs]:
    """Pooled-feature-like data whose covariance has a cluster of tiny eigenvalues, as in issue 21
    (there: 38 of 512 dims, eigenvalues down to 3.6e-11 against a top of 50). Twenty ReLU'd class-
    cluster dims (within-class eigenvalues 0.4 to 0.94), six exactly constant dims (0 for dead units,
    or another value), five near-constant dims (1 + 1e-6 noise, variance 1e-12: kept by numpy's
    default 1e-15 cut) and one rarely active unit (1e-4 on three samples). OOD moves more along the
    near-null dims than ID does."""
    rng = np.random.default_rng(3)
    centres = np.abs(rng.normal(size=(K, INFORMATIVE))) * 2.0

    def split(n: int, ood: bool = False) -> Outputs:
        labels = np.arange(n) % K
        varying = np.maximum(centres[labels] + rng.normal(size=(n, INFORMATIVE)) * (2.5 if ood else 0.9), 0)
        constant = np.tile([0.0, 0.0, 2.5, 0.0, 1.0, 7.0], (n, 1))
        near = 1.0 + 1e-6 * (30.0 if ood else 1.0) * rng.normal(size=(n, 5))
        rare = np.zeros((n, 1))
        rare[rng.choice(n, 3, replace=False)] = 1e-4 * (100.0 if ood else 1.0)
        features = np.hstack([varying, constant, near, rare])
        return Outputs(logits=np.zeros((n, K)), features=features, labels=None if ood else labels)

    return {"train": split(600), "test": split(150), "ood": split(150, ood=True)}


def _scores(detector, data: dict[str, Outputs], change=lambda f: f) -> np.ndarray:
    """Fit on ``change(train features)``, score ``change`` of the test and OOD features."""

    def changed(o: Outputs) -> Outputs:
        return Outputs(logits=o.logits, features=change(o.features), labels=o.labels)

    detector.fit(changed(data["train"]))
    return np.concatenate([detector.score(changed(data["test"])), detector.score(changed(data["ood"]))])


def _to_float32(features: np.ndarray) -> np.ndarray:
    return features.astype(np.float32).astype(np.float64)


def _distance_scale(data: dict[str, Outputs]) -> tuple[float, float]:
    """(largest squared distance ``d_0 + min_k d_k`` of the scored samples, largest condition number
    of the kept part of the two covariances): round-off in either score is relative to the distances,
    not to their difference (RMDS), and grows with how unevenly the kept directions are weighted."""
    rmds, mds = RelativeMahalanobis().fit(data["train"]), Mahalanobis().fit(data["train"])
    scored = [data["test"], data["ood"]]
    scale = max(np.max(rmds.background_distance(o.features) - mds.score(o)) for o in scored)
    train = data["train"]
    kappa = 0.0
    for centred in (train.features - mds.means_[train.labels], train.features - rmds.background_mean_):
        values = np.linalg.eigvalsh(centred.T @ centred / len(centred))
        kept = values[values > PSD_RCOND * values[-1]]
        kappa = max(kappa, kept[-1] / kept[0])
    return float(scale), float(kappa)


@pytest.mark.parametrize("name", sorted(GAUSSIANS))
def test_gaussian_detectors_keep_only_the_resolved_directions(rank_deficient, name: str) -> None:
    detector = GAUSSIANS[name]().fit(rank_deficient["train"])
    assert detector.rank_ == INFORMATIVE
    if name == "rmds":
        assert detector.background_rank_ == INFORMATIVE
    assert GAUSSIANS[name](rcond=1e-15).fit(rank_deficient["train"]).rank_ > INFORMATIVE  # numpy's default


@pytest.mark.parametrize("name", sorted(GAUSSIANS))
def test_gaussian_detectors_are_reproducible_on_rank_deficient_features(rank_deficient, name: str) -> None:
    """The same scores, to the round-off that the arithmetic allows (relative to the distance scale,
    with kappa the kept covariances' condition number, 34 here), from

    * the features rounded to float32 (what a network gives): every entry moves by at most U32 of
      itself, so the covariances and the centred vectors move by about U32 of the data's scale, and a
      squared distance weighted by a precision of condition number kappa by about kappa * U32 of the
      distance scale: checked at 4 kappa U32 (8e-6; 2e-8 is seen);
    * the feature dimensions permuted, and an independent float64 route (scikit-learn's
      ``EmpiricalCovariance``, scipy's ``pinvh`` with the same relative cut, the distance summed from
      the differences, not expanded): float64 operations in another order, about D * eps of relative
      error each, amplified by kappa: checked at 10 D kappa eps (2.4e-12; 2e-15 is seen).

    The cut is what makes this hold: with numpy's default (1e-15), which keeps the six near-null
    directions, the float32 copy moves the scores by 2% (rmds) to 113% (mds) of the distance scale
    and the permutation by 4% to 6%.
    """
    cls = GAUSSIANS[name]
    data = rank_deficient
    scale, kappa = _distance_scale(data)
    d = data["train"].features.shape[1]
    reference = _scores(cls(), data)
    order = np.random.default_rng(0).permutation(d)
    float64_tol = 10 * d * kappa * np.finfo(np.float64).eps * scale
    float32_tol = 4 * kappa * U32 * scale
    np.testing.assert_allclose(_scores(cls(), data, _to_float32), reference, rtol=0, atol=float32_tol)
    np.testing.assert_allclose(
        _scores(cls(), data, lambda f: f[:, order]), reference, rtol=0, atol=float64_tol
    )
    np.testing.assert_allclose(_gaussian_by_sklearn(name, data), reference, rtol=0, atol=float64_tol)
    for change in (_to_float32, lambda f: f[:, order]):
        loose = np.max(np.abs(_scores(cls(rcond=1e-15), data, change) - _scores(cls(rcond=1e-15), data)))
        assert loose > 100 * float32_tol


def _gaussian_by_sklearn(name: str, data: dict[str, Outputs]) -> np.ndarray:
    """mds / rmds from EmpiricalCovariance and scipy's pinvh (rtol = PSD_RCOND), distances from the
    differences themselves, one class at a time."""
    train = data["train"]
    labels = train.labels
    means = np.stack([train.features[labels == c].mean(axis=0) for c in range(K)])
    within = EmpiricalCovariance(assume_centered=True).fit(train.features - means[labels]).covariance_
    whole = EmpiricalCovariance().fit(train.features)
    precision = scipy.linalg.pinvh(within, atol=0.0, rtol=PSD_RCOND)
    background = scipy.linalg.pinvh(whole.covariance_, atol=0.0, rtol=PSD_RCOND)

    def squared(diff: np.ndarray, p: np.ndarray) -> np.ndarray:
        return np.einsum("nd,de,ne->n", diff, p, diff)

    scores = []
    for split in (data["test"], data["ood"]):
        x = split.features
        class_distance = np.min([squared(x - m, precision) for m in means], axis=0)
        scores.append(-class_distance + (squared(x - whole.location_, background) if name == "rmds" else 0.0))
    return np.concatenate(scores)


@pytest.mark.parametrize("name", sorted(GAUSSIANS))
def test_gaussian_detectors_full_rank_unchanged_by_the_cut(data: dict[str, Outputs], name: str) -> None:
    """On the full-rank data of the reference tests above the cut discards nothing: rank D, and the
    same scores as with every positive eigenvalue kept (rcond = 0)."""
    ours, everything = GAUSSIANS[name]().fit(data["train"]), GAUSSIANS[name](rcond=0.0).fit(data["train"])
    assert ours.rank_ == everything.rank_ == D
    for split in _evals(data):
        np.testing.assert_array_equal(ours.score(split), everything.score(split))


@pytest.mark.parametrize("rcond", [1.0, -1e-3, float("nan"), "1e-6", True, None])
def test_gaussian_detectors_reject_a_bad_rcond(rcond) -> None:
    for cls in GAUSSIANS.values():
        with pytest.raises(ValueError, match=rf"rcond must be a number in \[0, 1\), got {rcond!r}"):
            cls(rcond=rcond)


def test_gaussian_detectors_rcond_from_the_configs() -> None:
    """The YAML value reaches the constructors as a float (PyYAML reads ``1e-6`` without a dot as text)."""
    for name in GAUSSIANS:
        assert build_detector(name).rcond == PSD_RCOND == 1e-6
        assert build_detector(f"{name}_dfbz").base.rcond == PSD_RCOND


# --------------------------------------------------------------------------------------------- SHE


def test_she_matches_pytorch_ood(data: dict[str, Outputs]) -> None:
    """Same definition (class means of correctly classified train features, inner product with the
    predicted class's pattern); the head is the float64 linear map, so only round-off differs."""
    train = data["train"]
    predictions = train.logits.argmax(axis=1)
    assert 0 < np.mean(predictions == train.labels) < 1  # some training samples are filtered out
    ours = SHE().fit(train)
    pod = PodSHE(None, _head(train)).fit_features(_t(train.features), _t(train.labels))
    np.testing.assert_allclose(ours.patterns_, pod.patterns.numpy(), rtol=1e-12, atol=1e-12)
    for split in _evals(data):
        theirs = -pod.predict_features(_t(split.features)).numpy()
        np.testing.assert_allclose(ours.score(split), theirs, rtol=1e-12, atol=1e-12)


def test_she_by_hand() -> None:
    """Patterns (2, 0) and (0, 2): the third sample (label 1, predicted 0) is left out of both."""
    features = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 2.0]])
    logits = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    train = Outputs(logits=logits, features=features, labels=np.array([0, 0, 1, 1]))
    detector = SHE().fit(train)
    np.testing.assert_allclose(detector.patterns_, [[2.0, 0.0], [0.0, 2.0]])
    query = Outputs(logits=np.array([[2.0, 1.0], [0.0, 3.0]]), features=np.array([[4.0, 7.0], [4.0, 7.0]]))
    np.testing.assert_allclose(detector.score(query), [8.0, 14.0])


def test_she_falls_back_for_a_class_without_correct_samples_and_rejects_bad_labels() -> None:
    """Class 1's only samples (2, 0) and (0, 4) are predicted as class 0: it gets their mean, with a
    warning (OpenOOD would store NaN). A class with no sample at all is an error."""
    features = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    logits = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1])
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have no training sample"):
        with pytest.warns(UserWarning, match=r"class\(es\) \[1, 2\] have no correctly classified"):
            SHE().fit(Outputs(logits=logits, features=features, labels=labels))
    train = Outputs(logits=logits[:, :2], features=features, labels=labels)
    with pytest.warns(UserWarning, match=r"class\(es\) \[1\] have no correctly classified"):
        detector = SHE().fit(train)
    np.testing.assert_allclose(detector.patterns_, [[1.0, 0.0], [1.0, 2.0]])
    assert detector.fallback_classes_.tolist() == [1]
    with pytest.raises(ValueError, match="labels"):
        SHE().fit(Outputs(logits=train.logits, features=train.features))
    with pytest.raises(ValueError, match="-1"):
        SHE().fit(Outputs(logits=train.logits, features=train.features, labels=np.array([0, -1, 1])))


# -------------------------------------------------------------------------------------------- fDBD


def _fdbd_by_loops(outputs: Outputs, train: Outputs, normaliser: str) -> np.ndarray:
    """The paper's per-boundary distances, one sample and one class at a time, summed over the other
    classes as OpenOOD v1.5 does (the paper's average times K - 1)."""
    mean = train.features.mean(axis=0)
    w, b = outputs.weight, outputs.bias
    scores = []
    for x in outputs.features:
        c = int(np.argmax(w @ x + b))
        distances = [
            abs((w[c] - w[k]) @ x + (b[c] - b[k])) / np.linalg.norm(w[c] - w[k]) for k in range(K) if k != c
        ]
        scale = np.linalg.norm(x - mean) if normaliser == "mean" else np.linalg.norm(x)
        scores.append(np.sum(distances) / scale)
    return np.array(scores)


@pytest.mark.parametrize("distance_as_normalizer", [True, False])
def test_fdbd_by_numpy_loops(data: dict[str, Outputs], distance_as_normalizer: bool) -> None:
    train = data["train"]
    detector = FDBD(distance_as_normalizer=distance_as_normalizer).fit(train)
    for split in _evals(data):
        expected = _fdbd_by_loops(split, train, "mean" if distance_as_normalizer else "origin")
        np.testing.assert_allclose(detector.score(split), expected, rtol=1e-10, atol=1e-12)


def _openood_fdbd_by_numpy(
    logits: np.ndarray, features: np.ndarray, weight: np.ndarray, train_mean: np.ndarray, by_mean: bool
) -> np.ndarray:
    """OpenOOD v1.5's ``fDBDPostprocessor`` written out with numpy: its denominator matrix (row p holds
    ``||w - w_p||`` per class, 1 at p), ``|logit - max logit|`` over the predicted class's row, summed,
    over ``||feature - train_mean||`` or ``||feature||``."""
    num_classes = weight.shape[0]
    denominator_matrix = np.zeros((num_classes, num_classes))
    for p in range(num_classes):
        denominator = np.linalg.norm(weight - weight[p, :], axis=1)
        denominator[p] = 1
        denominator_matrix[p, :] = denominator
    values, nn_idx = logits.max(axis=1), logits.argmax(axis=1)
    logits_sub = np.abs(logits - np.tile(values, (num_classes, 1)).T)
    normaliser = np.linalg.norm(features - train_mean if by_mean else features, axis=1)
    return np.sum(logits_sub / denominator_matrix[nn_idx], axis=1) / normaliser


@pytest.mark.parametrize("distance_as_normalizer", [True, False])
def test_fdbd_equals_openoods_formula_by_numpy(distance_as_normalizer: bool) -> None:
    """Random head (K = 7, D = 5), random features of both signs and logits of the network; the same
    float64 operations in another order, so 1e-12."""
    rng = np.random.default_rng(23)
    weight, bias = rng.normal(size=(7, 5)), rng.normal(size=7)
    train, test = (_outputs(rng.normal(size=(n, 5)) + 0.5, weight, bias) for n in (200, 50))
    detector = FDBD(distance_as_normalizer=distance_as_normalizer).fit(train)
    expected = _openood_fdbd_by_numpy(
        test.logits, test.features, weight, train.features.mean(axis=0), distance_as_normalizer
    )
    np.testing.assert_allclose(detector.score(test), expected, rtol=1e-12)


def test_fdbd_matches_pytorch_ood(data: dict[str, Outputs]) -> None:
    """pytorch-ood writes the paper's average over the other classes, so ours (OpenOOD's sum) is K - 1
    times its negated score. It casts features and head to float32, whose ~6e-8 round-off grows
    through the logit differences and norms to ~1e-6 relative, hence rtol 1e-5."""
    train = data["train"]
    head = torch.nn.Linear(D, K)
    with torch.no_grad():
        head.weight.copy_(_t(train.weight))
        head.bias.copy_(_t(train.bias))
    pod = PodFDBD(None, head).fit_features(_t(train.features))
    ours = FDBD().fit(train)
    for split in _evals(data):
        theirs = -(K - 1) * pod.predict_features(_t(split.features)).double().numpy()
        np.testing.assert_allclose(ours.score(split), theirs, rtol=1e-5, atol=1e-7)


def test_fdbd_by_hand() -> None:
    """Three classes on the x axis. Query (2, 0), train mean (0, 0): predicted class 0 (w0 = (1, 0));
    boundary 0|1 (w1 = (-1, 0)): |2 - (-2)| / 2 = 2; boundary 0|2 (w2 = (0, 0), b2 = 1): |2 - 1| / 1 = 1;
    sum 3, divided by ||(2, 0)|| = 2 -> 1.5."""
    weight = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    bias = np.array([0.0, 0.0, 1.0])
    train = _outputs(np.array([[1.0, 1.0], [-1.0, -1.0]]), weight, bias)
    detector = FDBD().fit(train)
    np.testing.assert_allclose(detector.score(_outputs(np.array([[2.0, 0.0]]), weight, bias)), [1.5])


def test_fdbd_validation() -> None:
    weight = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    train = _outputs(np.eye(2), weight, np.zeros(3))
    with pytest.raises(ValueError, match="identical"):
        FDBD().fit(train)
    with pytest.raises(ValueError, match="two classes"):
        FDBD().fit(_outputs(np.eye(2), np.ones((1, 2)), np.zeros(1)))
    with pytest.raises(ValueError, match="true or false"):
        FDBD(distance_as_normalizer="yes")


# ---------------------------------------------------------------------------------------- Residual


def test_residual_by_numpy_svd(data: dict[str, Outputs]) -> None:
    """Independent route: least squares for u, SVD right singular vectors for the principal space,
    residual = what is left after projecting onto it."""
    train = data["train"]
    dim = 5
    u = np.linalg.lstsq(train.weight, -train.bias, rcond=None)[0]
    _, _, vt = np.linalg.svd(train.features - u, full_matrices=False)
    principal = vt[:dim].T
    detector = Residual(dim=dim).fit(train)
    for split in _evals(data):
        x = split.features - u
        expected = -np.linalg.norm(x - x @ principal @ principal.T, axis=1)
        np.testing.assert_allclose(detector.score(split), expected, rtol=1e-9, atol=1e-9)


def test_residual_is_vims_virtual_logit(data: dict[str, Outputs]) -> None:
    """ViM = energy - alpha * residual norm, so ``vim == energy + alpha * residual score``."""
    train = data["train"]
    vim = ViM(dim=6).fit(train)
    residual = Residual(dim=6).fit(train)
    for split in _evals(data):
        energy = scipy_logsumexp(split.logits, axis=1)
        np.testing.assert_allclose(vim.score(split), energy + vim.alpha_ * residual.score(split), rtol=1e-12)


def test_residual_dim_validation(data: dict[str, Outputs]) -> None:
    assert Residual().fit(data["train"]).dim_ == D // 2
    with pytest.raises(ValueError, match=rf"dim={D} with D={D}"):
        Residual(dim=D).fit(data["train"])
    for bad in (0, "full", True):
        with pytest.raises(ValueError, match="dim"):
            Residual(dim=bad)


# ----------------------------------------------------------------------------------------- NNGuide


def _nnguide_by_numpy(outputs: Outputs, train: Outputs, index: np.ndarray, k: int) -> np.ndarray:
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    bank = unit(train.features[index]) * scipy_logsumexp(train.logits[index], axis=1)[:, None]
    similarities = unit(outputs.features) @ bank.T
    guidance = np.sort(similarities, axis=1)[:, -k:].mean(axis=1)
    return scipy_logsumexp(outputs.logits, axis=1) * guidance


@pytest.mark.parametrize("k, bank_fraction, batch_size", [(10, 1.0, 4096), (7, 0.3, 17), (1, 0.01, 5)])
def test_nnguide_by_numpy(data: dict[str, Outputs], k: int, bank_fraction: float, batch_size: int) -> None:
    """Full sort instead of top-k; chunk sizes that do not divide N; a bank fraction below k/N (0.01 of
    300 is 3 samples, raised to k)."""
    train = data["train"]
    detector = NNGuide(k=k, bank_fraction=bank_fraction, batch_size=batch_size).fit(train)
    expected_size = min(len(train), max(k, int(np.ceil(bank_fraction * len(train)))))
    assert len(detector.bank_index_) == expected_size == len(np.unique(detector.bank_index_))
    for split in _evals(data):
        expected = _nnguide_by_numpy(split, train, detector.bank_index_, k)
        np.testing.assert_allclose(detector.score(split), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bank_fraction", [1.0, 0.2])
def test_nnguide_matches_pytorch_ood(data: dict[str, Outputs], bank_fraction: float) -> None:
    """Same definition; pytorch-ood builds its bank from every sample it is fitted on, so it is fitted
    on our bank's rows. It casts the features to float32 (head and queries follow), hence rtol 1e-5."""
    train = data["train"]
    ours = NNGuide(k=10, bank_fraction=bank_fraction).fit(train)
    index = ours.bank_index_
    pod = PodNNGuide(None, _head(train, torch.float32), k=10)
    pod.fit_features(_t(train.features[index]), _t(train.labels[index]))
    for split in _evals(data):
        theirs = -pod.predict_features(_t(split.features).float()).double().numpy()
        np.testing.assert_allclose(ours.score(split), theirs, rtol=1e-5, atol=1e-5)


def test_nnguide_bank_is_seeded_and_float32_is_close(data: dict[str, Outputs]) -> None:
    train = data["train"]
    a = NNGuide(k=5, bank_fraction=0.1, seed=3).fit(train).bank_index_
    assert np.array_equal(a, NNGuide(k=5, bank_fraction=0.1, seed=3).fit(train).bank_index_)
    assert not np.array_equal(a, NNGuide(k=5, bank_fraction=0.1, seed=4).fit(train).bank_index_)

    def as32(o: Outputs) -> Outputs:
        return Outputs(logits=o.logits.astype(np.float32), features=o.features.astype(np.float32))

    reference = NNGuide(k=5, bank_fraction=1.0).fit(train).score(data["ood"])
    scores32 = NNGuide(k=5, bank_fraction=1.0).fit(as32(train)).score(as32(data["ood"]))
    assert scores32.dtype == np.float64
    np.testing.assert_allclose(scores32, reference, rtol=1e-5, atol=1e-5)


def test_nnguide_validation(data: dict[str, Outputs]) -> None:
    with pytest.raises(ValueError, match=r"k=301 exceeds the number of training samples \(300\)"):
        NNGuide(k=301).fit(data["train"])
    for bad in ({"k": 0}, {"bank_fraction": 0.0}, {"bank_fraction": 1.5}, {"seed": 1.5}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            NNGuide(**bad)


# ---------------------------------------------------------------------------------------- Relation


def _relation_by_loops(outputs: Outputs, train: Outputs, power: float, threshold: float) -> np.ndarray:
    """OpenOOD v1.5's kernel, one (query, training sample) pair at a time."""
    p, p_train = scipy_softmax(outputs.logits, axis=1), scipy_softmax(train.logits, axis=1)
    scores = []
    for f, prob in zip(outputs.features, p):
        total = 0.0
        for g, prob_t in zip(train.features, p_train):
            cosine = f @ g / (np.linalg.norm(f) * np.linalg.norm(g))
            relation = max(cosine, 0.0) * (prob @ prob_t)
            if relation > threshold:
                total += relation**power
        scores.append(total)
    return np.array(scores)


@pytest.mark.parametrize("power, threshold, batch_size", [(1, 0.03, 1024), (4, 0.03, 7), (2.5, 0.0, 33)])
def test_relation_by_numpy_loops(data: dict[str, Outputs], power: float, threshold: float, batch_size: int):
    train = data["train"]
    detector = Relation(power=power, threshold=threshold, batch_size=batch_size).fit(train)
    for split in _evals(data):
        subset = Outputs(logits=split.logits[:25], features=split.features[:25])
        expected = _relation_by_loops(subset, train, power, threshold)
        np.testing.assert_allclose(detector.score(subset), expected, rtol=1e-10, atol=1e-12)


def test_relation_by_hand() -> None:
    """Two training samples. Query along (1, 0) with probabilities (0.5, 0.5):
    to (1, 0), probs (1, 0): cos 1, <p, p'> 0.5 -> 0.5; to (1, 1), probs (0.5, 0.5): cos 1/sqrt(2),
    <p, p'> 0.5 -> 0.354. power 2: 0.25 + 0.125 = 0.375; with threshold 0.4 only the first: 0.25.
    A query along (-1, 0) has cosines -1 and -1/sqrt(2): both clamped to 0, score 0."""
    big = 50.0  # softmax((big, 0)) = (1, 0) to float64 precision
    train = Outputs(logits=np.array([[big, 0.0], [0.0, 0.0]]), features=np.array([[2.0, 0.0], [1.0, 1.0]]))
    query = Outputs(logits=np.zeros((2, 2)), features=np.array([[3.0, 0.0], [-1.0, 0.0]]))
    np.testing.assert_allclose(Relation(power=2).fit(train).score(query), [0.375, 0.0], atol=1e-12)
    np.testing.assert_allclose(
        Relation(power=2, threshold=0.4).fit(train).score(query), [0.25, 0.0], atol=1e-12
    )


def test_relation_validation() -> None:
    for bad in ({"power": 0}, {"power": True}, {"threshold": 1.0}, {"threshold": -0.1}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            Relation(**bad)


# ------------------------------------------------------------------------------------------ shared


def test_registered_with_dfb_variants() -> None:
    names = available()
    for name, cls in NEW.items():
        assert BASES[name] is cls
        assert {name, f"{name}_dfb", f"{name}_dfbz"} <= set(names)
        base = create(name, **SMALL.get(name, {}))
        assert type(base) is cls
        for suffix, fusion in (("_dfb", "paper"), ("_dfbz", "zscore")):
            wrapper = create(name + suffix, **SMALL.get(name, {}))
            assert isinstance(wrapper, DFBWrapper) and type(wrapper.base) is cls
            assert wrapper.fusion == fusion and wrapper.fusion_kind == cls.fusion_kind == "logit"


@pytest.mark.parametrize(
    "name, needs_head",
    [
        ("rmds", False),
        ("she", False),
        ("fdbd", True),
        ("residual", True),
        ("nnguide", False),
        ("relation", False),
    ],
)
def test_declared_contract(name: str, needs_head: bool) -> None:
    cls = NEW[name]
    assert cls.name == name and cls.fusion_kind == "logit"
    assert cls.requires_features and cls.requires_fit
    assert cls.requires_head is needs_head
    with pytest.raises(RuntimeError, match="fitted"):
        cls().score(
            Outputs(
                logits=np.zeros((2, K)), features=np.ones((2, D)), weight=np.ones((K, D)), bias=np.zeros(K)
            )
        )


def _with_background(
    rng: np.random.Generator, n: int = 60, k: int = 3, d: int = 8
) -> tuple[Outputs, Outputs]:
    """DFB-net outputs (K classes + background column) and the same with only the background moved."""
    features = np.abs(rng.normal(size=(n, d)))
    weight = rng.normal(size=(k + 1, d))
    bias = rng.normal(size=k + 1)
    logits = features @ weight.T + bias
    labels = np.argmax(logits[:, :k], axis=1)  # every sample "correctly classified" among the K classes
    labels[:k] = np.arange(k)  # and every class present
    logits[:k, :k] = np.eye(k) * 10.0
    out = Outputs(logits=logits, features=features, labels=labels, weight=weight, bias=bias, background=True)
    moved_logits = logits.copy()
    moved_logits[:, k] += rng.normal(size=n) * 5.0
    moved_weight = weight.copy()
    moved_weight[k] *= 3.0
    moved = Outputs(
        logits=moved_logits, features=features, labels=labels, weight=moved_weight, bias=bias, background=True
    )
    return out, moved


@pytest.mark.parametrize("name", sorted(NEW))
def test_dfb_variants_never_show_the_background_to_the_base(name: str) -> None:
    """The base is fitted and scored on the K class columns only: its foreground term equals the
    plain detector on the split-off foreground, and moving only the background column (and its head
    row) moves only the background term."""
    rng = np.random.default_rng(5)
    out, moved = _with_background(rng)
    foreground, _ = out.split_background()
    kwargs = SMALL.get(name, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = create(f"{name}_dfbz", **kwargs).fit(out, out)
        b = create(f"{name}_dfbz", **kwargs).fit(moved, out)
        paper = create(f"{name}_dfb", **kwargs).fit(out, out)
    plain = create(name, **kwargs).fit(foreground, foreground)
    if name in CLASS_SIZED:  # what the base learned has K class entries, not K + 1
        attribute, axis = CLASS_SIZED[name]
        assert getattr(a.base, attribute).shape[axis] == out.num_classes == 3
    fg_a, bg_a, _ = a.fusion_terms(out)
    fg_b, bg_b, _ = b.fusion_terms(moved)
    np.testing.assert_allclose(fg_a, fg_b, rtol=1e-10, atol=1e-10)
    assert not np.allclose(bg_a, bg_b)
    expected = plain.score(foreground)
    np.testing.assert_allclose(paper.fusion_terms(out)[0], expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(paper.score(out), expected + out.logits[:, -1] / 2.5, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="background column"):
        create(name, **kwargs).fit(out)


@pytest.mark.parametrize("name", sorted(NEW))
def test_id_scores_higher_than_far_ood(data: dict[str, Outputs], name: str) -> None:
    """The sign convention: the wider, shifted OOD features score lower than ID test on average."""
    detector = create(name, **SMALL.get(name, {})).fit(data["train"])
    assert detector.score(data["test"]).mean() > detector.score(data["ood"]).mean()
