"""Class activation maps and pseudo masks (stage 2 of DFB).

For an image x of class y, the CAM is the head row of y dotted with the feature map at every
pixel, ``M[i, j] = W_y . G(x)[i, j] + b_y``: exactly the dense logit map of class y, so CAM is
``OODNet.dense`` restricted to one class. As in the DFB release, it is computed at several input
scales, each together with its horizontal mirror (mirrored back), rectified, upsampled to the
input size, summed, and divided by its maximum. Optionally blurred and min-max normalised again;
pixels above ``theta`` get the class index, the rest the background index K.

Everything is batched: the network sees whole batches (and their mirror images) at each scale,
never one image at a time, on whatever device ``images`` and the network are on. Large scales
are split into chunks with no more pixels than the input batch, which bounds memory at one
forward's worth and keeps CPU caches effective. The cost is about ``2 * sum(scale**2)`` forward
passes (15 for the default scales); ``benchmarks/bench_cam.py`` measures it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from dfb_ood.errors import InputError

from .layers import gaussian_blur
from .model import OODNet

DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
Target = Literal["label", "prediction"]
Normalise = Literal["max", "minmax"]


def _resize(images: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return images
    height, width = images.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _normalise_by_max(maps: torch.Tensor) -> torch.Tensor:
    """Divide each non-negative map by its maximum; an all-zero map stays zero (never 0/0 = NaN)."""
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """Rescale each map to [0, 1]; a flat map (no contrast, nothing localised) becomes all zero."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(
        span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps)
    )


def _scale_to_unit(maps: torch.Tensor, normalise: str) -> torch.Tensor:
    """Each map scaled to [0, 1]: by its maximum ("max", the release) or min-max ("minmax")."""
    if normalise == "max":
        return _normalise_by_max(maps)
    if normalise == "minmax":
        return _min_max(maps)
    raise InputError(f"normalise must be 'max' or 'minmax', got {normalise!r}")


