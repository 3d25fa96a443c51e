"""Stable softmax / log-softmax / logsumexp on numpy arrays, always in float64.

Detectors compare scores that differ in the sixth decimal (ODIN at T=1000 spreads by about 1e-4), so
every detector computes them in float64 from max-shifted logits: a naive ``exp`` overflows for logits
above ~700 and loses the small probabilities that GEN and KL-Matching depend on.
"""

from __future__ import annotations

import numpy as np


def _scaled(logits: np.ndarray, temperature: float) -> np.ndarray:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
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
