"""RankFeat (Song et al., NeurIPS 2022): the energy after removing the feature map's rank-1 component.

Like ODIN's perturbation, the rank-1 removal happens inside the network, before pooling, so it
cannot be computed from cached pooled outputs: the pipeline calls :meth:`RankFeat.infer` per batch
to produce the logits of the rank-1-removed features (cached like ODIN's perturbed pass), then
:meth:`RankFeat.score` takes their energy.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import logsumexp
from dfb_ood.postprocessors.base import FusionKind, NetworkPassDetector, Outputs


def remove_rank1(fmap: torch.Tensor) -> torch.Tensor:
    """``X - s1 u1 v1^T`` for each sample's ``X`` = its ``(C, h*w)`` feature map; same shape as ``fmap``.

    ``(s1, u1, v1)`` is the top singular triple of the exact (economy) SVD, computed in float32 at
    least (SVD has no bfloat16 kernel) and returned in ``fmap``'s dtype. ``s1 u1 v1^T`` does not depend
    on the SVD's sign convention (u1 and v1 flip together); it is only ill-defined when ``s1 == s2``.
    """
    if fmap.ndim != 4:
        raise InputError(f"RankFeat expects (B, C, h, w) feature maps, got shape {tuple(fmap.shape)}")
    b, c, h, w = fmap.shape
    dtype = torch.promote_types(fmap.dtype, torch.float32)
    x = fmap.reshape(b, c, h * w).to(dtype)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    rank1 = s[:, :1, None] * (u[:, :, :1] @ vh[:, :1, :])  # (B, C, 1) @ (B, 1, hw) -> (B, C, hw)
    return (x - rank1).reshape(b, c, h, w).to(fmap.dtype)


class RankFeat(NetworkPassDetector):
    """Score = ``T * logsumexp(logits / T)`` (the energy, T = 1) of the rank-1-removed features' logits.

    For an image's final feature map ``X`` (``C x hw``), :meth:`infer` takes its top singular triple
    ``(s1, u1, v1)``, forms ``X' = X - s1 u1 v1^T``, pools ``X'`` (global average, the network's own
    ``forward_head``) and applies the head. :meth:`score` is the energy of the logits it is given, so
    on plain (cached) logits it equals ``energy``.

    Differences from OpenOOD v1.5's ``RankFeatPostprocessor``:

    - OpenOOD also removes the rank-1 component at block 3 (the penultimate stage), runs block 4 on
      that, and averages the two logit vectors before the energy. Our networks expose only the final
      feature map (``OODNet.forward_features``), so this is the block-4-only variant (one removal,
      on the final map).
    - Only the exact SVD; OpenOOD's ``accelerate`` option (20 power iterations) approximates it.
      pytorch-ood 0.4's ``RankFeat`` also uses the exact economy SVD.

    Cost per image: one backbone pass (its own pass, cached per network and settings like ODIN's, on
    every set it scores) plus one economy SVD of a ``C x hw`` matrix, batched (``O(C * (hw)^2)`` for
    ``hw <= C``). No gradients.

    On a DFB network every column, the background logit included, comes from the same rank-1-removed
    features; the DFB wrapper scores the first K and fuses the last as usual.
    """

    name: ClassVar[str] = "rankfeat"
    fusion_kind: ClassVar[FusionKind] = "logit"

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise InputError(f"RankFeat temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    @property
    def needs_network(self) -> bool:
        """Always: the rank-1 removal acts on the feature map, which cached outputs do not hold."""
        return True

    def _score(self, outputs: Outputs) -> np.ndarray:
        return logsumexp(outputs.logits, self.temperature)

    def infer(
        self, network: torch.nn.Module, images: torch.Tensor, num_classes: int | None = None
    ) -> torch.Tensor:
        """Logits of the rank-1-removed feature maps, detached, one column per network output.

        ``network`` needs ``forward_features(x) -> (B, C, h, w)`` and ``forward_head(fmap)`` (pooling
        and head), as ``OODNet`` and timm models have. ``num_classes`` is only checked: all columns,
        a DFB net's background logit too, come from the rank-1-removed features. The network's mode
        is left as it is.
        """
        if num_classes is not None and num_classes < 1:
            raise InputError(f"num_classes must be a positive number of classes, got {num_classes}")
        for method in ("forward_features", "forward_head"):
            if not callable(getattr(network, method, None)):
                raise TypeError(f"RankFeat needs network.{method}; {type(network).__name__} has none")
        with torch.no_grad():
            fmap = network.forward_features(images)
            logits = network.forward_head(remove_rank1(fmap))
        if logits.ndim != 2:
            raise InputError(f"RankFeat expects (N, C) logits from the head, got shape {tuple(logits.shape)}")
        if num_classes is not None and num_classes > logits.shape[1]:
            raise InputError(f"num_classes={num_classes} but the network outputs {logits.shape[1]} logits")
        return logits.detach()
