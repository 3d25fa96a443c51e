"""ReAct (Sun et al., NeurIPS 2021): clip penultimate activations, then score with the energy.

OOD inputs tend to produce a few abnormally large activations that inflate the logits; capping
every activation at a high percentile of the ID activations removes most of that inflation while
leaving ID samples almost untouched.
"""

from __future__ import annotations

import numpy as np

from postprocessors._numerics import logsumexp
from postprocessors.base import Outputs, Postprocessor


class ReAct(Postprocessor):
    """Energy of the head applied to clipped features: ``logsumexp(min(feat, c) @ W.T + b)``.

    ``percentile`` is on the 0-100 scale (OpenOOD's convention; pytorch-ood takes a fraction in
    [0, 1] instead). ``fit`` sets the clip value ``threshold_`` to that percentile (numpy's linear
    interpolation) of all ID training feature activations, flattened over samples and dimensions.
    The logits are recomputed from the clipped features, so ``Outputs.logits`` are not read.
    """

    name = "react"
    fusion_kind = "logit"
    requires_features = True
    requires_head = True
    requires_fit = True

    def __init__(self, percentile: float = 90.0) -> None:
        if isinstance(percentile, bool) or not 0.0 <= float(percentile) <= 100.0:
            raise ValueError(
                f"ReAct percentile must lie in [0, 100] (percent, not a fraction), got {percentile!r}"
            )
        self.percentile = float(percentile)

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> ReAct:
        """Set ``threshold_`` to the ``percentile``-th percentile of the ID training activations."""
        self._check(train)
        activations = np.asarray(train.features, dtype=np.float64).ravel()
        self.threshold_ = float(np.percentile(activations, self.percentile))
        self.fitted_ = True
        return self

    def _score(self, outputs: Outputs) -> np.ndarray:
        features = np.minimum(np.asarray(outputs.features, dtype=np.float64), self.threshold_)
        weight = np.asarray(outputs.weight, dtype=np.float64)
        bias = np.asarray(outputs.bias, dtype=np.float64)
        return np.asarray(logsumexp(features @ weight.T + bias), dtype=np.float64)
