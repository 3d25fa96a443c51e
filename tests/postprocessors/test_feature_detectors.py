"""ViM, ReAct, Mahalanobis and KNN against pytorch-ood, scikit-learn and direct numpy computations.

pytorch-ood scores grow with outlierness; ours grow with in-distribution-ness, so every comparison
negates (and, where the definitions differ on purpose, rescales) pytorch-ood's output. Each test
docstring says which differences were accounted for.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_ood.detector import KNN as PodKNN
from pytorch_ood.detector import Mahalanobis as PodMahalanobis
from pytorch_ood.detector import ReAct as PodReAct
from pytorch_ood.detector import ViM as PodViM
from scipy.special import logsumexp as scipy_logsumexp
from sklearn.covariance import EmpiricalCovariance
from sklearn.neighbors import NearestNeighbors

import dfb_ood.postprocessors.knn as knn_module
from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.knn import KNN
from dfb_ood.postprocessors.mds import Mahalanobis
from dfb_ood.postprocessors.react import ReAct
from dfb_ood.postprocessors.vim import ViM, auto_dim
from tests.postprocessors.conftest import TinyNet, outputs_of


@pytest.fixture
def outs(tiny_net: TinyNet, id_ood_data: dict[str, torch.Tensor]) -> dict[str, Outputs]:
    """Float64 outputs of the tiny net on ID train (labelled), ID test and OOD inputs."""
    return {
        "train": outputs_of(tiny_net, id_ood_data["train_x"], id_ood_data["train_y"]),
        "test": outputs_of(tiny_net, id_ood_data["test_x"], id_ood_data["test_y"]),
        "ood": outputs_of(tiny_net, id_ood_data["ood_x"]),
    }


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _train_labels(train: Outputs) -> torch.Tensor:
    assert train.labels is not None
    return _t(train.labels)


def _eval_sets(outs: dict[str, Outputs]) -> list[Outputs]:
    return [outs["test"], outs["ood"]]


# --------------------------------------------------------------------------------------------- ViM


def test_vim_matches_pytorch_ood(outs: dict[str, Outputs]) -> None:
    """Same definition (u = -pinv(W) b, uncentred covariance / N, eigh, alpha from train max logits).

    pytorch-ood casts W, b and the features to float32, hence the float32-level tolerance.
    """
    train = outs["train"]
    ours = ViM(dim=8).fit(train)
    pod = PodViM(None, d=8, w=_t(train.weight), b=_t(train.bias))
    pod.fit_features(_t(train.features), _train_labels(train))
    assert ours.alpha_ == pytest.approx(pod.alpha, rel=1e-4)
    for split in _eval_sets(outs):
        theirs = -pod.predict_features(_t(split.features)).double().numpy()
        np.testing.assert_allclose(ours.score(split), theirs, rtol=1e-4, atol=1e-4)


def test_vim_matches_direct_numpy(outs: dict[str, Outputs]) -> None:
    """Independent route: min-norm least squares for u, SVD right singular vectors for the principal
    space, residual as the part left after projecting onto it, logits recomputed from the features.

    The fixture's logits come from the float32 net, so they equal ``features @ W.T + b`` only to about
    1e-8 relative; hence rtol 1e-6 rather than float64 round-off.
    """
    train = outs["train"]
    dim = 5
    w, b, f = train.weight, train.bias, train.features
    u = np.linalg.lstsq(w, -b, rcond=None)[0]
    _, _, vt = np.linalg.svd(f - u, full_matrices=False)
    principal = vt[:dim].T  # top right singular vectors of X = top eigenvectors of X^T X / N

    def residual(feats: np.ndarray) -> np.ndarray:
        x = feats - u
        return np.sqrt(np.sum((x - x @ principal @ principal.T) ** 2, axis=1))

    alpha = np.mean(np.max(f @ w.T + b, axis=1)) / np.mean(residual(f))
    detector = ViM(dim=dim).fit(train)
    assert detector.alpha_ == pytest.approx(alpha, rel=1e-6)
    for split in _eval_sets(outs):
        expected = scipy_logsumexp(split.features @ w.T + b, axis=1) - alpha * residual(split.features)
        np.testing.assert_allclose(detector.score(split), expected, rtol=1e-6, atol=1e-6)


def test_vim_auto_dim_and_validation(outs: dict[str, Outputs]) -> None:
    assert auto_dim(2048) == 1000
    assert auto_dim(4096) == 1000
    assert auto_dim(512) == 256
    assert ViM().fit(outs["train"]).dim_ == 8  # D = 16
    for bad in (16, 17):
        with pytest.raises(ValueError, match=rf"dim={bad} with D=16"):
            ViM(dim=bad).fit(outs["train"])
    for bad in (0, -3, "full", 2.5, True):
        with pytest.raises(ValueError, match="dim"):
            ViM(dim=bad)


def test_vim_scores_are_float64_vectors(outs: dict[str, Outputs]) -> None:
    scores = ViM().fit(outs["train"]).score(outs["ood"])
    assert scores.dtype == np.float64 and scores.shape == (len(outs["ood"]),)


# ------------------------------------------------------------------------------------------- ReAct


def test_react_matches_pytorch_ood(outs: dict[str, Outputs], tiny_net: TinyNet) -> None:
    """Same definition; pytorch-ood's ``percentile`` is a fraction (0.9), ours is in percent (90).

    pytorch-ood wraps a backbone and a head; here the backbone output is the cached pooled feature
    and the head is the net's own linear layer in float64. Its score is the negated energy.
    """
    train = outs["train"]
    ours = ReAct(percentile=90.0).fit(train)
    head = tiny_net.fc.double()
    pod = PodReAct(backbone=lambda x: x, head=head, percentile=0.9)
    pod.fit_feature_maps(_t(train.features), _train_labels(train))
    assert ours.threshold_ == pytest.approx(pod.threshold, rel=1e-12)
    for split in _eval_sets(outs):
        assert np.any(split.features > ours.threshold_)  # the clip matters for this data
        theirs = -pod.predict_feature_maps(_t(split.features)).numpy()
        np.testing.assert_allclose(ours.score(split), theirs, rtol=1e-12, atol=1e-12)


def test_react_threshold_and_clipping_by_hand() -> None:
    """Percentile over all activations flattened; energy of clipped features through the head."""
    features = np.arange(1.0, 11.0).reshape(5, 2)  # activations 1..10
    weight = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]])
    bias = np.array([0.5, -0.5, 0.0])
    train = Outputs(logits=features @ weight.T + bias, features=features, weight=weight, bias=bias)
    detector = ReAct(percentile=50.0).fit(train)
    assert detector.threshold_ == pytest.approx(5.5)
    query = np.array([[1.0, 100.0]])
    out = Outputs(logits=query @ weight.T + bias, features=query, weight=weight, bias=bias)
    clipped = np.array([1.0, 5.5])
    expected = scipy_logsumexp(clipped @ weight.T + bias)
    np.testing.assert_allclose(detector.score(out), [expected], rtol=1e-12)
    with pytest.raises(ValueError, match="percent"):
        ReAct(percentile=150.0)


def test_react_fit_on_val_takes_the_percentile_from_id_val() -> None:
    """``fit_on="val"`` (OpenOOD v1.5's setup) reads the val activations; the default reads train."""
    weight = np.array([[1.0, 0.0], [0.0, 1.0]])
    bias = np.zeros(2)

    def outputs(features: np.ndarray) -> Outputs:
        return Outputs(logits=features @ weight.T + bias, features=features, weight=weight, bias=bias)

    train = outputs(np.arange(1.0, 11.0).reshape(5, 2))  # activations 1..10
    val = outputs(np.arange(11.0, 21.0).reshape(5, 2))  # activations 11..20
    assert ReAct(percentile=50.0).fit(train, val).threshold_ == pytest.approx(5.5)
    assert ReAct(percentile=50.0, fit_on="train").fit(train, val).threshold_ == pytest.approx(5.5)
    assert ReAct(percentile=50.0, fit_on="val").fit(train, val).threshold_ == pytest.approx(15.5)
    with pytest.raises(ValueError, match="ID-val"):
        ReAct(fit_on="val").fit(train)
    with pytest.raises(ValueError, match="fit_on"):
        ReAct(fit_on="test")


# ------------------------------------------------------------------------------------- Mahalanobis


def test_mds_matches_sklearn_empirical_covariance(outs: dict[str, Outputs]) -> None:
    """OpenOOD's recipe: EmpiricalCovariance of the class-centred features, its pinv precision,
    ``mahalanobis`` (squared distances) to each class mean; score = minus the smallest."""
    train = outs["train"]
    labels = train.labels
    classes = np.unique(labels)
    means = np.stack([train.features[labels == c].mean(axis=0) for c in classes])
    centred = train.features - means[np.searchsorted(classes, labels)]
    cov = EmpiricalCovariance(assume_centered=True).fit(centred)
    detector = Mahalanobis().fit(train)
    np.testing.assert_allclose(detector.means_, means, rtol=1e-12, atol=1e-12)
    for split in _eval_sets(outs):
        dist = np.stack([cov.mahalanobis(split.features - m) for m in means], axis=1)
        np.testing.assert_allclose(detector.score(split), -dist.min(axis=1), rtol=1e-8, atol=1e-8)


def test_mds_matches_pytorch_ood(outs: dict[str, Outputs]) -> None:
    """pytorch-ood scores ``0.5 * min_k d_k^T (S + 1e-6 I)^{-1} d_k`` with S the class-centred scatter
    (not divided by N) and a plain inverse; ours is ``-min_k d_k^T (S / N)^+ d_k``, so
    ``ours = -2 N * theirs`` up to the ridge. The ridge is 1e-6 against a smallest scatter eigenvalue of
    about 1.6e-3 on this data, hence rtol 2e-3. Its buffers are created in the default dtype, which is
    set to float64 here so that only the ridge differs.
    """
    train = outs["train"]
    n = len(train)
    ours = Mahalanobis().fit(train)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        pod = PodMahalanobis(None).fit_features(_t(train.features), _train_labels(train))
        theirs = {name: pod.predict_features(_t(outs[name].features)).numpy() for name in ("test", "ood")}
    finally:
        torch.set_default_dtype(previous)
    for name in ("test", "ood"):
        np.testing.assert_allclose(ours.score(outs[name]), -2.0 * n * theirs[name], rtol=2e-3)


def test_mds_by_hand() -> None:
    """Two classes, identity-like covariance: the score is minus the squared distance to the nearer mean."""
    features = np.array([[-1.0, 0.0], [1.0, 0.0], [-1.0, 10.0], [1.0, 10.0]])
    labels = np.array([0, 0, 1, 1])
    # class-centred features: (+-1, 0) -> covariance diag(1, 0); pinv ignores the degenerate axis
    train = Outputs(logits=np.zeros((4, 2)), features=features, labels=labels)
    detector = Mahalanobis().fit(train)
    np.testing.assert_allclose(detector.precision_, [[1.0, 0.0], [0.0, 0.0]], atol=1e-12)
    query = Outputs(logits=np.zeros((2, 2)), features=np.array([[3.0, 1.0], [0.5, 9.0]]))
    np.testing.assert_allclose(detector.score(query), [-9.0, -0.25], atol=1e-12)


def test_mds_needs_labels(outs: dict[str, Outputs]) -> None:
    train = outs["train"]
    with pytest.raises(ValueError, match="labels"):
        Mahalanobis().fit(Outputs(logits=train.logits, features=train.features))
    with pytest.raises(ValueError, match="-1"):
        labels = train.labels.copy()
        labels[3] = -1
        Mahalanobis().fit(Outputs(logits=train.logits, features=train.features, labels=labels))


# --------------------------------------------------------------------------------------------- KNN


def test_knn_matches_pytorch_ood(outs: dict[str, Outputs]) -> None:
    """Same neighbours (unit-normalised features, k = 50). pytorch-ood returns the plain Euclidean
    k-th distance: ``squared=False`` is minus it, the default ``squared=True`` (OpenOOD's faiss
    IndexFlatL2 convention) is minus its square."""
    train = outs["train"]
    plain = KNN(squared=False).fit(train)
    default = KNN().fit(train)
    assert default.squared is True
    pod = PodKNN(None, k=50).fit_features(_t(train.features), _train_labels(train))
    for split in _eval_sets(outs):
        distance = pod.predict_features(_t(split.features)).numpy()
        np.testing.assert_allclose(plain.score(split), -distance, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(default.score(split), -(distance**2), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("k, batch_size", [(1, 4096), (7, 33), (400, 64)])
def test_knn_matches_sklearn(outs: dict[str, Outputs], k: int, batch_size: int) -> None:
    """Chunk sizes that do not divide N, k = 1 and k = N all give sklearn's exact k-th distance."""
    train = outs["train"]

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(unit(train.features))
    detector = KNN(k=k, batch_size=batch_size, squared=False).fit(train)
    squared = KNN(k=k, batch_size=batch_size).fit(train)
    for split in _eval_sets(outs):
        dist, _ = nn.kneighbors(unit(split.features))
        np.testing.assert_allclose(detector.score(split), -dist[:, -1], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(squared.score(split), -(dist[:, -1] ** 2), rtol=1e-9, atol=1e-9)


def test_knn_block_cap_and_float32(outs: dict[str, Outputs], monkeypatch: pytest.MonkeyPatch) -> None:
    """A training set too large for one block per batch is split further; float32 caches stay close."""
    reference = KNN(k=10).fit(outs["train"]).score(outs["ood"])
    monkeypatch.setattr(knn_module, "_MAX_BLOCK_ELEMENTS", 30 * len(outs["train"]))  # 30 query rows a block
    np.testing.assert_allclose(KNN(k=10).fit(outs["train"]).score(outs["ood"]), reference, rtol=1e-12)

    def as32(o: Outputs) -> Outputs:
        return Outputs(logits=o.logits.astype(np.float32), features=o.features.astype(np.float32))

    scores32 = KNN(k=10).fit(as32(outs["train"])).score(as32(outs["ood"]))
    assert scores32.dtype == np.float64
    np.testing.assert_allclose(scores32, reference, atol=1e-4)


def test_knn_validation(outs: dict[str, Outputs]) -> None:
    with pytest.raises(ValueError, match=r"k=401 exceeds the number of training samples \(400\)"):
        KNN(k=401).fit(outs["train"])
    for bad in ({"k": 0}, {"batch_size": 0}, {"k": 2.0}, {"squared": "yes"}):
        with pytest.raises(ValueError):
            KNN(**bad)


def test_knn_squared_is_a_monotone_map_of_the_distance(outs: dict[str, Outputs]) -> None:
    """Same ranking either way: minus the squared distance is minus the distance, squared."""
    plain = KNN(k=10, squared=False).fit(outs["train"]).score(outs["ood"])
    squared = KNN(k=10).fit(outs["train"]).score(outs["ood"])
    np.testing.assert_allclose(squared, -(plain**2), rtol=1e-12)
    np.testing.assert_array_equal(np.argsort(squared, kind="stable"), np.argsort(plain, kind="stable"))


# ---------------------------------------------------------------------------------------- shared


@pytest.mark.parametrize("make", [ViM, ReAct, Mahalanobis, KNN])
def test_scoring_before_fit_raises(outs: dict[str, Outputs], make: type) -> None:
    with pytest.raises(RuntimeError, match="fitted"):
        make().score(outs["test"])


@pytest.mark.parametrize(
    "make, name, needs_head",
    [(ViM, "vim", True), (ReAct, "react", True), (Mahalanobis, "mds", False), (KNN, "knn", False)],
)
def test_declared_contract(make: type, name: str, needs_head: bool) -> None:
    assert (make.name, make.fusion_kind) == (name, "logit")
    assert make.requires_features and make.requires_fit
    assert make.requires_head is needs_head


@pytest.mark.parametrize("make", [Mahalanobis, KNN])
def test_id_scores_higher_than_far_ood(outs: dict[str, Outputs], make: type) -> None:
    """The OOD inputs are far-shifted, so the sign convention must put ID above them on average."""
    detector = make().fit(outs["train"])
    assert detector.score(outs["test"]).mean() > detector.score(outs["ood"]).mean()
