"""GradNorm (Huang, Geng & Li, "On the Importance of Gradients for Detecting Distributional Shifts in
the Wild", NeurIPS 2021): the L1 norm of the gradient, with respect to the last layer's weight, of the
cross-entropy between the softmax of ``z / T`` and all-ones targets, in closed form.

For one sample with pooled feature ``x`` (D,), logits ``z = W x + b`` (C,) and ``p = softmax(z / T)``,
the official code and OpenOOD v1.5 take the loss ``L = -sum_c log p_c`` (targets of ones, summed over
the classes), which is ``C`` times ``KL(u || p) + log C`` with ``u`` the uniform distribution. Then

    dL/dz = (C p - 1) / T = C (p - u) / T,    dL/dW = (C (p - u) / T) x^T      (C, D, rank one),

so the L1 norm of the weight gradient factorises (``sum_{c,d} |a_c x_d| = ||a||_1 ||x||_1``):

    score = ||dL/dW||_1 = C * ||p - u||_1 * ||x||_1 / T.

This closed form is what is computed: no backward pass and no second network pass, only the cached
logits and features. The paper and OpenOOD v1.5 take the gradient of the weight only, not of the bias
(whose gradient would add ``C ||p - u||_1 / T``), and T = 1; so do we. ID samples have peaked
posteriors, far from uniform, hence larger norms: the score needs no sign change.

Scale: OpenOOD's, exactly (its ``num_classes`` is the head's C). pytorch-ood averages the loss over
the classes (the KL's ``-(1/C) sum_c log p_c``), so its scores are ours divided by C: the same
ranking, hence the same AUROC, FPR and AUPR, but not the same DFB Eq. 7 fusion, which adds a
fixed-scale background term.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import softmax
from dfb_ood.postprocessors.base import FusionKind, Outputs, Postprocessor


class GradNorm(Postprocessor):
    """Score = ``C * ||softmax(logits / T) - 1/C||_1 * ||features||_1 / T``; no fitting, no head needed."""

    name: ClassVar[str] = "gradnorm"
    fusion_kind: ClassVar[FusionKind] = "logit"
    requires_features: ClassVar[bool] = True

    def __init__(self, temperature: float = 1.0) -> None:
        if isinstance(temperature, bool) or not isinstance(
            temperature, (int, float, np.integer, np.floating)
        ):
            raise InputError(f"GradNorm temperature must be a positive number, got {temperature!r}")
        if not (np.isfinite(temperature) and temperature > 0):
            raise InputError(f"GradNorm temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)

    def _score(self, outputs: Outputs) -> np.ndarray:
        probabilities = softmax(outputs.logits, self.temperature)
        classes = probabilities.shape[1]
        deviation = np.abs(classes * probabilities - 1.0).sum(axis=1)  # ||C p - 1||_1 = C ||p - u||_1
        feature_mass = np.abs(np.asarray(outputs.features, dtype=np.float64)).sum(axis=1)
        return deviation * feature_mass / self.temperature
