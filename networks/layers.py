"""Small building blocks shared by the backbones written in this package.

BiT (the paper's backbone) replaces BatchNorm by GroupNorm and standardises every convolution
kernel. Neither depends on batch statistics, so a network behaves the same whatever the batch
size or image size: the dense stage trains on batches of different shapes than the classifier,
and CAM runs one image at several scales in one batch. The small CPU backbones use the same two
layers so that they behave like the paper's network, only smaller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StdConv2d(nn.Conv2d):
    """Conv2d whose kernel is standardised (zero mean, unit variance per output channel) on every call.

    The stored weight stays the raw parameter, so optimisers and checkpoints see an ordinary conv;
    standardising at call time is what lets GroupNorm train as well as BatchNorm (Qiao et al.,
    "Weight Standardization"; BiT). ``eps`` guards kernels whose entries are all equal.
    """

    def __init__(self, *args: object, eps: float = 1e-6, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve with the standardised kernel."""
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) * torch.rsqrt(var + self.eps)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def group_count(channels: int, max_groups: int = 32, min_per_group: int = 4) -> int:
    """Number of GroupNorm groups for ``channels``: as many as BiT's 32, but at least 4 channels each.

    Narrow CPU networks would otherwise end up with groups of one or two channels, which is
    instance norm in disguise and trains worse. The result always divides ``channels``.
    """
    groups = max(1, min(max_groups, channels // min_per_group))
    while channels % groups:
        groups -= 1
    return groups


class GroupNormReLU(nn.GroupNorm):
    """GroupNorm followed by ReLU, as one module so that state-dict keys stay ``<name>.weight``."""

    def __init__(self, channels: int, max_groups: int = 32) -> None:
        super().__init__(group_count(channels, max_groups), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, then rectify."""
        return F.relu(super().forward(x))


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Blur a batch of single-channel maps ``(B, H, W)`` with a Gaussian of ``sigma`` pixels.

    Separable (two 1-D passes), on the maps' device, with edge values replicated outward so that a
    kernel wider than the image still works and the borders are not darkened by zero padding.
    The radius follows SciPy's ``gaussian_filter`` (``truncate * sigma``), which the DFB release
    used, so that masks are comparable.
    """
    if sigma <= 0:
        return maps
    radius = max(1, int(truncate * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = maps.unsqueeze(1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def init_conv_(module: nn.Module) -> None:
    """He-normal init for every conv (fan-out, ReLU gain) and unit/zero affine norms.

    Why fan-out: it keeps the backward signal's scale through a deep stack, the usual choice for
    ResNets trained from scratch. Standardised convs do not care about scale but get the same
    init so that all our backbones start alike.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
