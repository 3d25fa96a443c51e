"""DICE (Sun & Li, "DICE: Leveraging Sparsification for Out-of-Distribution Detection", ECCV 2022):
sparsify the head's weight by each weight's contribution on ID data, then energy.

With ``m = mean over ID-train of the pooled features`` (D,), the contribution of weight ``W[c, d]``
is ``V[c, d] = m[d] * W[c, d]``. The threshold ``t`` is the ``p``-th percentile of all C * D
contributions (numpy's linear interpolation, as OpenOOD's ``np.percentile``), the mask keeps the
weights with ``V > t`` (strictly), and

    score = logsumexp(x @ (W * mask).T + b)        (the bias is not masked).

``p`` is the sparsity in percent (0-100), as in OpenOOD v1.5, whose default is 90; pytorch-ood takes
a fraction. Contributions are signed (a large negative weight on a strongly active unit is among the
first dropped), as in the paper, OpenOOD and pytorch-ood. OpenOOD computes the mean on the ID train
split; so does ``fit`` here. ``p = 100`` would drop every weight and is rejected.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import logsumexp
from dfb_ood.postprocessors.base import FusionKind, Outputs, Postprocessor


class DICE(Postprocessor):
    """Energy of the logits of a head whose weights of lowest ID contribution are zeroed.

    ``fit`` sets ``mean_activation_`` (D,), ``threshold_`` and ``mask_`` (C, D). Scoring applies
    ``mask_`` to the head handed in with the outputs, which must have the shape it was fitted on.
    """

    name: ClassVar[str] = "dice"
    fusion_kind: ClassVar[FusionKind] = "logit"
    requires_logits: ClassVar[bool] = False
    requires_features: ClassVar[bool] = True
    requires_head: ClassVar[bool] = True
    requires_fit: ClassVar[bool] = True

    def __init__(self, p: float = 90.0) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise InputError(f"DICE p must be a number in [0, 100) (percent), got {p!r}")
        if not 0.0 <= float(p) < 100.0:
            raise InputError(
                f"DICE p must lie in [0, 100) (percent, not a fraction; 100 would drop every weight), "
                f"got {p!r}"
            )
        self.p = float(p)

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> DICE:
        """Mean ID-train feature, contributions ``m * W``, and the mask of those above the p-th percentile."""
        self._check(train)
        weight = np.asarray(train.weight, dtype=np.float64)
        self.mean_activation_ = np.asarray(train.features, dtype=np.float64).mean(axis=0)
        contribution = self.mean_activation_[None, :] * weight
        self.threshold_ = float(np.percentile(contribution, self.p))
        self.mask_ = contribution > self.threshold_
        if not self.mask_.any():
            raise InputError(
                f"DICE p={self.p:g} keeps no weight: all {contribution.size} contributions are equal to "
                f"the threshold {self.threshold_:g}"
            )
        self.fitted_ = True
        return self

    @property
    def sparsity_(self) -> float:
        """The fraction of head weights actually dropped (about p / 100, more where contributions tie)."""
        return 1.0 - float(np.count_nonzero(self.mask_)) / self.mask_.size

    def _score(self, outputs: Outputs) -> np.ndarray:
        weight = np.asarray(outputs.weight, dtype=np.float64)
        if weight.shape != self.mask_.shape:
            raise InputError(f"DICE was fitted on a {self.mask_.shape} head, got one of shape {weight.shape}")
        features = np.asarray(outputs.features, dtype=np.float64)
        bias = np.asarray(outputs.bias, dtype=np.float64)
        return np.asarray(logsumexp(features @ np.where(self.mask_, weight, 0.0).T + bias), dtype=np.float64)
