"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) as an OOD
score: the maximum softmax probability of ``logits / T``, with T fit on ID-val by the NLL.

    T = argmin_T  mean_i [ logsumexp(z_i / T) - z_{i, y_i} / T ],    score = max_c softmax(z / T)_c.

The NLL is convex in ``beta = 1 / T`` (a logsumexp of functions linear in beta, minus a linear term),
with derivative ``mean_i [E_{softmax(beta z_i)}[z_i] - z_{i, y_i}]``, which increases with beta. ``fit``
finds the root of that derivative with Brent's method on ``log beta`` (to about 1e-12 relative), so
the T found is the minimiser itself. OpenOOD v1.5 and pytorch-ood instead take one L-BFGS call of
50 iterations at learning rate 0.01 (from T = 1.5 and 1.0), which need not reach it; their T can
therefore differ from ours, and the score at a given T does not.

T is searched in [``T_MIN``, ``T_MAX``]; an optimum outside (validation logits that are perfectly
separable push T towards 0, labels no better than chance push it towards infinity) ends at the bound
with a warning. OpenOOD fits on ID-val (``fit``'s ``val``); without val outputs, ``fit`` falls back to
the ID-train outputs with a warning (a trained network is over-confident on its training data, so T
then comes out too small). Samples labelled below 0 (OOD) are left out.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
from scipy.optimize import brentq

from postprocessors._numerics import logsumexp, softmax
from postprocessors.base import FusionKind, Outputs, Postprocessor

T_MIN = 1e-2
T_MAX = 1e2


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return float(np.mean(logsumexp(z) - z[np.arange(len(labels)), labels]))


def _nll_slope(logits: np.ndarray, labels: np.ndarray, beta: float) -> float:
    """d NLL / d beta at ``beta = 1 / T``: the mean of ``E_p[z] - z_y`` with ``p = softmax(beta z)``."""
    expected = np.sum(softmax(logits, 1.0 / beta) * logits, axis=1)
    return float(np.mean(expected - logits[np.arange(len(labels)), labels]))


class TemperatureScaling(Postprocessor):
    """Score = ``max_c softmax(logits / temperature_)_c``, with ``temperature_`` fit on ID-val by NLL."""

    name: ClassVar[str] = "tempscale"
    fusion_kind: ClassVar[FusionKind] = "softmax"
    requires_fit: ClassVar[bool] = True

    def fit(
        self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None
    ) -> TemperatureScaling:
        """Set ``temperature_`` (and ``nll_``, ``fit_source_``) from the labelled ID-val outputs."""
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
            raise ValueError(f"tempscale needs the class labels of the ID-{self.fit_source_} outputs")
        known = reference.labels >= 0
        if not known.any():
            raise ValueError(f"tempscale: no ID-{self.fit_source_} sample has a class label (all are < 0)")
        logits = np.asarray(reference.logits, dtype=np.float64)[known]
        labels = reference.labels[known]
        if labels.max() >= logits.shape[1]:
            raise ValueError(
                f"tempscale: label {int(labels.max())} out of range for {logits.shape[1]} logit columns"
            )
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
