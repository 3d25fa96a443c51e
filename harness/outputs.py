"""Stage 4: one forward pass per (network, dataset), cached on disk as arrays.

Detectors score cached outputs, so a leaderboard of many detectors costs one pass per image.
The only exception is a detector that needs its own pass through the network (ODIN with noise > 0
perturbs the input, RankFeat edits the feature map): that pass is run here too, batched, and cached
under a key that includes its settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.augment import evaluation_batches
from harness.io import save_npz
from harness.progress import Reporter
from networks import OODNet
from postprocessors.base import Outputs, Postprocessor


def head_arrays(net: OODNet) -> tuple[np.ndarray, np.ndarray]:
    """The head's (W, b) as float32 arrays, the same for every dataset of one network."""
    return (
        net.head_weight.detach().float().cpu().numpy(),
        net.head_bias.detach().float().cpu().numpy(),
    )


def forward_outputs(
    net: OODNet,
    images: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: int,
    device: torch.device,
    batch_size: int = 256,
    reporter: Reporter | None = None,
    description: str = "forward",
) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, C), pooled features (N, D)) as float32 for uint8 images (N, 3, H, W)."""
    reporter = reporter or Reporter(quiet=True)
    net.to(device).eval()
    logits = np.empty((images.shape[0], net.num_outputs), dtype=np.float32)
    features = np.empty((images.shape[0], net.feature_dim), dtype=np.float32)
    cuda = device.type == "cuda"
    with reporter.task(description, total=images.shape[0]) as bar, torch.inference_mode():
        batches = evaluation_batches(
            images, mean=mean, std=std, size=size, device=device, batch_size=batch_size
        )
        for start, batch in batches:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                fmap = net.forward_features(batch)
            pooled = net.forward_head(fmap.float(), pre_logits=True)
            stop = start + batch.shape[0]
            features[start:stop] = pooled.cpu().numpy()
            logits[start:stop] = (
                torch.nn.functional.linear(pooled, net.head_weight, net.head_bias).cpu().numpy()
            )
            bar.advance(batch.shape[0])
    return logits, features


def perturbed_logits(
    detector: Postprocessor,
    net: OODNet,
    images: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: int,
    device: torch.device,
    batch_size: int = 128,
    reporter: Reporter | None = None,
    description: str = "perturbed pass",
) -> np.ndarray:
    """Logits of a detector's own pass (ODIN's perturbed inputs, RankFeat's rank-1 removal), (N, C) float32.

    For a DFB network the detector is told ``num_classes=K``: ODIN perturbs along the K class logits
    only and keeps the clean background logit; RankFeat's columns all come from its edited features.
    """
    reporter = reporter or Reporter(quiet=True)
    net.to(device).eval()
    k = net.num_classes if net.background else None
    out = np.empty((images.shape[0], net.num_outputs), dtype=np.float32)
    with reporter.task(description, total=images.shape[0]) as bar:
        batches = evaluation_batches(
            images, mean=mean, std=std, size=size, device=device, batch_size=batch_size
        )
        for start, batch in batches:
            logits = detector.infer(net, batch, num_classes=k)  # type: ignore[attr-defined]
            out[start : start + batch.shape[0]] = logits.detach().float().cpu().numpy()
            bar.advance(batch.shape[0])
    return out


def save_outputs(path: Path, logits: np.ndarray, features: np.ndarray | None, labels: np.ndarray) -> None:
    """Cache one (network, dataset) pass atomically."""
    arrays = {"logits": logits, "labels": labels}
    if features is not None:
        arrays["features"] = features
    save_npz(path, **arrays)


def load_outputs(path: Path, head: tuple[np.ndarray, np.ndarray], background: bool) -> Outputs:
    """Read a cached pass back as :class:`Outputs` (a perturbed pass caches no features)."""
    with np.load(path) as data:
        logits, labels = data["logits"], data["labels"]
        features = data["features"] if "features" in data else None
    return Outputs(
        logits=logits, features=features, labels=labels, weight=head[0], bias=head[1], background=background
    )
