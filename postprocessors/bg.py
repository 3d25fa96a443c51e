"""The background-only score of DFB (the paper's Table 3, column BG)."""

from __future__ import annotations

import numpy as np

from dfb_ood.postprocessors.base import Outputs, Postprocessor


class BackgroundScore(Postprocessor):
    """``S_b(x) = L[K]``: the DFB net's background logit, on its own.

    A high background logit means the image's background looks like the ID training backgrounds,
    so it is a valid "more in-distribution" score without any foreground term. It reads the
    background either from the DFB net's last column or from ``Outputs.bg_logit``.
    """

    name = "bg"
    fusion_kind = "logit"

    def fit(
        self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None
    ) -> BackgroundScore:
        train.split_background()
        self.fitted_ = True
        return self

    def score(self, outputs: Outputs) -> np.ndarray:
        _, background = outputs.split_background()
        return np.asarray(background, dtype=np.float64).copy()
