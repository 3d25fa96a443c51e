"""Generalized entropy score (GEN, Liu et al., CVPR 2023), with OpenOOD's defaults gamma = 0.1, M = 100."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import log_softmax
from dfb_ood.postprocessors.base import FusionKind, Outputs, Postprocessor


class GEN(Postprocessor):
    """Score = ``-sum_{j in top-M} p_j^gamma * (1 - p_j)^gamma`` over the M largest softmax probabilities.

    The generalized entropy is small for peaked (ID-like) posteriors, so its negative is the score.
    We sum as OpenOOD and the paper's code do (pytorch-ood averages, which divides by min(M, C) and
    keeps the ranking). Only the top M classes count because the power transform with a small gamma
    inflates the many near-zero tail probabilities of large label spaces; M larger than the number
    of classes C means all classes. ``1 - p`` is computed as ``-expm1(log p)`` so that confident
    samples (p within 1e-12 of 1) keep their differences instead of rounding to the same value.
    No clamping of p (pytorch-ood clamps to [1e-7, 1 - 1e-7]; OpenOOD does not).
    """

    name: ClassVar[str] = "gen"
    fusion_kind: ClassVar[FusionKind] = "softmax"

    def __init__(self, gamma: float = 0.1, M: int = 100) -> None:
        if not gamma > 0:
            raise InputError(f"GEN gamma must be positive, got {gamma}")
        if int(M) != M or M < 1:
            raise InputError(f"GEN M must be a positive integer, got {M}")
        self.gamma = float(gamma)
        self.M = int(M)

    def _score(self, outputs: Outputs) -> np.ndarray:
        log_p = log_softmax(outputs.logits)
        num_classes = log_p.shape[1]
        m = min(self.M, num_classes)
        if m < num_classes:
            # which M are kept matters, their order does not: partition is O(C) per row
            log_p = np.partition(log_p, num_classes - m, axis=1)[:, num_classes - m :]
        one_minus_p = -np.expm1(log_p)
        terms = np.exp(self.gamma * log_p) * np.power(one_minus_p, self.gamma)
        return -np.sum(terms, axis=1)
