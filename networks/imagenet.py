"""ImageNet networks: ``resnet50`` (torchvision / timm / OpenOOD layout) and ``vit_b16`` (timm ViT-B/16).

Why these two: OpenOOD's ImageNet-1k benchmarks are reported on a torchvision ResNet-50 and on
ViT-B/16, so a DFB network on either can be compared with published numbers. The DFB paper only
used ResNetV2 (BiT); the ViT goes beyond it.

``resnet50``
    The backbone is timm's ``resnet50`` built without classifier or pooling. timm's ResNet-50 is
    torchvision's architecture (v1.5: the stride sits on the 3x3 conv) with the *same parameter
    names* (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4.2.bn3``, ``downsample.0/1``,
    ``fc``), and OpenOOD v1.5's ImageNet ``ResNet50`` subclasses torchvision's ``ResNet`` without
    adding parameters, so one key layout covers all three: no detection is needed, and
    ``load_foreign_state_dict`` maps ``fc.*`` to the 1x1 head. The feature map is ``layer4``'s
    output (after its ReLU), 2048 channels at stride 32: exactly what torchvision's ``avgpool``
    averages into the penultimate feature.

``vit_b16``
    timm's ``vit_base_patch16_224`` with ``dynamic_img_size=True`` (any input size whose sides
    are multiples of 16 gives a whole token grid; the position embedding is resampled by timm).
    The dense map is the *patch tokens* after the final per-token LayerNorm (``norm``), reshaped
    to ``(B, 768, H/16, W/16)``. The class token (and any register tokens) is dropped from the
    map: it still takes part in every attention layer, so it shapes the patch tokens, but it has
    no position in the image and is not pooled. The classifier is therefore ``head(mean of the
    patch tokens)``, and the mean over the grid of the per-token (K+1) logits equals it exactly
    because the head is linear. timm's ``fc_norm`` (a LayerNorm applied *after* pooling, used by
    ``global_pool="avg"`` models) would break that identity, so the model is built with
    ``fc_norm=False``: the only LayerNorm is the per-token ``norm`` before pooling.

    Weights: a timm ``vit_base_patch16_224`` state dict loads as is (timm's keys); torchvision's
    ``vit_b_16`` layout, which OpenOOD v1.5's ImageNet ``ViT_B_16`` checkpoints use (a subclass of
    torchvision's ``VisionTransformer``), is detected by its ``conv_proj`` / ``encoder.pos_embedding``
    keys and renamed to timm's (``weights.torchvision_vit_to_timm``; names only, exact).

    Caveat: timm's, torchvision's and OpenOOD's ViT-B/16 classifiers pool the class token, not the
    patch mean, so loading their ImageNet head into ours (``load_head``) does not reproduce their
    logits; the backbone (and hence every token) is reproduced exactly.

Pretrained weights (``pretrained=True``) are read from local caches only, never downloaded: the
Hugging Face cache (timm's hub copies) and, for ``resnet50``, torchvision's own download cache.
Otherwise pass a file with ``weights=`` (``--checkpoint``).
"""

from __future__ import annotations

import types
from pathlib import Path

import torch
from torch import nn

from dfb_ood.errors import InputError

from .model import OODNet
from .pretrained import PretrainedWeightsUnavailable, cached_hub_file
from .timm_generic import timm_backbone
from .weights import load_foreign_state_dict

# torchvision's IMAGENET1K_V1 ResNet-50 (what OpenOOD v1.5 evaluates on), as timm's hub copy.
RESNET50_HUB = "timm/resnet50.tv_in1k"
# The file torchvision's ResNet50_Weights.IMAGENET1K_V1 downloads into torch.hub's cache.
RESNET50_TORCHVISION_FILE = "resnet50-0676ba61.pth"
# timm's default tag for vit_base_patch16_224 (ImageNet-21k, fine-tuned on ImageNet-1k).
VIT_B16_HUB = "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def resnet50_backbone(**kwargs: object) -> nn.Module:
    """timm's ResNet-50 without classifier or pooling: ``forward_features`` gives layer4's map.

    Its state dict has torchvision's (and OpenOOD's) keys; ``kwargs`` go to ``timm.create_model``.
    """
    return timm_backbone("resnet50", **kwargs)


