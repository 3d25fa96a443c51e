"""Relative Mahalanobis distance (RMDS; Ren et al., "A Simple Fix to Mahalanobis Distance for
Improving Near-OOD Detection", arXiv 2106.09022, 2021), OpenOOD v1.5's feature-level form.

Plain Mahalanobis (``mds``) scores how far a feature is from the nearest class Gaussian. Features
also vary along directions that say nothing about the class (image statistics shared by ID and
near-OOD data), which inflates every class distance alike. RMDS subtracts the distance under one
"background" Gaussian fitted to all ID training features, class labels ignored, so only the part of
the distance that the class structure explains remains:

    d_k(x) = (x - mu_k)^T S^+ (x - mu_k)        class Gaussians, shared covariance S (as ``mds``)
    d_0(x) = (x - mu_0)^T S_0^+ (x - mu_0)      background: mean mu_0, covariance S_0 of all features
    score(x) = max_k -(d_k(x) - d_0(x)) = d_0(x) - min_k d_k(x)

Higher = more in-distribution. Both covariances are biased (divided by N), as OpenOOD's
``EmpiricalCovariance`` fits compute them; both precisions are pseudo-inverses with the relative
eigenvalue cut-off ``rcond`` of ``mds`` (see :func:`~postprocessors._numerics.psd_pinv`). The
background covariance has the class-mean scatter on top of the shared one, but the same dead or
almost-constant units: without the cut, ``d_0`` and ``d_k`` each carry the float32 noise of those
directions, weighted up to 1e12 times the top direction (eigenvalues 7e-13 of the largest were seen
on real features), and their difference is not reproducible.
"""

from __future__ import annotations

import numpy as np

from dfb_ood.postprocessors._numerics import psd_pinv
from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.mds import Mahalanobis


class RelativeMahalanobis(Mahalanobis):
    """Score ``d_0(x) - min_k d_k(x)``: the Mahalanobis score plus the background distance.

    ``fit`` is :class:`~postprocessors.mds.Mahalanobis`'s (class means, shared precision; it needs
    the ID training labels) plus ``background_mean_`` (D,) and ``background_precision_`` (D, D), the
    mean of all training features and the pseudo-inverse of their covariance ``(X - mu_0)^T (X - mu_0) / N``
    (with ``background_rank_`` the number of eigenvalues kept).

    Differences from OpenOOD v1.5's ``RMDSPostprocessor``: it casts the features to float32,
    pseudo-inverts with scipy's ``D * eps`` (float64) cut instead of ``rcond`` (the same where every
    eigenvalue is above ``rcond`` times the largest) and scores classes ``0..C-1`` (a class absent from
    the training labels gives NaN means); this fits in float64 and scores the classes present.
    Differences from pytorch-ood's ``RMD``: that one does not divide the scatter matrices by N and adds
    a 1e-6 ridge before a plain inverse, so its score is ``-score / N`` up to the ridge (it grows with
    outlierness).
    """

    name = "rmds"

    def fit(
        self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None
    ) -> RelativeMahalanobis:
        """Fit the class Gaussians (as ``mds``) and the background Gaussian on all ID training features."""
        super().fit(train, val, ood_val)
        features = np.asarray(train.features, dtype=np.float64)
        self.background_mean_ = self.train_mean_  # the mean of all training features, as mds centres on
        centred = features - self.background_mean_
        self.background_precision_, self.background_rank_ = psd_pinv(
            (centred.T @ centred) / features.shape[0], self.rcond
        )
        return self

    def background_distance(self, features: np.ndarray) -> np.ndarray:
        """``d_0``: squared Mahalanobis distance (N,) under the background Gaussian."""
        centred = np.asarray(features, dtype=np.float64) - self.background_mean_
        return np.maximum(np.einsum("nd,nd->n", centred @ self.background_precision_, centred), 0.0)

    def _score(self, outputs: Outputs) -> np.ndarray:
        class_score = super()._score(outputs)  # -min_k d_k, with the feature-size check
        return class_score + self.background_distance(outputs.features)
