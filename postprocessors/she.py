"""Simplified Hopfield Energy (SHE; Zhang et al., "Out-of-Distribution Detection based on
In-Distribution Data Patterns Memorization with Modern Hopfield Energy", ICLR 2023), OpenOOD v1.5's form.

A modern Hopfield network stores patterns and scores a query by its energy against them. SHE stores
one pattern per class, the mean feature of the ID training samples of that class that the network
classifies correctly, and keeps only the term of the predicted class:

    S_c = mean { f(x_i) : y_i = c and argmax_j logit_j(x_i) = c }        (stored patterns, K x D)
    score(x) = f(x) . S_{c(x)},   c(x) = argmax_j logit_j(x)

Higher = more in-distribution: an ID feature projects strongly onto the typical correctly
classified feature of its predicted class; OOD features project less.
No hyper-parameters (OpenOOD's default metric, the inner product).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse

from dfb_ood.errors import InputError
from dfb_ood.postprocessors.base import Outputs, Postprocessor


class SHE(Postprocessor):
    """Score ``f(x) . S_{argmax logits(x)}`` with ``S`` the per-class means of correct ID-train features.

    ``fit`` needs the ID training labels; ``patterns_`` (K, D) has one row per logit column. A class
    with no correctly classified training sample (OpenOOD would store a NaN pattern for it, and score
    NaN for every sample predicted as it) gets the mean of all its labelled training features instead,
    with a warning; those classes are listed in ``fallback_classes_``. A class with no training
    sample at all is an error. The predicted class is the argmax of ``Outputs.logits`` (for a DFB
    variant, of the K class columns only), so the head itself is not read.

    Same definition as pytorch-ood's ``SHE``, which returns the negated inner product.
    """

    name = "she"
    fusion_kind = "logit"
    requires_features = True
    requires_head = False
    requires_fit = True

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> SHE:
        """Store the mean feature of the correctly classified ID training samples of each class."""
        self._check(train)
        if train.labels is None:
            raise InputError("SHE needs the ID training labels (Outputs.labels is None)")
        labels = np.asarray(train.labels)
        if np.any(labels < 0):
            raise InputError(
                f"SHE got {int(np.sum(labels < 0))} training sample(s) labelled -1 (OOD); "
                "fit it on labelled ID training outputs only"
            )
        predictions = np.argmax(train.logits, axis=1)
        features = np.asarray(train.features, dtype=np.float64)
        num_classes = train.logits.shape[1]
        used = labels == predictions
        fallback = np.flatnonzero(np.bincount(labels[used], minlength=num_classes) == 0)
        if fallback.size:
            used |= np.isin(labels, fallback)
            warnings.warn(
                f"SHE: class(es) {fallback.tolist()[:10]} have no correctly classified training sample; "
                "their stored patterns are the means of all their training features",
                stacklevel=2,
            )
        counts = np.bincount(labels[used], minlength=num_classes)
        if np.any(counts == 0):
            raise InputError(
                f"SHE: class(es) {np.flatnonzero(counts == 0).tolist()[:10]} have no training sample, "
                "so they have no stored pattern"
            )
        # Sparse (K, N) membership of the samples used: all class sums in one O(N * D) product.
        rows = labels[used]
        membership = sparse.csr_matrix(
            (np.ones(len(rows)), (rows, np.flatnonzero(used))), shape=(num_classes, len(labels))
        )
        self.patterns_ = np.asarray(membership @ features) / counts[:, None]
        self.fallback_classes_ = fallback
        self.fitted_ = True
        return self

    def _score(self, outputs: Outputs) -> np.ndarray:
        features = np.asarray(outputs.features, dtype=np.float64)
        if features.shape[1] != self.patterns_.shape[1] or outputs.logits.shape[1] != len(self.patterns_):
            raise InputError(
                f"SHE was fitted on {self.patterns_.shape[1]}-d features and {len(self.patterns_)} classes; "
                f"got {features.shape[1]}-d features and {outputs.logits.shape[1]} logit columns"
            )
        predictions = np.argmax(outputs.logits, axis=1)
        return np.einsum("nd,nd->n", features, self.patterns_[predictions])
