"""SCALE (Xu et al., "Scaling for Training Time and Post-hoc Out-of-distribution Detection
Enhancement", ICLR 2024): scale the whole pooled feature by a per-sample factor, then energy.

Per sample, with ``x`` the pooled feature (D,), ``k = D - round(D * percentile / 100)``,
``s1 = sum(x)`` and ``s2`` = the sum of the k largest activations:

    r = s1 / s2,    x' = x * exp(r),    score = logsumexp(x' @ W.T + b).

Unlike ASH-S (:mod:`postprocessors.ash`), nothing is pruned: the top-k selection only enters the
factor, so which of several tied activations counts as "kept" does not change ``s2``. For
non-negative features ``r`` lies in [1, D / k]. The paper derives SCALE from its finding that
ASH-S's gain comes from the scaling factor, not from the pruning.

Defaults as OpenOOD v1.5 (``scale.yml``): percentile 85, sweep 65..95, applied to the pooled
feature. ``percentile`` is in percent; pytorch-ood takes a fraction. The zero-sum and non-finite
guards are those of :mod:`postprocessors.ash`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dfb_ood.postprocessors.ash import check_percentile, kept_count, shaped_energy, sum_ratio, top_k_mask
from dfb_ood.postprocessors.base import FusionKind, Outputs, Postprocessor


class SCALE(Postprocessor):
    """Energy of the head applied to ``x * exp(sum(x) / sum(top-k of x))``; no fitting."""

    name: ClassVar[str] = "scale"
    fusion_kind: ClassVar[FusionKind] = "logit"
    requires_logits: ClassVar[bool] = False
    requires_features: ClassVar[bool] = True
    requires_head: ClassVar[bool] = True

    def __init__(self, percentile: float = 85.0) -> None:
        self.percentile = check_percentile("SCALE", percentile)

    def shape(self, features: np.ndarray) -> np.ndarray:
        """The scaled features ``x * exp(s1 / s2)`` (N, D), float64."""
        k = kept_count("SCALE", features.shape[1], self.percentile)
        kept_sum = np.where(top_k_mask(features, k), features, 0.0).sum(axis=1)
        ratio = sum_ratio(features.sum(axis=1), kept_sum)
        with np.errstate(over="ignore", invalid="ignore"):
            return features * np.exp(ratio)[:, None]

    def _score(self, outputs: Outputs) -> np.ndarray:
        return shaped_energy(self.shape, outputs, "SCALE")
