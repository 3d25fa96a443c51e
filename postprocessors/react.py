"""ReAct (Sun et al., NeurIPS 2021): clip penultimate activations, then score with the energy.

OOD inputs tend to produce a few abnormally large activations that inflate the logits; capping
every activation at a high percentile of the ID activations removes most of that inflation while
leaving ID samples almost untouched.

Where the clip value comes from: OpenOOD v1.5 takes the percentile over the ID-*val* activations
(its ``setup`` reads ``id_loader_dict['val']``); this project takes it from ID-*train* by default,
where every other detector here fits. ``fit_on="val"`` follows OpenOOD. The two thresholds differ by
the sampling noise of a high percentile and by any difference between the two ID splits.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import logsumexp
from dfb_ood.postprocessors.base import Outputs, Postprocessor


class ReAct(Postprocessor):
    """Energy of the head applied to clipped features: ``logsumexp(min(feat, c) @ W.T + b)``.

    ``percentile`` is on the 0-100 scale (OpenOOD's convention; pytorch-ood takes a fraction in
    [0, 1] instead). ``fit`` sets the clip value ``threshold_`` to that percentile (numpy's linear
    interpolation) of all ID feature activations, flattened over samples and dimensions, of the
    training outputs (``fit_on="train"``, the default) or of the ID-val outputs (``fit_on="val"``,
    OpenOOD v1.5's choice; ``fit`` then needs ``val``). The logits are recomputed from the clipped
    features, so ``Outputs.logits`` are not read.
    """

    name = "react"
    fusion_kind = "logit"
    requires_logits = False
    requires_features = True
    requires_head = True
    requires_fit = True

    def __init__(self, percentile: float = 90.0, fit_on: Literal["train", "val"] = "train") -> None:
        if isinstance(percentile, bool) or not 0.0 <= float(percentile) <= 100.0:
            raise InputError(
                f"ReAct percentile must lie in [0, 100] (percent, not a fraction), got {percentile!r}"
            )
        if fit_on not in ("train", "val"):
            raise InputError(f"ReAct fit_on must be 'train' or 'val', got {fit_on!r}")
        self.percentile = float(percentile)
        self.fit_on = fit_on

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> ReAct:
        """Set ``threshold_`` to the ``percentile``-th percentile of the ID-train (or ID-val) activations."""
        self._check(train)
        source = train
        if self.fit_on == "val":
            if val is None:
                raise InputError("ReAct(fit_on='val') takes its clip value from ID-val outputs; none given")
            self._check(val)
            source = val
        activations = np.asarray(source.features, dtype=np.float64).ravel()
        self.threshold_ = float(np.percentile(activations, self.percentile))
        self.fitted_ = True
        return self

    def _score(self, outputs: Outputs) -> np.ndarray:
        features = np.minimum(np.asarray(outputs.features, dtype=np.float64), self.threshold_)
        weight = np.asarray(outputs.weight, dtype=np.float64)
        bias = np.asarray(outputs.bias, dtype=np.float64)
        return np.asarray(logsumexp(features @ weight.T + bias), dtype=np.float64)
