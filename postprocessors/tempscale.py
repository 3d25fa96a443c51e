"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) as an OOD
score: the maximum softmax probability of ``logits / T``, with T fit on ID-val by the NLL (OpenOOD's
score, a probability, so that its DFB fusion reads as MSP's does).

    T = argmin_T  mean_i [ logsumexp(z_i / T) - z_{i, y_i} / T ],    score = max_c softmax(z / T)_c.

The NLL is convex in ``beta = 1 / T`` (a logsumexp of functions linear in beta, minus a linear term),
with derivative ``mean_i [E_{softmax(beta z_i)}[z_i] - z_{i, y_i}]``, which increases with beta. ``fit``
finds the root of that derivative with Brent's method on ``log beta`` (to about 1e-12 relative), so
the T found is the minimiser itself. OpenOOD v1.5 and pytorch-ood instead take one L-BFGS call of
50 iterations at learning rate 0.01 (from T = 1.5 and 1.0), which need not reach it; their T can
therefore differ from ours, and the score at a given T does not.

When the fit is degenerate. The NLL has a minimiser at a finite, positive T unless one of two things
holds on the ID-val samples, and then it has none:

* every label has its row's largest logit (ID-val classified perfectly, ties counted as right): the
  derivative tends to 0 from below as beta grows, the NLL falls all the way to T -> 0, and any bound
  put on T becomes the answer. At T = 0.01 the max softmax is exactly 1.0 in float64 for any margin
  above about 0.37, so most ID and OOD samples tie and the AUROC reads ~50 as if it were a result;
* the labels' logits are on average no larger than their rows' means (labels no better than chance):
  the NLL grows with beta from 0, so its infimum is T -> infinity, where every score is the same.

Then ``fit`` does not pick a bound: it uses ``T_FALLBACK = 1`` (the network's own softmax: with no
calibration information the detector is MSP), sets ``degenerate_ = True`` and warns with a
:class:`DegenerateFitWarning` that says so; a leaderboard should show such a row as MSP, not as
temperature scaling. OpenOOD's few L-BFGS steps from 1.5 stop short of T -> 0 on such data and report
an ordinary-looking T (1.285 on the data of issue 21): an artefact of the optimiser, not of the data.

A finite optimum outside [``T_MIN``, ``T_MAX``] (validation logits that are almost separable, or labels
barely better than chance) ends at the bound with a plain warning; the fit is then bounded, not
degenerate. OpenOOD fits on ID-val (``fit``'s ``val``); without val outputs, ``fit`` falls back to the
ID-train outputs with a warning (a trained network is over-confident on its training data, so T then
comes out too small, or the fit degenerate). Samples labelled below 0 (OOD) are left out.

Why the fallback and not the bound: at T = 0.01 the max softmax rounds to exactly 1.0 once the margin
between the two largest logits exceeds about 0.37 (``1 - p < 2**-53`` at 37 T), so the score ties
samples that the logits tell apart; at T = 1 it does so only beyond a margin of about 37.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
from scipy.optimize import brentq

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import logsumexp, softmax
from dfb_ood.postprocessors.base import FusionKind, Outputs, Postprocessor

T_MIN = 1e-2
T_MAX = 1e2
T_FALLBACK = 1.0


class DegenerateFitWarning(UserWarning):
    """The ID-val NLL has no minimiser at a finite, positive T; ``T_FALLBACK`` was used instead."""


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return float(np.mean(logsumexp(z) - z[np.arange(len(labels)), labels]))


def _nll_slope(logits: np.ndarray, labels: np.ndarray, beta: float) -> float:
    """d NLL / d beta at ``beta = 1 / T``: the mean of ``E_p[z] - z_y`` with ``p = softmax(beta z)``."""
    expected = np.sum(softmax(logits, 1.0 / beta) * logits, axis=1)
    return float(np.mean(expected - logits[np.arange(len(labels)), labels]))


def degeneracy(logits: np.ndarray, labels: np.ndarray) -> str | None:
    """Why the NLL of ``labels`` has no minimiser at a finite positive T, or None when it has one.

    The slope ``d NLL / d beta`` increases from ``mean(mean_c z - z_y)`` at beta = 0 to
    ``mean(max_c z - z_y)`` as beta -> infinity; a root exists strictly between iff the first is
    negative and the second positive.
    """
    label_logits = logits[np.arange(len(labels)), labels]
    if np.all(label_logits == logits.max(axis=1)):
        return "every label has its row's largest logit (perfectly classified): the NLL falls as T -> 0"
    if np.mean(logits.mean(axis=1) - label_logits) >= 0.0:
        return "the labels' logits are on average no larger than their rows' means: the NLL falls as T -> inf"
    return None


class TemperatureScaling(Postprocessor):
    """Score = ``max_c softmax(logits / temperature_)_c``, with ``temperature_`` fit on ID-val by NLL.

    Fitted state: ``temperature_``, ``nll_`` (the NLL there), ``fit_source_`` (``"val"`` or
    ``"train"``) and ``degenerate_``: True when the NLL had no minimiser (see the module docstring),
    ``temperature_`` is then ``T_FALLBACK`` and the scores are MSP's ranking.
    """

    name: ClassVar[str] = "tempscale"
    fusion_kind: ClassVar[FusionKind] = "softmax"
    requires_fit: ClassVar[bool] = True

    def fit(
        self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None
    ) -> TemperatureScaling:
        """Set ``temperature_``, ``nll_``, ``fit_source_`` and ``degenerate_`` from labelled ID-val."""
        self._check(train)
        if val is None:
            warnings.warn(
                "tempscale: no ID-val outputs given; the temperature is fit on ID-train outputs",
                stacklevel=2,
            )
            reference, self.fit_source_ = train, "train"
        else:
            self._check(val)
            reference, self.fit_source_ = val, "val"
        if reference.labels is None:
            raise InputError(f"tempscale needs the class labels of the ID-{self.fit_source_} outputs")
        known = reference.labels >= 0
        if not known.any():
            raise InputError(f"tempscale: no ID-{self.fit_source_} sample has a class label (all are < 0)")
        logits = np.asarray(reference.logits, dtype=np.float64)[known]
        labels = reference.labels[known]
        if logits.shape[1] < 2:
            raise InputError("tempscale needs at least two logit columns (one class has no softmax to scale)")
        if labels.max() >= logits.shape[1]:
            raise InputError(
                f"tempscale: label {int(labels.max())} out of range for {logits.shape[1]} logit columns"
            )
        reason = degeneracy(logits, labels)
        self.degenerate_ = reason is not None
        if reason is not None:
            warnings.warn(
                f"tempscale: degenerate fit on ID-{self.fit_source_}: {reason}; no temperature minimises it, "
                f"so T = {T_FALLBACK:g} is used and the scores rank as MSP's",
                DegenerateFitWarning,
                stacklevel=2,
            )
            self.temperature_ = T_FALLBACK
        else:
            self.temperature_ = self._solve(logits, labels)
        self.nll_ = nll(logits, labels, self.temperature_)
        self.fitted_ = True
        return self

    def _solve(self, logits: np.ndarray, labels: np.ndarray) -> float:
        # log beta from log(1 / T_MAX) to log(1 / T_MIN); the slope increases with beta
        low, high = -np.log(T_MAX), -np.log(T_MIN)
        slope_low = _nll_slope(logits, labels, float(np.exp(low)))
        slope_high = _nll_slope(logits, labels, float(np.exp(high)))
        if slope_low >= 0.0 or slope_high <= 0.0:
            bound = T_MAX if slope_low >= 0.0 else T_MIN
            warnings.warn(
                f"tempscale: the NLL-optimal temperature lies beyond {bound:g} on ID-{self.fit_source_}; "
                f"using T = {bound:g}",
                stacklevel=3,
            )
            return bound
        log_beta = brentq(
            lambda s: _nll_slope(logits, labels, float(np.exp(s))), low, high, xtol=1e-13, rtol=1e-15
        )
        return float(np.exp(-log_beta))

    def _score(self, outputs: Outputs) -> np.ndarray:
        z = np.asarray(outputs.logits, dtype=np.float64) / self.temperature_
        return np.exp(np.max(z, axis=1) - logsumexp(z))
