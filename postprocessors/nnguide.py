"""NNGuide (Park et al., "Nearest Neighbor Guidance for Out-of-Distribution Detection", ICCV 2023).

A classifier's confidence (the energy) is high for OOD inputs far from the decision boundaries,
which is where it fails. NNGuide multiplies it by a guidance term that is high only near ID data:
the similarity of the (L2-normalised) feature to its nearest ID training features, each scaled by
its own energy, so that neighbours the network is confident about count more:

    g_i = E(x_i) * f(x_i) / ||f(x_i)||           guide bank, x_i a random subset of ID train
    G(x) = (1/k) * sum of the k largest  (f(x) / ||f(x)||) . g_i
    score(x) = E(x) * G(x),                        E = logsumexp(logits), the energy score

Higher = more in-distribution. The k neighbours are those with the largest inner product with the
energy-scaled guides (not the largest cosine), as in OpenOOD v1.5's faiss
``IndexFlatIP`` search.

The bank: OpenOOD v1.5 takes the first ``alpha`` = 0.01 of its shuffled ID-train loader (whole batches);
here ``bank_fraction`` of the ID training outputs is drawn at random with ``seed`` (a fixed, logged
subset), but never fewer than ``k`` samples. ``bank_fraction=1`` uses all of ID train. OpenOOD's
normaliser adds 1e-10 to every element after dividing; this one does not.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import logsumexp
from dfb_ood.postprocessors.base import Outputs, Postprocessor

# Upper bound on the elements of one (queries x bank) similarity block (as in knn.py).
_MAX_BLOCK_ELEMENTS = 2**27


def _l2_normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)  # zero rows stay zero


class NNGuide(Postprocessor):
    """Score ``E(x) * mean of the k largest  f_hat(x) . (E(x_i) f_hat(x_i))`` over a guide bank of ID train.

    ``fit`` draws ``bank_index_`` (sorted indices into the training outputs, ``max(k, ceil(bank_fraction
    * N))`` of them, capped at N) and stores ``bank_`` (B, D), the normalised features scaled by their
    energies. Arithmetic is float64 when the training or query features are float64, float32 otherwise
    (the energies are always computed in float64). Queries are processed ``batch_size`` at a time.
    """

    name = "nnguide"
    fusion_kind = "logit"
    requires_features = True
    requires_head = False
    requires_fit = True

    def __init__(
        self, k: int = 100, bank_fraction: float = 0.01, seed: int = 0, batch_size: int = 4096
    ) -> None:
        for label, value in (("k", k), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"NNGuide {label} must be a positive int, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InputError(f"NNGuide seed must be an int, got {seed!r}")
        if isinstance(bank_fraction, bool) or not 0.0 < float(bank_fraction) <= 1.0:
            raise InputError(f"NNGuide bank_fraction must lie in (0, 1], got {bank_fraction!r}")
        self.k = int(k)
        self.bank_fraction = float(bank_fraction)
        self.seed = int(seed)
        self.batch_size = int(batch_size)

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> NNGuide:
        """Draw the guide bank from the ID training outputs and scale its normalised features by energy."""
        self._check(train)
        n = len(train)
        if self.k > n:
            raise InputError(
                f"NNGuide k={self.k} exceeds the number of training samples ({n}); "
                "lower k or fit on more ID data"
            )
        size = min(n, max(self.k, math.ceil(self.bank_fraction * n)))
        if size == n:
            index = np.arange(n)
        else:
            index = np.sort(np.random.default_rng(self.seed).choice(n, size=size, replace=False))
        features = np.asarray(train.features)
        dtype = np.float64 if features.dtype == np.float64 else np.float32
        energy = logsumexp(np.asarray(train.logits, dtype=np.float64)[index])
        bank = _l2_normalise(features[index].astype(np.float64)) * energy[:, None]
        self.bank_index_ = index
        self.bank_ = bank.astype(dtype, copy=False)
        self.fitted_ = True
        return self

    def guidance(self, outputs: Outputs) -> np.ndarray:
        """``G(x)`` (N,): the mean of the k largest inner products of the normalised feature with the bank."""
        queries = np.asarray(outputs.features)
        if queries.shape[1] != self.bank_.shape[1]:
            raise InputError(
                f"NNGuide was fitted on {self.bank_.shape[1]}-d features but got {queries.shape[1]}-d ones"
            )
        dtype = np.float64 if np.float64 in (queries.dtype, self.bank_.dtype) else np.float32
        queries = _l2_normalise(queries.astype(np.float64)).astype(dtype, copy=False)
        bank = torch.from_numpy(self.bank_.astype(dtype, copy=False))
        rows = max(1, min(self.batch_size, _MAX_BLOCK_ELEMENTS // bank.shape[0]))
        result = np.empty(queries.shape[0], dtype=np.float64)
        with torch.no_grad():
            for start in range(0, queries.shape[0], rows):
                block = torch.from_numpy(queries[start : start + rows]) @ bank.T
                top = torch.topk(block, self.k, dim=1, largest=True, sorted=False).values
                result[start : start + rows] = top.double().mean(dim=1).numpy()
        return result

    def _score(self, outputs: Outputs) -> np.ndarray:
        energy = logsumexp(np.asarray(outputs.logits, dtype=np.float64))
        return energy * self.guidance(outputs)