def _class_maps(net: OODNet, fmap: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rectified per-pixel logit map of each image's target class, at feature resolution (n, h, w)."""
    rows = net.head_weight[targets].to(fmap.dtype)  # (n, C): each image's class row
    bias = net.head_bias[targets].to(fmap.dtype)
    return F.relu(torch.einsum("nchw,nc->nhw", fmap, rows) + bias[:, None, None]).float()


def _predicted_class(net: OODNet, fmap: torch.Tensor) -> torch.Tensor:
    """The network's predicted class among the K ID classes (a DFB net's background row excluded)."""
    return net.forward_head(fmap)[:, : net.num_classes].argmax(dim=1)


def _check_labels(net: OODNet, labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    if labels is None:
        raise InputError("labels are required when target='label' (or use target='prediction')")
    targets = torch.as_tensor(labels, device=device).long().reshape(-1)
    if targets.numel() != batch:
        raise InputError(f"got {targets.numel()} labels for {batch} images")
    if bool(((targets < 0) | (targets >= net.num_classes)).any()):
        raise InputError(f"labels must be class indices in 0..{net.num_classes - 1}")
    return targets


@torch.no_grad()
def _cams(
    net: OODNet,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    target: Target,
    scales: Sequence[float],
    flip: bool,
    sigma: float | None,
    align_corners: bool,
    max_pixels: int | None,
    normalise: Normalise = "max",
) -> tuple[torch.Tensor, torch.Tensor]:
    if images.ndim != 4:
        raise InputError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if not scales or any(s <= 0 for s in scales):
        raise InputError(f"scales must be positive and non-empty, got {scales!r}")
    if target not in ("label", "prediction"):
        raise InputError(f"target must be 'label' or 'prediction', got {target!r}")
    batch, _, height, width = images.shape
    budget = max_pixels or batch * height * width
    targets = _check_labels(net, labels, batch, images.device) if target == "label" else None
    order = list(scales)
    if targets is None and 1.0 in order:
        order.insert(0, order.pop(order.index(1.0)))  # predictions come from the plain scale-1 pass

    was_training = net.training
    net.eval()
    try:
        if targets is None and 1.0 not in order:
            step = max(1, budget // (height * width))
            chunks = [images[i : i + step] for i in range(0, batch, step)]
            targets = torch.cat([_predicted_class(net, net.forward_features(chunk)) for chunk in chunks])
        total = torch.zeros((batch, height, width), dtype=torch.float32, device=images.device)
        for scale in order:
            resized = _resize(images, scale)
            # Images per network call: as many as keep the call's pixel count within the budget, so
            # that a 2x scale never needs more activation memory than one forward of the batch (and
            # runs faster on CPU, whose caches a 4x larger batch would overflow).
            step = max(1, budget // (resized.shape[-2] * resized.shape[-1]))
            for mirrored in (False, True) if flip else (False,):
                view = resized.flip(-1) if mirrored else resized
                predicted = []
                for start in range(0, batch, step):
                    fmap = net.forward_features(view[start : start + step])
                    if targets is None:  # target="prediction": first pass is scale 1, not mirrored
                        predicted.append(_predicted_class(net, fmap))
                        chunk_targets = predicted[-1]
                    else:
                        chunk_targets = targets[start : start + step]
                    maps = _class_maps(net, fmap, chunk_targets).unsqueeze(1)
                    maps = F.interpolate(
                        maps, size=(height, width), mode="bilinear", align_corners=align_corners
                    )
                    maps = maps[:, 0].flip(-1) if mirrored else maps[:, 0]
                    total[start : start + step] += maps
                if targets is None:
                    targets = torch.cat(predicted)
    finally:
        net.train(was_training)

    cam = _scale_to_unit(total, normalise)
    if sigma:
        cam = _min_max(gaussian_blur(cam, float(sigma)))
    assert targets is not None
    return cam, targets


def class_activation_maps(
    net: OODNet,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    target: Target = "label",
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    sigma: float | None = None,
    align_corners: bool = False,
    max_pixels: int | None = None,
    normalise: Normalise = "max",
) -> torch.Tensor:
    """Multi-scale CAMs ``(B, H, W)`` in [0, 1] at the input resolution, one per image.

    ``target="label"`` uses ``labels`` (the ground truth, the paper's choice);
    ``target="prediction"`` the network's predicted class among the first K (the release's).
    ``sigma`` (pixels) adds a Gaussian blur and a second min-max normalisation; the release used
    4 at 128 px, so scale it with the image size. ``max_pixels`` caps the pixels (images x H x W)
    per network call; by default the batch's own, so CAM needs no more activation memory than one
    forward of ``images``. The network is put in eval mode for the call (BatchNorm statistics
    must not change) and restored afterwards; no gradients are kept. ``normalise`` says how the
    summed map is scaled to [0, 1] before any blur: "max" (the release) or "minmax".
    """
    cam, _ = _cams(net, images, labels, target, scales, flip, sigma, align_corners, max_pixels, normalise)
    return cam


@torch.no_grad()
def cams_from_feature_maps(
    net: OODNet,
    fmap: torch.Tensor,
    targets: torch.Tensor,
    *,
    size: tuple[int, int],
    fmap_flipped: torch.Tensor | None = None,
    normalise: Normalise = "minmax",
    sigma: float = 0.0,
) -> torch.Tensor:
    """CAMs ``(B, *size)`` in [0, 1] from feature maps already computed (one scale, optional mirror).

    The cheap recipes' CAM: ``fmap`` is the network's feature map of each image at the evaluation
    size, ``fmap_flipped`` (optional) that of its mirror image. The rectified class maps are summed
    (the mirror's flipped back) at feature resolution, scaled to [0, 1] there, then upsampled
    (bilinear) to ``size``. Unlike ``class_activation_maps`` there are no extra input scales: each
    would need a backbone pass per image, which is what caching avoids. ``sigma`` (pixels of
    ``size``) blurs the upsampled map and min-max normalises it again, as in the image CAMs.
    """
    targets = torch.as_tensor(targets, device=fmap.device).long().reshape(-1)
    total = _class_maps(net, fmap, targets)
    if fmap_flipped is not None:
        total = total + _class_maps(net, fmap_flipped, targets).flip(-1)
    cam = _scale_to_unit(total, normalise)
    cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return _min_max(gaussian_blur(cam, float(sigma))) if sigma else cam


def pseudo_masks(
    net: OODNet,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    theta: float = 0.5,
    target: Target = "label",
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    sigma: float | None = None,
    align_corners: bool = False,
    max_pixels: int | None = None,
    dtype: torch.dtype = torch.long,
    normalise: Normalise = "max",
) -> torch.Tensor:
    """Label maps ``(B, H, W)``: the target class where the CAM exceeds ``theta``, else K (background).

    ``net.num_classes`` is K; for a DFB network only its first K head rows are used. ``dtype``
    defaults to int64 (what ``cross_entropy`` wants); ask for ``torch.uint8`` to store masks when
    K < 255. Other arguments as in ``class_activation_maps``.
    """
    if not dtype.is_floating_point and net.num_classes > torch.iinfo(dtype).max:
        raise InputError(f"{dtype} cannot hold the background label {net.num_classes}")
    cam, targets = _cams(
        net, images, labels, target, scales, flip, sigma, align_corners, max_pixels, normalise
    )
    background = torch.full_like(cam, net.num_classes, dtype=dtype)
    return torch.where(cam > theta, targets.to(dtype)[:, None, None].expand_as(background), background)
