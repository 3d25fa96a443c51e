"""Maximum logit score (MLS, Hendrycks et al. 2022, "Scaling OOD detection to real-world settings")."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dfb_ood.postprocessors.base import FusionKind, Outputs, Postprocessor


class MaxLogit(Postprocessor):
    """Score = ``max_c logits_c``.

    Unlike MSP it keeps the logits' magnitude, which softmax normalises away; that magnitude is what
    separates ID from OOD on many-class problems.
    """

    name: ClassVar[str] = "mls"
    fusion_kind: ClassVar[FusionKind] = "logit"

    def _score(self, outputs: Outputs) -> np.ndarray:
        return np.max(outputs.logits, axis=1).astype(np.float64, copy=False)