def _vit_patch_map(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Patch tokens after the final per-token LayerNorm as a ``(B, C, h, w)`` map; prefix tokens dropped."""
    tokens = type(self).forward_features(self, x)  # (B, prefix + h*w, C), after self.norm
    if self.dynamic_img_size:
        grid = tuple(self.patch_embed.dynamic_feat_size(tuple(x.shape[-2:])))
    else:
        grid = tuple(self.patch_embed.grid_size)
    patches = tokens[:, self.num_prefix_tokens :]
    if patches.shape[1] != grid[0] * grid[1]:
        raise RuntimeError(f"ViT gave {patches.shape[1]} patch tokens for a {grid[0]}x{grid[1]} grid")
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def vit_backbone(model: str = "vit_base_patch16_224", **kwargs: object) -> nn.Module:
    """timm's ViT with no classifier; ``forward_features`` gives the patch-token map (module docstring).

    ``fc_norm=False`` keeps the final LayerNorm per token (before any pooling) whatever
    ``global_pool`` is; ``dynamic_img_size`` defaults to True. Never downloads. The state dict
    keeps timm's keys (``cls_token``, ``pos_embed``, ``patch_embed.*``, ``blocks.*``, ``norm.*``).
    """
    import timm

    if kwargs.get("fc_norm"):
        raise InputError("fc_norm=True would normalise after pooling and break the dense-to-GAP identity")
    options = {"dynamic_img_size": True, **kwargs, "fc_norm": False}
    net = timm.create_model(model, pretrained=False, num_classes=0, **options)
    net.forward_features = types.MethodType(_vit_patch_map, net)
    net.reduction = int(net.patch_embed.patch_size[0])
    net.num_features = int(net.embed_dim)
    return net


def _load_cached(net: OODNet, arch: str, repo_id: str, extra: tuple[Path, ...] = ()) -> Path:
    """Load the backbone from the first cached file (HF cache, then ``extra``); never downloads."""
    path = cached_hub_file(repo_id, HUB_FILES)
    if path is None:
        path = next((p for p in extra if p.is_file()), None)
    if path is None:
        places = [f"the Hugging Face cache ({repo_id}: {' or '.join(HUB_FILES)})"]
        places += [str(p) for p in extra]
        raise PretrainedWeightsUnavailable(
            f"pretrained weights for {arch!r} were not found locally (looked in {'; '.join(places)}), and "
            f"they are never downloaded at run time. Pass a local file: create_network({arch!r}, K, "
            f"weights='path/to/file') (--checkpoint), or fill the cache on a connected machine, e.g. "
            f"huggingface_hub.hf_hub_download({repo_id!r}, {HUB_FILES[0]!r})."
        )
    load_foreign_state_dict(net, path, head="skip")
    return path


def _torchvision_cache() -> Path:
    """Where torchvision keeps its downloaded ResNet-50 V1 weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET50_TORCHVISION_FILE


def load_resnet50_pretrained(net: OODNet) -> Path:
    """torchvision's ImageNet-1k ResNet-50 (V1) from the HF cache or torchvision's cache; backbone only."""
    return _load_cached(net, "resnet50", RESNET50_HUB, (_torchvision_cache(),))


def load_vit_b16_pretrained(net: OODNet) -> Path:
    """timm's default ViT-B/16 weights from the Hugging Face cache; backbone only."""
    return _load_cached(net, "vit_b16", VIT_B16_HUB)


__all__ = [
    "RESNET50_HUB",
    "VIT_B16_HUB",
    "load_resnet50_pretrained",
    "load_vit_b16_pretrained",
    "resnet50_backbone",
    "vit_backbone",
]
