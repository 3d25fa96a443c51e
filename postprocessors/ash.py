"""ASH, activation shaping (Djurisic et al., "Extremely Simple Activation Shaping for
Out-of-Distribution Detection", ICLR 2023), in its three variants, each scored with the energy.

Per sample, with ``x`` the pooled feature (D,), ``k = D - round(D * percentile / 100)`` activations
kept (the k largest; the other ``D - k`` are set to 0) and ``s1 = sum(x)``, ``s2`` = the sum of
the kept activations:

- ASH-P (``ash_p``): prune only, ``x'_i = x_i`` if kept, else 0;
- ASH-B (``ash_b``): binarise, ``x'_i = s1 / k`` if kept, else 0 (the sum is preserved);
- ASH-S (``ash_s``): scale, ``x'_i = x_i * exp(s1 / s2)`` if kept, else 0.

Score = ``logsumexp(x' @ W.T + b)``, the energy of the logits recomputed from the shaped feature
(``Outputs.logits`` are not read).

As in OpenOOD v1.5 (its ``ASHNet``): the shaping acts on the pooled penultimate feature (OpenOOD
views it as (N, D, 1, 1)); the paper also studies other placements in the network (feature maps
before pooling, earlier layers), which cached outputs do not hold. OpenOOD's single "ASH"
leaderboard entry is ASH-B at percentile 90 with the sweep 65..95; we use 90 for all three
variants. ``percentile`` is in percent (0-100) as in
OpenOOD; pytorch-ood takes a fraction. ``k`` is rounded as OpenOOD does
(``int(np.round(D * percentile / 100))``, numpy rounds halves to even).

Where equal activations straddle the cut (for instance the many exact zeros of a ReLU feature
when fewer than k activations are positive), the one with the lower feature index is kept; OpenOOD
and pytorch-ood leave that choice to ``torch.topk``. It changes nothing for ASH-P and ASH-S
unless the tied value is non-zero, but does move where ASH-B's fill goes.

ASH and SCALE assume non-negative (post-ReLU) activations. If the kept activations of a sample sum
to exactly 0, ``exp(s1 / s2)`` is taken as 1 (for non-negative features that sample's feature is
all zeros, which stays zero whatever the factor). A non-finite score (``exp`` overflow on features
far from that assumption) raises ``ValueError`` instead of reaching a metric.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import logsumexp
from dfb_ood.postprocessors.base import FusionKind, Outputs, Postprocessor

BLOCK_ROWS = 4096


def check_percentile(owner: str, percentile: object) -> float:
    """``percentile`` as a float in [0, 100), or ``ValueError`` naming the bad value."""
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)):
        raise InputError(f"{owner} percentile must be a number in [0, 100) (percent), got {percentile!r}")
    value = float(percentile)
    if not 0.0 <= value < 100.0:
        raise InputError(
            f"{owner} percentile must lie in [0, 100) (percent, not a fraction; 100 would keep no "
            f"activation), got {percentile!r}"
        )
    return value


def kept_count(owner: str, dim: int, percentile: float) -> int:
    """How many activations of a D-dimensional feature survive: ``D - round(D * percentile / 100)``."""
    k = dim - int(np.round(dim * percentile / 100.0))
    if k < 1:
        raise InputError(
            f"{owner} percentile={percentile:g} keeps no activation of the D={dim} features; "
            f"use a percentile below {100.0 * (dim - 0.5) / dim:g}"
        )
    return k


def top_k_mask(features: np.ndarray, k: int) -> np.ndarray:
    """(N, D) boolean mask of the k largest activations per row; ties at the cut go to lower indices."""
    n, dim = features.shape
    if k >= dim:
        return np.ones((n, dim), dtype=bool)
    cut = np.partition(features, dim - k, axis=1)[:, dim - k : dim - k + 1]  # the k-th largest value
    above = features > cut
    tied = features == cut
    missing = k - np.count_nonzero(above, axis=1, keepdims=True)
    return above | (tied & (np.cumsum(tied, axis=1) <= missing))


def shaped_energy(shape: Callable[[np.ndarray], np.ndarray], outputs: Outputs, owner: str) -> np.ndarray:
    """``logsumexp(shape(features) @ W.T + b)`` with the head in ``outputs``; non-finite scores raise.

    Rows go through in blocks of ``BLOCK_ROWS``, so the float64 temporaries of the shaping stay small
    whatever the dataset's size (the shaping is per sample, so blocks change nothing else).
    """
    features = outputs.features
    assert features is not None
    weight = np.asarray(outputs.weight, dtype=np.float64)
    bias = np.asarray(outputs.bias, dtype=np.float64)
    scores = np.empty(features.shape[0], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, features.shape[0], BLOCK_ROWS):
            block = np.asarray(features[start : start + BLOCK_ROWS], dtype=np.float64)
            scores[start : start + BLOCK_ROWS] = logsumexp(shape(block) @ weight.T + bias)
    bad = int(np.count_nonzero(~np.isfinite(scores)))
    if bad:
        raise InputError(
            f"{owner} produced {bad} non-finite score(s): the shaped features overflowed; it assumes "
            f"non-negative (post-ReLU) pooled features"
        )
    return scores


def sum_ratio(total: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """``s1 / s2`` per sample, with 0 where the kept activations sum to exactly 0 (factor exp(0) = 1)."""
    zero = kept == 0.0
    return np.where(zero, 0.0, total / np.where(zero, 1.0, kept))


class _ActivationShaping(Postprocessor):
    """Shared frame: shape the pooled feature per sample, recompute the logits, score their energy."""

    fusion_kind: ClassVar[FusionKind] = "logit"
    requires_logits: ClassVar[bool] = False
    requires_features: ClassVar[bool] = True
    requires_head: ClassVar[bool] = True

    def __init__(self, percentile: float = 90.0) -> None:
        self.percentile = check_percentile(type(self).__name__, percentile)

    def shape(self, features: np.ndarray) -> np.ndarray:
        """The shaped features (N, D), float64."""
        raise NotImplementedError

    def _score(self, outputs: Outputs) -> np.ndarray:
        return shaped_energy(self.shape, outputs, type(self).__name__)

    def _kept(self, features: np.ndarray) -> np.ndarray:
        return top_k_mask(features, kept_count(type(self).__name__, features.shape[1], self.percentile))


class ASHP(_ActivationShaping):
    """ASH-P: keep the top ``100 - percentile`` % activations per sample, zero the rest; energy."""

    name: ClassVar[str] = "ash_p"

    def shape(self, features: np.ndarray) -> np.ndarray:
        return np.where(self._kept(features), features, 0.0)


class ASHB(_ActivationShaping):
    """ASH-B (OpenOOD's "ASH"): the kept activations all become ``sum(x) / k``, the rest 0; energy."""

    name: ClassVar[str] = "ash_b"

    def shape(self, features: np.ndarray) -> np.ndarray:
        kept = self._kept(features)
        fill = features.sum(axis=1, keepdims=True) / np.count_nonzero(kept, axis=1, keepdims=True)
        return np.where(kept, fill, 0.0)


class ASHS(_ActivationShaping):
    """ASH-S: prune as ASH-P, then multiply the kept activations by ``exp(s1 / s2)``; energy."""

    name: ClassVar[str] = "ash_s"

    def shape(self, features: np.ndarray) -> np.ndarray:
        pruned = np.where(self._kept(features), features, 0.0)
        ratio = sum_ratio(features.sum(axis=1), pruned.sum(axis=1))
        with np.errstate(over="ignore", invalid="ignore"):
            return pruned * np.exp(ratio)[:, None]
