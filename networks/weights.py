"""Reading weights that this project did not write, safely, and fitting them to an ``OODNet``.

Foreign files are BiT ``.npz`` archives, timm / Hugging Face ``.safetensors`` state dicts, and
PyTorch ``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin`` files such as OpenOOD's ``best.ckpt``.

Pickle-based files are read with ``torch.load(weights_only=True)`` and nothing else: a pickle can
run arbitrary code when loaded, and checkpoints are downloaded from file-sharing sites. A file
that needs more than tensors and plain containers is refused with an explanation, never retried
unsafely.

Key names are mapped onto ``OODNet``'s (``backbone.*``, ``head.weight``, ``head.bias``): the
classifier of a foreign file (``fc.*``, timm's ``head.fc.*``) becomes the 1x1 head, everything
else belongs to the backbone. One foreign layout is renamed first: torchvision's ViT (OpenOOD
v1.5's ImageNet ViT-B/16) into timm's ViT names (``torchvision_vit_to_timm``). The backbone must
fit exactly; the head is loaded only when its shape fits (see ``load_foreign_state_dict``), so an
ImageNet head is never forced into a K-class head.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from dfb_ood.errors import InputError

from .model import OODNet

# Containers under which training scripts commonly nest the weights ({"state_dict": ..., "epoch": 3}).
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network", "module")
# Prefixes that wrappers add to every key: DataParallel / DDP and torch.compile.
_KEY_PREFIXES = ("module.", "_orig_mod.")
# Names foreign layouts give the classifier, mapped to our 1x1 head.
_HEAD_ALIASES = {
    "head.weight": "head.weight",
    "head.bias": "head.bias",
    "fc.weight": "head.weight",
    "fc.bias": "head.bias",
    "head.fc.weight": "head.weight",
    "head.fc.bias": "head.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}
# Buffers that older checkpoints lack and that do not affect outputs.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)

HeadPolicy = Literal["auto", "require", "skip"]

# torchvision's VisionTransformer (and OpenOOD v1.5's ViT_B_16, its subclass) names, mapped to timm's
# VisionTransformer names; per encoder block, the part after "encoder.layers.encoder_layer_<i>.".
_TV_VIT_BLOCK = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.(.+)$")
_TV_VIT_BLOCK_PARTS = (
    ("ln_1.", "norm1."),
    ("self_attention.in_proj_weight", "attn.qkv.weight"),
    ("self_attention.in_proj_bias", "attn.qkv.bias"),
    ("self_attention.out_proj.", "attn.proj."),
    ("ln_2.", "norm2."),
    ("mlp.0.", "mlp.fc1."),
    ("mlp.3.", "mlp.fc2."),
    ("mlp.linear_1.", "mlp.fc1."),  # torchvision < 0.13 named the MLP's linears
    ("mlp.linear_2.", "mlp.fc2."),
)
_TV_VIT_TOP = (
    ("class_token", "cls_token"),
    ("encoder.pos_embedding", "pos_embed"),
    ("conv_proj.", "patch_embed.proj."),
    ("encoder.ln.", "norm."),
    ("heads.head.", "head."),
)


class CheckpointError(InputError):
    """A weights file cannot be used: unreadable, unsafe, truncated, or not for this network."""


@dataclass
class LoadReport:
    """What ``load_foreign_state_dict`` did, so callers can log or assert it.

    ``head`` is one of ``loaded`` (the file's head, same shape), ``extended`` (the file's K class
    rows into a K+1 DFB head, background row zero), ``reinitialised`` (the file's head did not
    fit and was ignored; the network keeps its fresh head), ``absent`` (the file has no head) or
    ``skipped`` (the caller asked not to load it).
    """

    source: str
    backbone_tensors: int
    head: str
    notes: list[str] = field(default_factory=list)


def _describe(source: object) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


def unwrap_state_dict(obj: object, source: str = "<mapping>") -> dict[str, torch.Tensor]:
    """Dig the tensor mapping out of common wrappers and strip ``module.`` / ``_orig_mod.`` prefixes.

    Accepts ``{"state_dict": ...}``, ``{"model": ...}`` (and a few other usual names), nested any
    number of times. Raises ``CheckpointError`` if what remains is not a flat ``str -> Tensor``
    mapping, naming the keys found, because "unexpected key" errors later would hide the cause.
    """
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            keys = ", ".join(map(str, list(obj)[:8]))
            raise CheckpointError(
                f"{source}: no state dict found; top-level keys are [{keys}]. Expected a mapping of "
                f"parameter names to tensors, possibly under one of {list(_WRAPPER_KEYS)}."
            )
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source}: expected a state dict (mapping of names to tensors), got {type(obj).__name__}"
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = str(key)
        stripped = True
        while stripped:
            stripped = False
            for prefix in _KEY_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix) :]
                    stripped = True
        state[name] = value
    return state


def _looks_like_torch_save(path: Path) -> bool:
    """Whether a file starts as ``torch.save`` output: a zip archive, or a pickle (protocol 2+).

    Checked before ``torch.load``, whose unpickler meets a text file or other bytes with whatever
    its first opcode happens to trip (``IndexError: pop from empty list``, "invalid load key"),
    never saying that the file is not a checkpoint at all.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return True  # let torch.load report it, under the handling below
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a foreign weights file into a plain CPU state dict, refusing anything unsafe.

    ``.safetensors`` goes through safetensors; anything else through
    ``torch.load(weights_only=True)``. Every failure (missing file, truncated archive, a pickle
    that asks to run code) becomes a ``CheckpointError`` that says what happened and what to do.
    ``.npz`` archives are not state dicts: pass them to ``create_network(weights=...)``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        raise CheckpointError(
            f"{path}: .npz archives hold original BiT weights, not a PyTorch state dict; load them with "
            "create_network('bit_r50x1', K, weights=path)"
        )
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return unwrap_state_dict(load_file(str(path), device="cpu"), str(path))
        except SafetensorError as err:
            raise CheckpointError(
                f"{path}: not a readable safetensors file (truncated or corrupt?): {err}"
            ) from err
    if not _looks_like_torch_save(path):
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint: neither the zip archive torch.save writes nor "
            "a legacy pickle (a text file, or another format?); give a .safetensors, .pt or .pth of weights"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused. The file contains Python objects beyond tensors and plain containers, and "
            "unpickling them could execute arbitrary code. Only weights-only loading is allowed. If you "
            "trust its origin, re-save just its state dict (torch.save(model.state_dict(), ...)) or convert "
            f"it to safetensors. Details: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {err}"
        ) from err
    return unwrap_state_dict(obj, str(path))


