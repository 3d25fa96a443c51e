"""ViM (Virtual-logit Matching, Wang et al., CVPR 2022): energy minus a scaled feature residual.

The residual is the part of a feature that lies outside the principal subspace of the ID training
features, measured from the origin ``u = -pinv(W) b`` at which all logits vanish. ID features are well
explained by their principal subspace; OOD features leave a larger residual, which ViM turns into a
"virtual logit" whose scale ``alpha`` is matched to the real logits on ID training data.
"""

from __future__ import annotations

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import logsumexp
from dfb_ood.postprocessors.base import Outputs, Postprocessor


def auto_dim(feature_dim: int) -> int:
    """Principal-subspace size used when ``dim="auto"``.

    1000 for features of 2048 or more dimensions (the DFB release's choice for ResNet-50-style
    2048-d features), else half the feature dimension (OpenOOD's 256 for 512-d features). A single
    fixed number would break narrow networks, whose feature dimension may be below it.
    """
    return 1000 if feature_dim >= 2048 else feature_dim // 2


def check_dim(dim: object, who: str) -> int | str:
    """Validate a principal-subspace size: a positive int or ``"auto"``."""
    if isinstance(dim, str):
        if dim != "auto":
            raise InputError(f"{who} dim must be a positive int or 'auto', got {dim!r}")
    elif isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InputError(f"{who} dim must be a positive int or 'auto', got {dim!r}")
    return dim  # type: ignore[return-value]


def residual_space(
    features: np.ndarray, weight: np.ndarray, bias: np.ndarray, dim: int | str, who: str
) -> tuple[int, np.ndarray, np.ndarray]:
    """``(dim, u, P_perp)``: the origin ``u = -pinv(W) b`` and the (D, D - dim) residual basis.

    ``P_perp`` holds the eigenvectors of the ``D - dim`` smallest eigenvalues of the uncentred
    covariance ``(X.T @ X) / N`` of ``X = features - u``; ``dim`` is resolved (``"auto"``) and checked.
    """
    features = np.asarray(features, dtype=np.float64)
    n, d = features.shape
    dim = auto_dim(d) if dim == "auto" else int(dim)
    if not 1 <= dim < d:
        raise InputError(f"{who} dim must satisfy 1 <= dim < D (feature dimension); got dim={dim} with D={d}")
    origin = -np.linalg.pinv(np.asarray(weight, dtype=np.float64)) @ np.asarray(bias, dtype=np.float64)
    centred = features - origin
    covariance = (centred.T @ centred) / n
    _, eigenvectors = np.linalg.eigh(covariance)  # ascending eigenvalues
    return dim, origin, np.ascontiguousarray(eigenvectors[:, : d - dim])


class ViM(Postprocessor):
    """ViM score ``logsumexp(logits) - alpha * ||(feat - u) P_perp||``.

    Fit (ID training outputs): ``u = -pinv(W) @ b``; the eigenvectors of the uncentred covariance
    ``(X.T @ X) / N`` of ``X = feat - u`` are split into the top-``dim`` (principal space) and the
    remaining ``D - dim`` (``P_perp``); ``alpha = mean(max logit) / mean(residual norm)`` over train.

    Score time uses ``Outputs.logits`` as the real logits. The pipeline guarantees
    ``logits == features @ weight.T + bias``, so this equals recomputing them from the features, and
    it keeps the score consistent with whatever logits the other detectors see. ``alpha`` is
    likewise computed from the training ``Outputs.logits``.

    ``dim`` is the principal-subspace size: an int with ``1 <= dim < D``, or ``"auto"`` (see
    :func:`auto_dim`: 1000 if ``D >= 2048`` else ``D // 2``). It must leave a non-empty residual
    space, otherwise the virtual logit is identically zero.
    """

    name = "vim"
    fusion_kind = "logit"
    requires_features = True
    requires_head = True
    requires_fit = True

    def __init__(self, dim: int | str = "auto") -> None:
        self.dim = check_dim(dim, "ViM")

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> ViM:
        """Learn the origin ``u_``, the residual basis ``p_perp_`` and the scale ``alpha_`` from ID train."""
        self._check(train)
        features = np.asarray(train.features, dtype=np.float64)
        self.dim_, self.u_, self.p_perp_ = residual_space(features, train.weight, train.bias, self.dim, "ViM")
        mean_residual = float(self._residual(features).mean())
        if mean_residual <= 0.0:
            raise InputError(
                "ViM: the ID training features have no residual outside the principal space "
                f"(dim={self.dim_}, D={features.shape[1]}); choose a smaller dim"
            )
        self.alpha_ = float(np.asarray(train.logits, dtype=np.float64).max(axis=1).mean()) / mean_residual
        self.fitted_ = True
        return self

    def _residual(self, features: np.ndarray) -> np.ndarray:
        return np.linalg.norm((features - self.u_) @ self.p_perp_, axis=1)

    def _score(self, outputs: Outputs) -> np.ndarray:
        features = np.asarray(outputs.features, dtype=np.float64)
        if features.shape[1] != self.u_.shape[0]:
            raise InputError(
                f"ViM was fitted on {self.u_.shape[0]}-d features but got {features.shape[1]}-d features"
            )
        energy = logsumexp(np.asarray(outputs.logits, dtype=np.float64))
        return np.asarray(energy - self.alpha_ * self._residual(features), dtype=np.float64)
