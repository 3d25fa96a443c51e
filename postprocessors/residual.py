"""Residual: the norm of a feature's part outside the principal subspace of ID training features.

This is ViM's virtual logit on its own (Wang et al., "ViM: Out-Of-Distribution with Virtual-logit
Matching", CVPR 2022, where it is the "Residual" baseline; OpenOOD v1.5's ``residual``). From the
origin ``u = -pinv(W) b`` at which all logits vanish, the ID training features are well explained by
their top-``dim`` principal directions; OOD features leave a larger residual:

    X = features_train - u,   P_perp = eigenvectors of X^T X / N beyond the top dim
    score(x) = -||(x - u) P_perp||

Negative, so that higher = more in-distribution. No logits are read; the head only gives ``u``.

Difference from OpenOOD v1.5's ``ResidualPostprocessor``: its ``setup`` fits the subspace on the
ID-*val* features (its variable is called ``feature_id_train`` but reads ``id_loader_dict['val']``);
this one fits on ID-train, as ViM does. OpenOOD's default ``dim`` is 512 (sized for 2048-d ImageNet
features; on 512-d features it would leave no residual); ``"auto"`` here is ViM's (see
:func:`postprocessors.vim.auto_dim`).
"""

from __future__ import annotations

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors.base import Outputs, Postprocessor
from dfb_ood.postprocessors.vim import check_dim, residual_space


class Residual(Postprocessor):
    """Score ``-||(feat - u) P_perp||``, the negated residual norm of :class:`~postprocessors.vim.ViM`.

    ``dim`` is the principal-subspace size, an int with ``1 <= dim < D`` or ``"auto"`` (1000 if
    ``D >= 2048`` else ``D // 2``). ``fit`` sets ``u_``, ``p_perp_`` and ``dim_`` exactly as ViM does,
    so ``ViM.score == energy + alpha_ * Residual.score`` for the same ``dim``.
    """

    name = "residual"
    fusion_kind = "logit"
    requires_logits = False
    requires_features = True
    requires_head = True
    requires_fit = True

    def __init__(self, dim: int | str = "auto") -> None:
        self.dim = check_dim(dim, "Residual")

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> Residual:
        """Learn the origin ``u_`` and the residual basis ``p_perp_`` from ID training features."""
        self._check(train)
        self.dim_, self.u_, self.p_perp_ = residual_space(
            train.features, train.weight, train.bias, self.dim, "Residual"
        )
        self.fitted_ = True
        return self

    def _score(self, outputs: Outputs) -> np.ndarray:
        features = np.asarray(outputs.features, dtype=np.float64)
        if features.shape[1] != self.u_.shape[0]:
            raise InputError(
                f"Residual was fitted on {self.u_.shape[0]}-d features but got {features.shape[1]}-d features"
            )
        return -np.linalg.norm((features - self.u_) @ self.p_perp_, axis=1)
