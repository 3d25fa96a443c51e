"""Split a network into a frozen part, computed once per image, and a trainable part.

Why: on a CPU a pretrained backbone costs far more per image than anything trained on top of
it. With the frozen part's outputs cached, a training step runs only the trainable part, so
thousands of steps cost seconds. Two splits:

- ``"head"``: the whole backbone is frozen; only the 1x1 head trains (``tail`` is the identity).
- ``"tail"``: the backbone's last stage (and its final norm) trains with the head; the stages
  before it are frozen. The backbone must offer ``forward_prefix(x)`` and ``tail()`` with
  ``tail()(forward_prefix(x)) == forward_features(x)`` (``effnet_lite*`` does).

The split never changes the network: ``tail(prefix(x))`` is ``net.forward_features(x)``, so the
trained network is saved and evaluated whole, and the dense-to-GAP identity is untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dfb_ood.errors import InputError

from .model import OODNet


@dataclass
class Split:
    """The frozen ``prefix`` (images to cached features) and the trainable ``tail`` (to the feature map)."""

    prefix: Callable[[torch.Tensor], torch.Tensor]
    tail: nn.Module

    @property
    def trivial(self) -> bool:
        """True when nothing but the head trains (the tail is the identity)."""
        return isinstance(self.tail, nn.Identity)

    def parameters(self, net: OODNet) -> list[nn.Parameter]:
        """What an optimizer gets: the tail's and the head's parameters (no duplicates)."""
        seen: dict[int, nn.Parameter] = {}
        for parameter in [*self.tail.parameters(), *net.head.parameters()]:
            seen.setdefault(id(parameter), parameter)
        return list(seen.values())


def can_split(net: OODNet, trainable: str) -> bool:
    """Whether ``net`` supports ``trainable`` ("head" always; "tail" when the backbone has a tail)."""
    if trainable == "head":
        return True
    backbone = net.backbone
    return trainable == "tail" and hasattr(backbone, "forward_prefix") and hasattr(backbone, "tail")


def split_network(net: OODNet, trainable: str) -> Split:
    """The split of ``net`` for ``trainable`` ("head" or "tail"); ``ValueError`` when unsupported."""
    if trainable == "head":
        return Split(prefix=net.forward_features, tail=nn.Identity())
    if trainable != "tail":
        raise InputError(f"trainable must be 'head' or 'tail' to split a network, got {trainable!r}")
    if not can_split(net, "tail"):
        raise InputError(
            f"network {net.arch!r} has no trainable tail (its backbone defines no forward_prefix/tail); "
            "use a recipe with trainable: head or all, or an effnet_lite* network"
        )
    backbone = net.backbone
    return Split(prefix=backbone.forward_prefix, tail=backbone.tail())
