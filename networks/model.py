"""``OODNet``: one module class for the K-class classifier and the (K+1)-class DFB network.

Both are ``backbone -> final norm + ReLU -> 1x1 conv head``. What the paper calls "converting
the dense network into a classifier" is only a choice of method here, never a copy:

- ``dense(x)``: the head applied at every feature pixel, then bilinear upsampling of the logit
  maps to the input size. A 1x1 conv is linear per pixel and bilinear weights sum to one, so
  this equals upsampling the feature map first and is far cheaper.
- ``forward(x)``: global average pooling, then the head. By linearity this equals the spatial
  mean of ``dense(x, low_res=True)``.

Recipe for the harness's cached outputs (one pass gives both)::

    fmap = net.forward_features(x)
    features = net.forward_head(fmap, pre_logits=True)   # (B, C)
    logits = net.forward_head(fmap)                       # (B, K) or (B, K+1)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfb_ood.errors import InputError


class OODNet(nn.Module):
    """A backbone with one 1x1 conv head of K (classifier) or K+1 (DFB, last = background) outputs.

    ``backbone`` is any module with ``forward_features(x) -> (B, C, h, w)`` that already applies
    the final norm + ReLU; ``feature_dim`` defaults to its ``num_features``. The head is stored as
    a 1x1 ``nn.Conv2d`` (``head.weight`` is ``(outputs, C, 1, 1)``) because that is what it is in
    the dense mode; ``head_weight`` gives the ``(outputs, C)`` matrix the detectors need.
    """

    def __init__(
        self,
        arch: str,
        backbone: nn.Module,
        num_classes: int,
        *,
        background: bool = False,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.arch = arch
        # The registry's builder options (e.g. output_stride): a checkpoint records them, since
        # the same weights compute another function under another dilation.
        self.build_options: dict[str, object] = {}
        self.num_classes = int(num_classes)
        self.background = bool(background)
        self.backbone = backbone
        self.feature_dim = int(feature_dim if feature_dim is not None else backbone.num_features)
        self.feature_stride = int(getattr(backbone, "reduction", 1))
        self.head = nn.Conv2d(self.feature_dim, self.num_outputs, kernel_size=1)
        self.reset_head()

    @property
    def num_outputs(self) -> int:
        """Head outputs: K, or K+1 for a DFB network."""
        return self.num_classes + int(self.background)

    @property
    def background_index(self) -> int | None:
        """Index of the background logit (K), or None for a plain classifier."""
        return self.num_classes if self.background else None

    @property
    def head_weight(self) -> torch.Tensor:
        """The head as an ``(outputs, C)`` matrix (a view of the conv kernel, so it shares grads)."""
        return self.head.weight.flatten(1)

    @property
    def head_bias(self) -> torch.Tensor:
        """The head's ``(outputs,)`` bias."""
        return self.head.bias

    def reset_head(self) -> None:
        """Fresh head: N(0, 0.01) weights, zero bias.

        Small weights start every class near a uniform prediction so a pretrained backbone's
        features are not scrambled by large random logits in the first steps (the usual choice
        for timm's ResNetV2 and for fine-tuning BiT).
        """
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``(B, C, h, w)`` after the final norm + ReLU."""
        return self.backbone.forward_features(x)

    def forward_head(self, fmap: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling, then the head; with ``pre_logits`` the pooled ``(B, C)`` features."""
        pooled = fmap.mean(dim=(2, 3))
        if pre_logits:
            return pooled
        return F.linear(pooled, self.head_weight, self.head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """GAP logits ``(B, K)`` or ``(B, K+1)``."""
        return self.forward_head(self.forward_features(x))

    def dense_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits at feature resolution: the head as a 1x1 conv over ``fmap``."""
        return self.head(fmap)

    def dense(self, x: torch.Tensor, align_corners: bool = False, low_res: bool = False) -> torch.Tensor:
        """Per-pixel logits ``(B, outputs, H, W)`` at the input resolution.

        The head runs at feature resolution and only the logit maps are upsampled (bilinear),
        which is exactly equal to upsampling the features first. ``low_res=True`` skips the
        upsampling and returns the ``(B, outputs, h, w)`` maps, e.g. for a cheap dense loss
        against downsampled masks.
        """
        logits = self.dense_head(self.forward_features(x))
        if low_res:
            return logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=align_corners)

    def extra_repr(self) -> str:
        """Shown by ``print(net)``: what the head means."""
        kind = "dfb (K+1, last = background)" if self.background else "classifier"
        return f"arch={self.arch!r}, num_classes={self.num_classes}, {kind}, feature_dim={self.feature_dim}"
