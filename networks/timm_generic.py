"""Any timm CNN as a backbone, by name: ``create_network("timm:resnet50", K)``.

Why: users already have backbones they trust (and their weights in the Hugging Face cache);
DFB only needs a feature map with a fixed stride, so any timm CNN can carry the 1x1 head.

The backbone *is* timm's model, built with ``create_model(name, pretrained=False, num_classes=0,
global_pool="")``, so its state dict has exactly timm's keys and a timm state dict (a hub
``model.safetensors`` or ``torch.save(model.state_dict())``) loads through
``load_foreign_state_dict``; its classifier (``fc`` / ``head.fc`` / ``classifier``) maps to our head.
Its ``forward_features`` is rebound on the instance to timm's public
``forward_head(forward_features(x), pre_logits=True)``: with ``global_pool=""`` timm keeps the map,
and whatever the model puts between the pooling and the classifier (ConvNeXt's ``head.norm``,
MobileNetV3's ``conv_head``) is applied per pixel, so the map is the one whose average the
classifier would see (exactly so for linear/per-pixel steps; for ConvNeXt the LayerNorm moves
before the pooling, as in its ``head_norm_first`` variants).

Which models are refused, and how it is checked: ``network_spec`` builds the model once with
random weights (no file or network access) and runs a dry forward on one 64 px image (or, if
that fails, at the model's own input size). Only a ``(1, C, h, w)`` map with ``C`` equal to the
model's feature width is accepted; ViTs (tokens ``(N, T, C)``), Swin-style channels-last maps
and models that cannot run are refused with a ``ValueError`` that says why.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass

import torch
from torch import nn

from dfb_ood.errors import InputError

PREFIX = "timm:"
_DRY_SIZE = 64


def _timm_feature_map(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The map before the classifier: timm's features, then its head up to (not incl.) the classifier."""
    return self.forward_head(type(self).forward_features(self, x), pre_logits=True)


def _split(name: str) -> str:
    """``"timm:resnet50.a1_in1k"`` -> ``"resnet50.a1_in1k"``; ``ValueError`` for a bad or unknown name."""
    import timm
    from timm.models import split_model_name_tag

    if not name.startswith(PREFIX) or not name[len(PREFIX) :]:
        raise InputError(f"a timm network is named 'timm:<model>', e.g. 'timm:resnet50'; got {name!r}")
    model = name[len(PREFIX) :]
    arch, tag = split_model_name_tag(model)
    known = timm.list_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise InputError(f"unknown timm model {arch!r} in {name!r} (see timm.list_models()){hint}")
    if tag:
        tags = timm.list_pretrained(f"{arch}.*")
        if model not in tags:
            listed = ", ".join(PREFIX + t for t in tags) or "none"
            raise InputError(f"timm has no tag {tag!r} for {arch!r} in {name!r}; its tags: {listed}")
    return model


def timm_backbone(model: str, **kwargs: object) -> nn.Module:
    """timm's ``model`` without classifier or pooling; ``forward_features`` gives the ``(B, C, h, w)`` map.

    Never downloads (``pretrained=False``): the registry loads published weights from a file it
    resolved. ``kwargs`` go to ``timm.create_model`` (e.g. ``drop_path_rate``, ``output_stride``).
    Sets ``reduction`` (the output stride, from timm's ``feature_info``) and ``num_features`` (the
    width of the map, timm's ``head_hidden_size`` where the head has its own conv, e.g. MobileNetV3).
    """
    import timm

    net = timm.create_model(model, pretrained=False, num_classes=0, global_pool="", **kwargs)
    net.forward_features = types.MethodType(_timm_feature_map, net)
    info = getattr(net, "feature_info", None)
    reduction = int(info[-1]["reduction"]) if info else 1
    stride = kwargs.get("output_stride")
    if isinstance(stride, int) and stride > 0:
        reduction = min(reduction, stride)
    net.reduction = reduction
    net.num_features = int(getattr(net, "head_hidden_size", None) or net.num_features)
    return net


def _dry_map(net: nn.Module, size: int) -> torch.Tensor:
    with torch.no_grad():
        return net.forward_features(torch.zeros(1, 3, size, size))


@dataclass(frozen=True)
class TimmModelInfo:
    """What the registry needs to know about one timm model to make its ``NetworkSpec``.

    A plain record rather than a ``NetworkSpec`` so that this module does not import the registry
    (which imports it): ``networks`` keeps its imports one-way.
    """

    name: str
    model: str
    description: str
    input_size: int
    feature_dim: int
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    hub_repo: str


def describe_timm_model(name: str) -> TimmModelInfo:
    """Check ``"timm:<model>"`` by a dry forward (see the module docstring) and describe it.

    Input size, mean / std and the hub repo come from timm's ``pretrained_cfg`` (the default tag's
    ``hf_hub_id``, else ``timm/<model>``). Builds the model once with random weights: cache it.
    """
    model = _split(name)
    net = timm_backbone(model).eval()
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    input_size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    try:
        fmap = _dry_map(net, _DRY_SIZE)
    except Exception:  # noqa: BLE001 - fixed-size models (ViT) assert on 64 px; retry at their own size
        try:
            fmap = _dry_map(net, input_size)
        except Exception as err:  # noqa: BLE001 - any failure means "not usable as a CNN backbone"
            raise InputError(
                f"{name!r}: timm's {model!r} did not run on a {input_size} px image ({type(err).__name__}: "
                f"{err}); only CNNs whose forward_features returns an (N, C, H, W) map are supported"
            ) from None
    if fmap.ndim != 4 or fmap.shape[1] != net.num_features:
        raise InputError(
            f"{name!r}: timm's {model!r} gives features of shape {tuple(fmap.shape)}, not an "
            f"(N, C, H, W) map with C = {net.num_features}; only CNNs are supported (ViTs return tokens, "
            "Swin-style models channels-last maps); for ViT-B/16 use the network vit_b16"
        )
    mean, std = cfg.get("mean"), cfg.get("std")
    norm_ok = mean is not None and std is not None and len(mean) == 3 and len(std) == 3
    hub = cfg.get("hf_hub_id") or f"timm/{model}"
    return TimmModelInfo(
        name=name,
        model=model,
        description=f"timm's {model} (any timm CNN; pretrained from your Hugging Face cache or --checkpoint)",
        input_size=input_size,
        feature_dim=int(net.num_features),
        mean=tuple(float(v) for v in mean) if norm_ok else None,
        std=tuple(float(v) for v in std) if norm_ok else None,
        hub_repo=hub,
    )
