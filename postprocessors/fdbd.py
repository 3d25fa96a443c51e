"""fDBD (Liu & Qin, "Fast Decision Boundary based Out-of-Distribution Detector", ICML 2024).

ID features sit far from the linear head's decision boundaries; OOD features, about which the
network is less committed, sit closer. With a linear head the distance from a feature x to the
boundary between its predicted class c and another class k has a closed form; fDBD adds it up over
the other classes, then divides by the feature's distance to the mean ID training feature, so that
features far out along every direction do not win by their norm alone:

    D_k(x) = |(w_c - w_k) . x + (b_c - b_k)| / ||w_c - w_k||       c = argmax_j logit_j(x)
    score(x) = sum_{k != c} D_k(x) / ||x - mu_train||

Higher = more in-distribution. The numerator is ``logit_c - logit_k``, so the logits are read from
``Outputs.logits`` (the pipeline guarantees they are ``x @ W.T + b``) and the head only gives the
norms ``||w_c - w_k||``.

This is OpenOOD v1.5's ``fDBDPostprocessor`` exactly (the paper writes the average over the K - 1
other classes; OpenOOD sums them): the scale matters for DFB's Eq. 7 fusion, which adds a fixed-scale
background term, though not for the ranking of fDBD alone. Like OpenOOD,
``distance_as_normalizer=False`` divides by ``||x||`` instead of ``||x - mu_train||`` (OpenOOD
searches both on ID-val, departing from the paper, which uses the training mean). pytorch-ood's
``fDBD`` is the averaged, mean-distance form (negated), in float32: ours divided by K - 1.
"""

from __future__ import annotations

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors.base import Outputs, Postprocessor

_TINY = 1e-12  # floor of the normaliser: a feature exactly at the training mean scores huge, not inf


class FDBD(Postprocessor):
    """Summed distance to the other classes' decision boundaries over ``||x - mu_train||`` (or ``||x||``).

    ``fit`` stores the mean ID training feature ``train_mean_`` (D,) and the (K, K) matrix
    ``boundary_norms_`` of ``||w_c - w_k||`` (its diagonal set to 1; the class's own term is 0 anyway),
    computed from the Gram matrix of the head rows so that a 1000-class head costs K x K, not K x K x D.
    Two classes with identical weight rows have no finite boundary distance and are rejected.

    ``distance_as_normalizer``: ``True`` (the paper's, OpenOOD's default) divides by the distance to
    ``train_mean_``; ``False`` by the feature norm.
    """

    name = "fdbd"
    fusion_kind = "logit"
    requires_features = True
    requires_head = True
    requires_fit = True

    def __init__(self, distance_as_normalizer: bool = True) -> None:
        if not isinstance(distance_as_normalizer, (bool, np.bool_)):
            raise InputError(
                f"fDBD distance_as_normalizer must be true or false, got {distance_as_normalizer!r}"
            )
        self.distance_as_normalizer = bool(distance_as_normalizer)

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> FDBD:
        """Store the mean ID training feature and the norms of the pairwise head-row differences."""
        self._check(train)
        weight = np.asarray(train.weight, dtype=np.float64)
        k = weight.shape[0]
        if k < 2:
            raise InputError("fDBD needs at least two classes (a decision boundary)")
        gram = weight @ weight.T
        sq_norms = np.diag(gram)
        boundary_norms = np.sqrt(np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram, 0.0))
        np.fill_diagonal(boundary_norms, 1.0)
        if np.any(boundary_norms == 0.0):
            pairs = np.argwhere(boundary_norms == 0.0)
            raise InputError(f"fDBD: head rows {pairs[0].tolist()} are identical, so they have no boundary")
        self.boundary_norms_ = boundary_norms
        self.train_mean_ = np.asarray(train.features, dtype=np.float64).mean(axis=0)
        self.fitted_ = True
        return self

    def _score(self, outputs: Outputs) -> np.ndarray:
        features = np.asarray(outputs.features, dtype=np.float64)
        logits = np.asarray(outputs.logits, dtype=np.float64)
        k = self.boundary_norms_.shape[0]
        if logits.shape[1] != k or features.shape[1] != self.train_mean_.shape[0]:
            raise InputError(
                f"fDBD was fitted on {k} classes and {self.train_mean_.shape[0]}-d features; got "
                f"{logits.shape[1]} logit columns and {features.shape[1]}-d features"
            )
        predicted = np.argmax(logits, axis=1)
        gaps = logits[np.arange(len(logits)), predicted][:, None] - logits  # >= 0; 0 for the class itself
        total_distance = (gaps / self.boundary_norms_[predicted]).sum(axis=1)
        reference = features - self.train_mean_ if self.distance_as_normalizer else features
        return total_distance / np.maximum(np.linalg.norm(reference, axis=1), _TINY)
