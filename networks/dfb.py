"""Two ways to start the (K+1)-class DFB network (stage 3 of the pipeline).

- ``from_classifier(net)``: from the trained K-class classifier of stage 1. The backbone and the
  K class rows of the head are copied; only the background row is new. The network then starts
  from the features that produced the pseudo masks.
- ``dfb_from_pretrained(name, K)``: what the paper does: the same pretrained backbone weights
  that stage 1 started from (BiT-M for ``bit_r50x1``) and a fresh (K+1)-row head.

Both return an ordinary ``OODNet`` with ``background=True``: ``dense`` for training against the
pseudo masks, ``forward`` for the GAP (K+1)-class classifier used for scoring.
"""

from __future__ import annotations

import copy
import os

import torch

from dfb_ood.errors import InputError

from .model import OODNet
from .registry import create_network


def from_classifier(classifier: OODNet) -> OODNet:
    """A DFB network whose backbone and first K head rows are copies of ``classifier``'s.

    The background row starts at zero weights and zero bias, so the background logit is 0 at
    every pixel: the K class logits (and hence the classifier's ranking of classes) are unchanged
    at the start, and no random direction in feature space is preferred for "background" before
    the dense loss has said which one it is. A zero row still learns: its gradient is the feature
    map weighted by the background prediction error, which is not zero. The input network is
    left untouched (a deep copy is made), on the same device and dtype.
    """
    if not isinstance(classifier, OODNet):
        raise TypeError(f"from_classifier needs an OODNet, got {type(classifier).__name__}")
    if classifier.background:
        raise InputError("this network is already a (K+1)-class DFB network; there is nothing to convert")
    dfb = copy.deepcopy(classifier)
    old = classifier.head
    dfb.background = True
    dfb.head = torch.nn.Conv2d(
        dfb.feature_dim, dfb.num_outputs, kernel_size=1, device=old.weight.device, dtype=old.weight.dtype
    )
    with torch.no_grad():
        dfb.head.weight.zero_()
        dfb.head.bias.zero_()
        dfb.head.weight[: classifier.num_classes].copy_(old.weight)
        dfb.head.bias[: classifier.num_classes].copy_(old.bias)
    dfb.train(classifier.training)
    return dfb


def dfb_from_pretrained(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    **kwargs: object,
) -> OODNet:
    """The paper's initialisation: a DFB network on the pretrained backbone, with a fresh K+1 head.

    Same arguments as ``create_network``; ``pretrained`` defaults to True here because that is the
    point. If ``weights`` is a K-class classifier checkpoint, its K head rows are kept and the
    background row is zero, which is what ``from_classifier`` gives for the same network.
    """
    return create_network(
        name, num_classes, background=True, pretrained=pretrained, weights=weights, **kwargs
    )
