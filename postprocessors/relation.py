"""Relation (Kim et al., "Neural Relation Graph: A Unified Framework for Identifying Label Noise and
Outlier Data", NeurIPS 2023), in the form OpenOOD v1.5 benchmarks.

The paper builds a graph over data points whose edges are relations: two samples are related when
their features point the same way *and* the network gives them similar class predictions. An ID
sample has many strong relations to the ID training set; an outlier has few. OpenOOD v1.5's
post-hoc form keeps one statistic of that graph, the summed edge weight from a query to every ID
training sample:

    r(x, x_i) = max(cos(f(x), f(x_i)), 0) * <p(x), p(x_i)>      p = softmax(logits)
    score(x) = sum_i [r(x, x_i) > t] * r(x, x_i)^pow            t = 0.03, pow = 1 by default

Higher = more in-distribution. ``<p(x), p(x_i)>`` is the soft form of "the two are predicted as the
same class": near 1 when both are confidently the same class, near 0 when they disagree. Both
factors are non-negative, so the sign that OpenOOD multiplies in is always +1 and is dropped here.

Cost: every query meets every ID training sample (N_train x (D + K) multiply-adds per query), which
is what OpenOOD does; e.g. CIFAR-10's 50,000 x 522 is cheap, ImageNet's 1.28M x 3048 per query is
not. Differences from OpenOOD v1.5: its normaliser divides by ``sqrt(||f||^2 + 1e-10)``, this one by
``max(||f||, 1e-12)``; it computes in float32 on the GPU, this in float64 when the features are
float64 and in float32 otherwise. No peer in pytorch-ood 0.4.
"""

from __future__ import annotations

import numpy as np
import torch

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import softmax
from dfb_ood.postprocessors.base import Outputs, Postprocessor

# Upper bound on the elements of one (queries x train) relation block (as in knn.py).
_MAX_BLOCK_ELEMENTS = 2**26


def _l2_normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)  # zero rows stay zero


class Relation(Postprocessor):
    """Score ``sum_i [r_i > threshold] * r_i ** power`` with ``r_i = max(cos, 0) * <p, p_i>`` over ID train.

    ``fit`` stores the normalised training features ``bank_features_`` (N, D) and their softmax
    probabilities ``bank_probs_`` (N, K). ``power`` is OpenOOD's ``pow`` (its kernel temperature,
    searched over 1, 2, 4, 6, 8); ``threshold`` its fixed cut-off of weak edges (0.03). Queries are
    processed ``batch_size`` at a time (fewer when a block would exceed 2**26 elements).
    """

    name = "relation"
    fusion_kind = "logit"
    requires_features = True
    requires_head = False
    requires_fit = True

    def __init__(self, power: float = 1, threshold: float = 0.03, batch_size: int = 1024) -> None:
        if isinstance(power, bool) or not isinstance(power, (int, float, np.number)) or not power > 0:
            raise InputError(f"Relation power must be a positive number, got {power!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise InputError(f"Relation threshold must lie in [0, 1), got {threshold!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"Relation batch_size must be a positive int, got {batch_size!r}")
        self.power = power
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> Relation:
        """Store the normalised ID training features and their softmax probabilities (the bank)."""
        self._check(train)
        features = np.asarray(train.features)
        dtype = np.float64 if features.dtype == np.float64 else np.float32
        self.bank_features_ = _l2_normalise(features.astype(np.float64)).astype(dtype, copy=False)
        self.bank_probs_ = softmax(train.logits).astype(dtype, copy=False)
        self.fitted_ = True
        return self

    def _score(self, outputs: Outputs) -> np.ndarray:
        features = np.asarray(outputs.features)
        if (
            features.shape[1] != self.bank_features_.shape[1]
            or outputs.logits.shape[1] != self.bank_probs_.shape[1]
        ):
            raise InputError(
                f"Relation was fitted on {self.bank_features_.shape[1]}-d features and "
                f"{self.bank_probs_.shape[1]} classes; got {features.shape[1]}-d features and "
                f"{outputs.logits.shape[1]} logit columns"
            )
        dtype = np.float64 if np.float64 in (features.dtype, self.bank_features_.dtype) else np.float32
        queries = _l2_normalise(features.astype(np.float64)).astype(dtype, copy=False)
        probs = softmax(outputs.logits).astype(dtype, copy=False)
        bank_features = torch.from_numpy(self.bank_features_.astype(dtype, copy=False))
        bank_probs = torch.from_numpy(self.bank_probs_.astype(dtype, copy=False))
        rows = max(1, min(self.batch_size, _MAX_BLOCK_ELEMENTS // bank_features.shape[0]))
        scores = np.empty(len(queries), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(queries), rows):
                cosine = torch.from_numpy(queries[start : start + rows]) @ bank_features.T
                relation = cosine.clamp_(min=0.0).mul_(
                    torch.from_numpy(probs[start : start + rows]) @ bank_probs.T
                )
                relation = torch.where(relation > self.threshold, relation, torch.zeros_like(relation))
                scores[start : start + rows] = (
                    relation.pow_(self.power).sum(dim=1, dtype=torch.float64).numpy()
                )
        return scores
