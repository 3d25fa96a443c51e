"""Stable softmax / log-softmax / logsumexp on numpy arrays, always in float64, and the covariance
pseudo-inverse of the Gaussian detectors.

Detectors compare scores that differ in the sixth decimal (ODIN at T=1000 spreads by about 1e-4), so
every detector computes them in float64 from max-shifted logits: a naive ``exp`` overflows for logits
above ~700 and loses the small probabilities that GEN and KL-Matching depend on.
"""

from __future__ import annotations

import numpy as np

from dfb_ood.errors import InputError


def _scaled(logits: np.ndarray, temperature: float) -> np.ndarray:
    if not temperature > 0:
        raise InputError(f"temperature must be positive, got {temperature}")
    return np.asarray(logits, dtype=np.float64) / temperature


def logsumexp(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``T * log(sum_c exp(logits_c / T))`` over the last axis, shape ``logits.shape[:-1]``.

    Multiplied back by T so the result stays on the logits' scale (a smooth maximum that tends to
    the max logit as T -> 0); at T = 1 it is the plain logsumexp, and it is the energy score at any T.
    """
    z = _scaled(logits, temperature)
    top = np.max(z, axis=-1, keepdims=True)
    return temperature * (np.log(np.sum(np.exp(z - top), axis=-1)) + top[..., 0])


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``log softmax(logits / T)`` over the last axis; finite for all finite logits (no log of 0)."""
    z = _scaled(logits, temperature)
    return z - logsumexp(z)[..., None]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / T)`` over the last axis, rows summing to 1."""
    z = _scaled(logits, temperature)
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


# Relative eigenvalue cut-off of the covariance pseudo-inverses (Mahalanobis, RMDS), about 8 float32
# epsilons (2**-23 = 1.19e-7): see ``psd_pinv``.
PSD_RCOND = 1e-6


def psd_pinv(matrix: np.ndarray, rcond: float = PSD_RCOND) -> tuple[np.ndarray, int]:
    """Pseudo-inverse of a symmetric positive semi-definite matrix, and the rank it kept.

    Eigenvalues ``<= rcond * largest`` count as zero. The cut-off is relative to the precision of the
    data, not of the arithmetic: network features are float32 computations (relative error at least
    2**-24 = 6e-8 per entry, more after GPU reductions), so the covariance of float64 copies of them
    is known only to about that fraction of its largest eigenvalue. A direction whose variance is
    below ~1e-6 of the largest (a dead or almost-constant unit) is float32 noise, and a pseudo-inverse
    that keeps it weights whatever a sample does along it by up to 1e6 times the top direction's
    weight, a number that two correct implementations do not agree on. numpy's default (1e-15) and
    scipy's ``pinvh`` (``D * eps`` of float64, about 1e-13 for D = 512) keep such directions; this cut
    bounds the weight of any kept direction by ``1 / (rcond * largest)``, so a change of ``delta`` in
    the covariance moves a squared distance by at most ``||delta|| / (rcond * largest)`` of it (to first
    order, when no eigenvalue crosses the cut). ``rcond = 0`` keeps every positive eigenvalue.
    """
    values, vectors = np.linalg.eigh(np.asarray(matrix, dtype=np.float64))
    keep = values > rcond * values[-1] if values[-1] > 0 else np.zeros(len(values), dtype=bool)
    kept = vectors[:, keep]
    return (kept / values[keep]) @ kept.T, int(np.count_nonzero(keep))
