"""Everything that is an ``nn.Module`` or makes one: backbones, the DFB network, CAM, checkpoints.

One class, ``OODNet``, serves as the K-class classifier and as the (K+1)-class DFB network
(``background=True``): ``forward`` gives GAP logits, ``dense`` per-pixel logits, with the same
weights. This package knows nothing of datasets, the harness's files or the CLI; file paths
appear only where a caller passes one to a loading or saving function.
"""

from .cam import DEFAULT_SCALES, cams_from_feature_maps, class_activation_maps, pseudo_masks
from .checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint, sidecar_path
from .dfb import dfb_from_pretrained, from_classifier
from .model import OODNet
from .pretrained import PretrainedWeightsUnavailable
from .registry import NetworkSpec, available_networks, create_network, network_spec, register
from .split import Split, can_split, split_network
from .weights import CheckpointError, LoadReport, load_foreign_state_dict, read_state_dict

__all__ = [
    "DEFAULT_SCALES",
    "CheckpointError",
    "LoadReport",
    "NetworkSpec",
    "OODNet",
    "PretrainedWeightsUnavailable",
    "available_networks",
    "cams_from_feature_maps",
    "class_activation_maps",
    "create_network",
    "dfb_from_pretrained",
    "from_classifier",
    "load_checkpoint",
    "load_foreign_state_dict",
    "network_spec",
    "pseudo_masks",
    "read_checkpoint_meta",
    "read_state_dict",
    "register",
    "save_checkpoint",
    "sidecar_path",
    "split_network",
    "can_split",
    "Split",
]
