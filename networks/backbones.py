"""Backbones: images in, the last feature map out, after the final norm + ReLU.

Every backbone here answers ``forward_features(x) -> (B, C, h, w)`` and has ``num_features`` (C)
and ``reduction`` (input pixels per feature pixel). ``OODNet`` adds the one 1x1 head on top, so
the classifier, the DFB network and CAM all read the same feature map.

- ``PreActResNet``: a small pre-activation ResNet with GroupNorm and weight-standardised convs,
  i.e. BiT's recipe shrunk to train on a laptop CPU (the ``rv2_*`` networks).
- ``CifarResNet18``: OpenOOD v1.5's ``ResNet18_32x32`` layout (CIFAR stem, BasicBlocks), with the
  same parameter names so that OpenOOD's published checkpoints load unchanged.
- ``bit_backbone``: timm's ResNetV2-50x1 (BiT), built through ``timm.create_model`` without a head.

Measured on the 2-core development machine (``benchmarks/bench_cam.py --threads 2``: batch 128 of
32x32 images, float32, best of 7; the machine was shared, so treat these as lower bounds):

| network        | params | feature map @32 | train img/s (fwd+bwd+SGD) | eval forward img/s |
|----------------|--------|-----------------|---------------------------|--------------------|
| rv2_tiny       | 0.31 M | 128 x 8 x 8     | ~1,900                    | ~3,600-4,000       |
| rv2_small      | 1.23 M | 256 x 8 x 8     | ~620-680                  | ~2,000             |
| resnet18_32x32 | 11.2 M | 512 x 4 x 4     | ~75-85                    | ~190-220           |
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dfb_ood.errors import InputError

from .layers import GroupNormReLU, StdConv2d, init_conv_


class PreActBlock(nn.Module):
    """Pre-activation basic block: ``x + conv(relu(gn(conv(relu(gn(x))))))``.

    When the block changes width or stride, the shortcut is a 1x1 standardised conv applied to
    the normalised input (as in BiT), so the identity path stays free of extra normalisation.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.norm1 = GroupNormReLU(in_chs)
        self.conv1 = StdConv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.norm2 = GroupNormReLU(out_chs)
        self.conv2 = StdConv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.downsample = (
            StdConv2d(in_chs, out_chs, 1, stride=stride, bias=False)
            if stride != 1 or in_chs != out_chs
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update of ``x``."""
        pre = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(pre)
        return shortcut + self.conv2(self.norm2(self.conv1(pre)))


class PreActResNet(nn.Module):
    """A BiT-style ResNet (pre-activation, GroupNorm, StdConv) sized for CPU training.

    Layout: one 3x3 stem conv with ``stem_stride``, then stages of ``PreActBlock``; the first block
    of each stage applies that stage's stride; a final GroupNorm + ReLU (pre-activation nets need
    it: their blocks end on a conv). The stem is a single strided 3x3 conv, not BiT's 7x7 conv +
    max-pool, because on 32x32 inputs BiT's stem alone would leave an 8x8 map before any stage.
    """

    def __init__(
        self,
        widths: Sequence[int],
        depths: Sequence[int],
        strides: Sequence[int],
        stem_width: int,
        stem_stride: int = 2,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if not len(widths) == len(depths) == len(strides):
            raise InputError("widths, depths and strides need one entry per stage")
        self.stem = StdConv2d(in_chans, stem_width, 3, stride=stem_stride, padding=1, bias=False)
        stages = []
        in_chs = stem_width
        reduction = stem_stride
        for width, depth, stride in zip(widths, depths, strides):
            blocks = [
                PreActBlock(in_chs if i == 0 else width, width, stride if i == 0 else 1) for i in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            in_chs = width
            reduction *= stride
        self.stages = nn.Sequential(*stages)
        self.norm = GroupNormReLU(in_chs)
        self.num_features = in_chs
        self.reduction = reduction
        init_conv_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map after the final GroupNorm + ReLU."""
        return self.norm(self.stages(self.stem(x)))

    forward = forward_features


class BasicBlock(nn.Module):
    """Post-activation ResNet basic block with OpenOOD's parameter names (``shortcut.0/1``)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        # An empty Sequential is the identity and owns no parameters, which is what keeps the key
        # set equal to OpenOOD's: only blocks that change shape have shortcut.0 (conv) / .1 (BN).
        self.shortcut = nn.Sequential()
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet18(nn.Module):
    """OpenOOD v1.5's ResNet18_32x32 trunk: 3x3 stride-1 stem, BN, no max-pool, [2, 2, 2, 2] blocks.

    Widths 64/128/256/512; a 32x32 image gives a 512 x 4 x 4 map. The network ends on a ReLU
    already, so there is no extra final norm: the last block's output is the feature map whose
    average is OpenOOD's 512-d penultimate feature.
    """

    def __init__(self, in_chans: int = 3, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_chs = widths[0]
        for index, width in enumerate(widths, start=1):
            stride = 1 if index == 1 else 2
            self.add_module(
                f"layer{index}", nn.Sequential(BasicBlock(in_chs, width, stride), BasicBlock(width, width))
            )
            in_chs = width
        self.num_layers = len(widths)
        self.num_features = in_chs
        self.reduction = 2 ** (len(widths) - 1)
        init_conv_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last residual stage (already rectified)."""
        x = F.relu(self.bn1(self.conv1(x)))
        for index in range(1, self.num_layers + 1):
            x = getattr(self, f"layer{index}")(x)
        return x

    forward = forward_features


def bit_backbone(variant: str = "resnetv2_50x1_bit", **kwargs: object) -> nn.Module:
    """timm's BiT ResNetV2 with no classifier: ``forward_features`` ends on its final GroupNorm + ReLU.

    timm is imported here, not at module import, so that ``import networks`` stays quick for
    users who never touch BiT. No weights are fetched: pretrained loading is done by the
    registry from a file it resolved, so construction never touches the network.
    """
    import timm

    model = timm.create_model(variant, pretrained=False, num_classes=0, **kwargs)
    model.reduction = int(model.feature_info[-1]["reduction"])
    return model
