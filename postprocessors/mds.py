"""Mahalanobis distance detector (Lee et al., NeurIPS 2018), OpenOOD's feature-level variant.

ID features of each class are modelled as a Gaussian with its own mean and one covariance shared
by all classes (a linear-discriminant model). A sample far, in that metric, from every class mean
is unlikely to be ID. No input perturbation and no multi-layer ensemble: those need the network.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from postprocessors.base import Outputs, Postprocessor


class Mahalanobis(Postprocessor):
    """Score ``max_k -(x - mu_k)^T S^+ (x - mu_k)``: minus the smallest squared Mahalanobis distance.

    ``fit`` needs the ID training labels. ``means_`` (K, D) are the class means of the features;
    the shared covariance is the (biased, divided by N) covariance of the class-centred features,
    as scikit-learn's ``EmpiricalCovariance`` computes it, and ``precision_`` is its
    pseudo-inverse, so singular covariances (dead ReLU units, D > N) do not break the fit.
    Only classes present in the training labels get a mean; ``classes_`` lists them.

    Differences from pytorch-ood's ``Mahalanobis``: that one does not divide the scatter by N, adds a
    1e-6 ridge, inverts instead of pseudo-inverting, and scores half the distance; the ranking of
    samples is the same up to the ridge.
    """

    name = "mds"
    fusion_kind = "logit"
    requires_logits = False
    requires_features = True
    requires_head = False
    requires_fit = True

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> Mahalanobis:
        """Estimate the class means and the shared precision from labelled ID training features."""
        self._check(train)
        if train.labels is None:
            raise ValueError("Mahalanobis needs the ID training labels (Outputs.labels is None)")
        labels = np.asarray(train.labels)
        if np.any(labels < 0):
            raise ValueError(
                f"Mahalanobis got {int(np.sum(labels < 0))} training sample(s) labelled -1 (OOD); "
                "fit it on labelled ID training outputs only"
            )
        features = np.asarray(train.features, dtype=np.float64)
        classes, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(-1)
        counts = np.bincount(inverse, minlength=len(classes)).astype(np.float64)
        # Sparse (K, N) one-hot membership: per-class sums in one O(N * D) product, no per-class loop.
        membership = sparse.csr_matrix(
            (np.ones(len(inverse)), (inverse, np.arange(len(inverse)))), shape=(len(classes), len(inverse))
        )
        means = np.asarray(membership @ features) / counts[:, None]
        centred = features - means[inverse]
        covariance = (centred.T @ centred) / features.shape[0]
        self.classes_ = classes
        self.means_ = means
        self.precision_ = np.linalg.pinv(covariance, hermitian=True)
        # Precomputed pieces of the expanded quadratic form, see _score.
        self.precision_means_ = self.means_ @ self.precision_  # (K, D)
        self.mean_norms_ = np.einsum("kd,kd->k", self.precision_means_, self.means_)  # (K,)
        self.fitted_ = True
        return self

    def _score(self, outputs: Outputs) -> np.ndarray:
        x = np.asarray(outputs.features, dtype=np.float64)
        if x.shape[1] != self.means_.shape[1]:
            raise ValueError(
                f"Mahalanobis was fitted on {self.means_.shape[1]}-d features but got {x.shape[1]}-d features"
            )
        # (x - m)^T P (x - m) = x^T P x - 2 m^T P x + m^T P m; the smallest over classes in one product.
        x_norm = np.einsum("nd,nd->n", x @ self.precision_, x)
        closest = (2.0 * (x @ self.precision_means_.T) - self.mean_norms_).max(axis=1)
        squared_distance = np.maximum(x_norm - closest, 0.0)  # rounding can push it just below 0
        return -squared_distance
