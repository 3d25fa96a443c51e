"""KL-Matching (KLM, Hendrycks et al., ICML 2022), as OpenOOD defines it.

Definitions compared (all three agree on the divergence direction):

- OpenOOD: templates ``d_k`` = mean softmax of the ID samples the network predicts as k; score
  ``-min_k KL(p(x) || d_k)`` (``scipy.stats.entropy(p, d_k)`` with sklearn's
  ``pairwise_distances_argmin_min``), i.e. the *nearest* template, not necessarily the template of
  the predicted class. A class never predicted gets a one-hot template, whose KL to any posterior
  with full support is infinite, so it never wins the minimum.
- pytorch-ood 0.4.0: the same score negated (higher = more OOD); classes never predicted have no
  template at all. Same numbers as OpenOOD for every posterior with full support.
- Here: OpenOOD's definition, with unpredicted classes left out of the minimum (as pytorch-ood
  does; identical to OpenOOD's one-hot fallback except when a softmax underflows to exact zeros,
  where the one-hot template would turn an extreme, possibly OOD, logit vector into a perfect ID
  score). At least one class is always predicted, so the score is always finite.

OpenOOD v1.5 estimates the templates on the ID validation split; this harness fits on ID train
outputs (``fit(train)``), which needs no labels either.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import log_softmax
from dfb_ood.postprocessors.base import FusionKind, Outputs, Postprocessor


class KLMatching(Postprocessor):
    """Score = ``-min_k KL(softmax(x) || d_k)`` over the templates ``d_k`` of classes predicted on train.

    Templates are kept as logs computed in log space (a logsumexp over each class's samples), so a
    probability that underflows to 0 in every member still gives a finite ``log d_k`` and the KL never
    becomes ``inf`` or NaN.
    """

    name: ClassVar[str] = "klm"
    fusion_kind: ClassVar[FusionKind] = "logit"
    requires_fit: ClassVar[bool] = True

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> KLMatching:
        """Estimate one template per class from the ID train samples predicted as that class."""
        self._check(train)
        log_p = log_softmax(train.logits)
        predicted = np.argmax(train.logits, axis=1)
        order = np.argsort(predicted, kind="stable")
        classes, starts, counts = np.unique(predicted[order], return_index=True, return_counts=True)
        grouped = log_p[order]
        # per-class logsumexp of the members' log-probabilities, without a loop over classes
        top = np.maximum.reduceat(grouped, starts, axis=0)
        sums = np.add.reduceat(np.exp(grouped - np.repeat(top, counts, axis=0)), starts, axis=0)
        self.log_templates_ = top + np.log(sums) - np.log(counts)[:, None]
        self.template_classes_ = classes
        self.unpredicted_classes_ = np.setdiff1d(np.arange(log_p.shape[1]), classes)
        self.num_classes_ = int(log_p.shape[1])
        self.fitted_ = True
        return self

    @property
    def templates_(self) -> np.ndarray:
        """The typical posteriors ``d_k`` (rows, one per class in ``template_classes_``)."""
        return np.exp(self.log_templates_)

    def _score(self, outputs: Outputs) -> np.ndarray:
        if outputs.logits.shape[1] != self.num_classes_:
            raise InputError(
                f"KLMatching was fitted on {self.num_classes_} classes, "
                f"got {outputs.logits.shape[1]} logit columns"
            )
        log_p = log_softmax(outputs.logits)
        p = np.exp(log_p)
        neg_entropy = np.sum(p * log_p, axis=1, keepdims=True)
        kl = neg_entropy - p @ self.log_templates_.T
        return -np.min(kl, axis=1)