def is_torchvision_vit(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` is in torchvision's ViT layout (``conv_proj``, ``encoder.pos_embedding``)."""
    return "conv_proj.weight" in state and "encoder.pos_embedding" in state


def torchvision_vit_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``VisionTransformer`` state dict to timm's ``VisionTransformer`` keys.

    Why this is exact, not approximate: both are pre-norm ViTs with LayerNorm eps 1e-6, exact GELU,
    a class token with its own position embedding, and a final LayerNorm; torchvision's
    ``nn.MultiheadAttention`` packs q, k, v into ``in_proj_weight`` in the order and head split
    that timm's ``qkv`` linear uses. Only names change; tensors are passed through unchanged. Keys
    it does not know (e.g. ``heads.pre_logits``) are kept, so the fit check reports them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = key
        block = _TV_VIT_BLOCK.match(key)
        if block is not None:
            index, rest = block.groups()
            for old, new in _TV_VIT_BLOCK_PARTS:
                if rest.startswith(old):
                    target = f"blocks.{index}.{new}{rest[len(old) :]}"
                    break
        else:
            for old, new in _TV_VIT_TOP:
                if key.startswith(old):
                    target = new + key[len(old) :]
                    break
        out[target] = value
    return out


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "integer"


def check_dtypes(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse a file whose tensors are of another kind than the network's (integer or bool for float).

    ``load_state_dict`` casts silently: an int64 weight tensor has already lost every fraction
    (mostly zeros), a bool one is 0/1, and the network would run with them and score nonsense.
    Another float precision (float16, bfloat16, float64) is the same numbers and is loaded.
    """
    wrong = [
        f"{key} is {state[key].dtype} (the network's is {value.dtype})"
        for key, value in own.items()
        if key in state and _dtype_kind(state[key].dtype) != _dtype_kind(value.dtype)
    ]
    if wrong:
        raise CheckpointError(
            f"{source}: tensors of the wrong kind, which loading would cast without a word: "
            f"{_examples(wrong, 3)}. Weights are floating-point; was the file written with its tensors "
            "converted (.long(), .bool())? Save the float state dict instead"
        )


def _map_key(key: str) -> str:
    if key in _HEAD_ALIASES:
        return _HEAD_ALIASES[key]
    return key if key.startswith("backbone.") else f"backbone.{key}"


def _examples(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _fit_head(
    net: OODNet, weight: torch.Tensor | None, bias: torch.Tensor | None, policy: HeadPolicy, source: str
) -> tuple[str, torch.Tensor | None, torch.Tensor | None]:
    """Decide what to do with a foreign head; returns (report word, new weight, new bias)."""
    if policy == "skip":
        return "skipped", None, None
    if weight is None or bias is None:
        if policy == "require":
            raise CheckpointError(f"{source}: the file has no classifier head, and loading it was required")
        return "absent", None, None
    rows = weight.shape[0]
    matrix = weight.reshape(rows, -1)
    shape_ok = matrix.shape[1] == net.feature_dim and tuple(bias.shape) == (rows,)
    if shape_ok and rows == net.num_outputs:
        return "loaded", matrix, bias
    if shape_ok and net.background and rows == net.num_classes and policy != "require":
        new_w = torch.zeros(net.num_outputs, net.feature_dim, dtype=matrix.dtype)
        new_b = torch.zeros(net.num_outputs, dtype=bias.dtype)
        new_w[:rows] = matrix
        new_b[:rows] = bias
        return "extended", new_w, new_b
    message = (
        f"{source}: the file's head has {rows} outputs over {matrix.shape[1]} features; this network's has "
        f"{net.num_outputs} over {net.feature_dim}"
    )
    if policy == "require":
        raise CheckpointError(message + ". Wrong class count or architecture?")
    # A warning, not a log line: someone who meant to load a trained classifier must notice that
    # its head was dropped (pass load_head="require" to make it an error).
    warnings.warn(f"{message}; the head is re-initialised", stacklevel=4)
    return "reinitialised", None, None


def load_foreign_state_dict(
    net: OODNet,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    head: HeadPolicy = "auto",
) -> LoadReport:
    """Load a foreign checkpoint (a path or an in-memory state dict) into ``net``, in place.

    The backbone must fit exactly (same keys and shapes; ``num_batches_tracked`` may be missing),
    otherwise a ``CheckpointError`` lists what is missing, unexpected or mis-shaped. The head
    follows ``head``:

    - ``"auto"``: load it if it has ``net.num_outputs`` rows; into a DFB net, a K-row head fills
      the K class rows and the background row is zero (as ``from_classifier``); any other shape
      (an ImageNet head, a different class count) is ignored with a ``UserWarning`` and the fresh
      head kept.
    - ``"require"``: it must fit exactly, else ``CheckpointError`` (loading a trained classifier).
    - ``"skip"``: never load it.

    BiT ``.npz`` archives are converted by timm's ResNetV2 loader (``bit_r50x1`` only); their head
    is never loaded. State-dict files are checked completely before anything is copied, so a
    refused file leaves ``net`` unchanged; a broken ``.npz`` may leave it partly overwritten.
    """
    if head not in ("auto", "require", "skip"):
        raise InputError(f"head must be 'auto', 'require' or 'skip', got {head!r}")
    name = _describe(source)
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".npz":
        return _load_bit_npz(net, Path(source), head)
    raw = unwrap_state_dict(source, name) if isinstance(source, Mapping) else read_state_dict(source)
    layout_notes = []
    if is_torchvision_vit(raw):  # OpenOOD v1.5's ImageNet ViT-B/16 checkpoints are in this layout
        raw = torchvision_vit_to_timm(raw)
        layout_notes.append("converted from torchvision's ViT layout")

    mapped: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        target = _map_key(key)
        if target in mapped:
            raise CheckpointError(
                f"{name}: two entries map to {target!r}; is this a nested or merged checkpoint?"
            )
        mapped[target] = value
    head_w = mapped.pop("head.weight", None)
    head_b = mapped.pop("head.bias", None)

    own = {k: v for k, v in net.state_dict().items() if k.startswith("backbone.")}
    missing = [k for k in own if k not in mapped and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in mapped if k not in own]
    mis_shaped = [
        f"{k} (file {tuple(mapped[k].shape)}, net {tuple(own[k].shape)})"
        for k in own
        if k in mapped and mapped[k].shape != own[k].shape
    ]
    if missing or unexpected or mis_shaped:
        parts = [f"{name}: these weights do not fit a {net.arch!r} backbone"]
        if missing:
            parts.append(f"missing: {_examples(missing)}")
        if unexpected:
            parts.append(f"unexpected: {_examples(unexpected)}")
        if mis_shaped:
            parts.append(f"wrong shape: {_examples(mis_shaped, 3)}")
        raise CheckpointError("; ".join(parts) + ". Is it a checkpoint of another architecture?")

    fitted = {
        **mapped,
        **{k: v for k, v in (("head.weight", head_w), ("head.bias", head_b)) if v is not None},
    }
    check_dtypes(fitted, net.state_dict(), name)
    verdict, new_w, new_b = _fit_head(net, head_w, head_b, head, name)
    state = net.state_dict()
    state.update(mapped)
    if new_w is not None and new_b is not None:
        state["head.weight"] = new_w.reshape(net.head.weight.shape)
        state["head.bias"] = new_b
    net.load_state_dict(state)
    notes = layout_notes + ([] if verdict in ("loaded", "absent", "skipped") else [f"head {verdict}"])
    return LoadReport(source=name, backbone_tensors=len(mapped), head=verdict, notes=notes)


def _load_bit_npz(net: OODNet, path: Path, head: HeadPolicy) -> LoadReport:
    """Original BiT weights (``BiT-M-R50x1.npz``) through timm's ResNetV2 ``load_pretrained``.

    Our timm backbone is built without a classifier, so timm's loader cannot copy the ImageNet-21k
    head; ``head="require"`` is therefore an error for ``.npz`` files.
    """
    if head == "require":
        raise CheckpointError(
            f"{path}: BiT .npz heads are ImageNet heads; they are never loaded as a K-class head"
        )
    loader = getattr(net.backbone, "load_pretrained", None)
    if loader is None:
        raise CheckpointError(
            f"{path}: .npz weights are the original BiT format; {net.arch!r} cannot read them"
        )
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        loader(str(path))
    except KeyError as err:
        raise CheckpointError(
            f"{path}: not a BiT ResNetV2 archive for {net.arch!r}; entry {err} is missing"
        ) from err
    except (ValueError, RuntimeError, OSError, EOFError) as err:
        raise CheckpointError(f"{path}: cannot load as BiT weights for {net.arch!r}: {err}") from err
    count = sum(1 for k in net.state_dict() if k.startswith("backbone."))
    return LoadReport(
        source=str(path), backbone_tensors=count, head="absent" if head == "auto" else "skipped"
    )
