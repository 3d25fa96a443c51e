"""Deep nearest neighbours (Sun et al., ICML 2022): distance to the k-th nearest ID training feature.

Non-parametric, so it assumes no class-conditional Gaussian (unlike Mahalanobis). Features are
L2-normalised first: the paper found the direction of a feature, not its norm, carries the signal.
The search is exact and needs no faiss: a chunked matrix product plus ``torch.topk``.

Squared or not: OpenOOD v1.5 searches a faiss ``IndexFlatL2``, which returns *squared* L2 distances,
and scores ``-D[:, -1]``, i.e. minus the squared distance to the k-th neighbour. ``squared=True``
(the default) follows OpenOOD; ``squared=False`` gives the paper's and pytorch-ood's plain distance
(this project's earlier default). On unit vectors the two are a monotone map of each other
(``d^2 = 2 - 2 cos``), so AUROC and FPR@95 are the same; the scale, and hence DFB's Eq. 7 fusion
``S_f + S_b / T``, is not.
"""

from __future__ import annotations

import numpy as np
import torch

from dfb_ood.errors import InputError
from dfb_ood.postprocessors.base import Outputs, Postprocessor

# Upper bound on the elements of one (queries x train) similarity block, so that a large training
# set (e.g. ImageNet's 1.28M) does not need a multi-gigabyte block per chunk of queries.
_MAX_BLOCK_ELEMENTS = 2**27


def _l2_normalise(features: np.ndarray, dtype: np.dtype) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(dtype, copy=False)  # zero rows stay zero


class KNN(Postprocessor):
    """Score ``-||z - z_(k)||^2`` (``squared=True``, OpenOOD's) or ``-||z - z_(k)||`` (``squared=False``).

    z is the L2-normalised feature and z_(k) its k-th nearest normalised ID training feature. ``fit``
    stores the normalised training features in ``train_``. For unit vectors ``||a - b||^2 = 2 - 2 a.b``,
    so the k-th nearest neighbour is the k-th largest dot product; the squared distance is clamped at 0
    (rounding), and its square root taken when ``squared=False``. Queries are processed ``batch_size``
    at a time (fewer when the training set is so large that a block would exceed 2**27 elements). The
    arithmetic runs in float64 when the training or query features are float64 and in float32
    otherwise, so float32 caches keep float32 speed and float64 callers get float64 accuracy.
    """

    name = "knn"
    fusion_kind = "logit"
    requires_logits = False
    requires_features = True
    requires_head = False
    requires_fit = True

    def __init__(self, k: int = 50, batch_size: int = 4096, squared: bool = True) -> None:
        for label, value in (("k", k), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"KNN {label} must be a positive int, got {value!r}")
        if not isinstance(squared, (bool, np.bool_)):
            raise InputError(f"KNN squared must be true or false, got {squared!r}")
        self.k = int(k)
        self.batch_size = int(batch_size)
        self.squared = bool(squared)

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> KNN:
        """Store the L2-normalised ID training features (the neighbour pool)."""
        self._check(train)
        features = np.asarray(train.features)
        if self.k > features.shape[0]:
            raise InputError(
                f"KNN k={self.k} exceeds the number of training samples ({features.shape[0]}); "
                "lower k or fit on more ID data"
            )
        dtype = np.float64 if features.dtype == np.float64 else np.float32
        self.train_ = _l2_normalise(features.astype(np.float64, copy=False), dtype)
        self.fitted_ = True
        return self

    def _score(self, outputs: Outputs) -> np.ndarray:
        queries = np.asarray(outputs.features)
        if queries.shape[1] != self.train_.shape[1]:
            raise InputError(
                f"KNN was fitted on {self.train_.shape[1]}-d features but got {queries.shape[1]}-d features"
            )
        dtype = np.float64 if np.float64 in (queries.dtype, self.train_.dtype) else np.float32
        queries = _l2_normalise(queries.astype(np.float64, copy=False), dtype)
        pool = torch.from_numpy(self.train_.astype(dtype, copy=False))
        n_train = pool.shape[0]
        rows = max(1, min(self.batch_size, _MAX_BLOCK_ELEMENTS // n_train))
        kth_similarity = np.empty(queries.shape[0], dtype=np.float64)
        with torch.no_grad():
            for start in range(0, queries.shape[0], rows):
                block = torch.from_numpy(queries[start : start + rows]) @ pool.T
                top = torch.topk(block, self.k, dim=1, largest=True, sorted=False).values
                kth_similarity[start : start + rows] = top.min(dim=1).values.double().numpy()
        squared_distance = np.maximum(2.0 - 2.0 * kth_similarity, 0.0)
        return -squared_distance if self.squared else -np.sqrt(squared_distance)
