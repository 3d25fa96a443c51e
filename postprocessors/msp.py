"""Maximum softmax probability (MSP, Hendrycks & Gimpel 2017), the baseline all detectors are measured by."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dfb_ood.postprocessors._numerics import logsumexp
from dfb_ood.postprocessors.base import FusionKind, Outputs, Postprocessor


class MSP(Postprocessor):
    """Score = ``max_c softmax(logits)_c``, in [1/C, 1].

    Computed as ``exp(max logit - logsumexp(logits))`` so that it is exact to float64 rounding even
    for very large logits. Its values are bounded probabilities, hence ``fusion_kind = "softmax"``.
    """

    name: ClassVar[str] = "msp"
    fusion_kind: ClassVar[FusionKind] = "softmax"

    def _score(self, outputs: Outputs) -> np.ndarray:
        logits = outputs.logits.astype(np.float64, copy=False)
        return np.exp(np.max(logits, axis=1) - logsumexp(logits))
