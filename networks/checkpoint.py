"""This project's own network artifacts: ``<stem>.safetensors`` plus a ``<stem>.json`` sidecar.

Why two files: safetensors holds tensors only (no code can hide in it, unlike a pickle), and the
JSON sidecar says what the tensors are for (architecture, K, background row or not, input size,
normalisation, a hash of the training settings) so the harness can decide whether a stage must
rerun without loading weights, and a person can read it. The same metadata is embedded in the
safetensors header, so a sidecar that was copied next to the wrong weights file is detected.

Loading checks everything and fails with ``CheckpointError`` saying what differs, never with a
raw ``KeyError`` or a size-mismatch traceback. Both files are written atomically
(``networks.atomic``: temporary file in the same folder, fsync, then ``os.replace``), so a run
killed while saving leaves the previous artifact intact, and both get the umask's usual mode.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from dfb_ood.errors import InputError

from .atomic import atomic_write
from .model import OODNet
from .registry import create_network
from .weights import CheckpointError, check_dtypes

FORMAT = "dfb-ood/network"
FORMAT_VERSION = 1
_HEADER_KEY = "dfb_ood"
# Fields that must agree between the sidecar and the copy embedded in the weights file.
_IDENTITY_FIELDS = ("arch", "num_classes", "background", "num_outputs", "feature_dim", "settings_hash")


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar that belongs to a ``.safetensors`` checkpoint (same folder and stem)."""
    return Path(path).with_suffix(".json")


def _size_pair(input_size: int | Sequence[int] | None) -> list[int] | None:
    if input_size is None:
        return None
    if isinstance(input_size, int):
        return [input_size, input_size]
    pair = [int(v) for v in input_size]
    if len(pair) != 2:
        raise InputError(f"input_size must be an int or (height, width), got {input_size!r}")
    return pair


def save_checkpoint(
    net: OODNet,
    path: str | os.PathLike,
    *,
    input_size: int | Sequence[int] | None = None,
    normalization: Mapping[str, Sequence[float]] | None = None,
    settings_hash: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write ``net`` to ``path`` (must end in ``.safetensors``) and its JSON sidecar, atomically.

    ``input_size`` (side or (H, W)), ``normalization`` (``{"mean": [...], "std": [...]}``) and
    ``settings_hash`` come from the caller, who knows the data and the recipe; ``extra`` is any
    JSON-serialisable dict stored as is. Returns the weights path.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"checkpoint path must end in .safetensors, got {path}")
    norm = None
    if normalization is not None:
        norm = {
            "mean": [float(v) for v in normalization["mean"]],
            "std": [float(v) for v in normalization["std"]],
        }
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": net.arch,
        "num_classes": net.num_classes,
        "background": net.background,
        "num_outputs": net.num_outputs,
        "feature_dim": net.feature_dim,
        "input_size": _size_pair(input_size),
        "normalization": norm,
        "settings_hash": settings_hash,
        "build_options": dict(getattr(net, "build_options", {})),
        "extra": dict(extra or {}),
    }
    text = json.dumps(meta, indent=2, sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    # Serialised in memory and written through our own handle: safetensors' save_file does not write
    # into the path it is given but renames its own 0600 temporary file over it (0600 checkpoints).
    blob = save(tensors, metadata={_HEADER_KEY: text})
    atomic_write(path, lambda handle: handle.write(blob))
    atomic_write(sidecar_path(path), lambda handle: handle.write((text + "\n").encode("utf-8")))
    return path


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The sidecar of a checkpoint, validated as ours; cheap (the weights are not read)."""
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(
            f"{path}: no sidecar {side.name} beside it, so it was not written by save_checkpoint. "
            "For foreign weights use create_network(name, num_classes, weights=path)."
        )
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{side}: sidecar is not valid JSON (truncated?): {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{side}: not a {FORMAT} sidecar")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{side}: format version {meta.get('format_version')!r}; this code reads version {FORMAT_VERSION}"
        )
    missing = [k for k in _IDENTITY_FIELDS if k not in meta]
    if missing:
        raise CheckpointError(f"{side}: sidecar lacks {', '.join(missing)}")
    return meta


def _check_expected(meta: dict, path: Path, expected: dict[str, object]) -> None:
    for key, want in expected.items():
        if want is not None and meta[key] != want:
            raise CheckpointError(f"{path}: checkpoint has {key}={meta[key]!r}, expected {key}={want!r}")


def load_checkpoint(
    path: str | os.PathLike,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    background: bool | None = None,
    settings_hash: str | None = None,
    device: str | torch.device = "cpu",
) -> OODNet:
    """Rebuild the network saved by ``save_checkpoint``, checking it is the one the caller expects.

    Every keyword that is not None must match the stored value (e.g. ``num_classes=10``,
    ``background=True``) or ``CheckpointError`` explains the difference. The network is built
    from the registry by its stored architecture name and returned on ``device`` in eval mode.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    meta = read_checkpoint_meta(path)
    _check_expected(
        meta,
        path,
        {"arch": arch, "num_classes": num_classes, "background": background, "settings_hash": settings_hash},
    )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: weights file is truncated or corrupt: {err}") from err
    try:
        embedded = json.loads(header.get(_HEADER_KEY, "null"))
    except json.JSONDecodeError:
        embedded = None
    if (
        not isinstance(embedded, dict)
        or any(embedded.get(k) != meta[k] for k in _IDENTITY_FIELDS)
        or embedded.get("build_options") != meta.get("build_options")
    ):
        raise CheckpointError(
            f"{path}: the weights file and its sidecar {sidecar_path(path).name} do not describe the "
            "same network (a sidecar copied next to the wrong file?)"
        )
    try:
        options = dict(meta.get("build_options") or {})  # absent in checkpoints written before it existed
        net = create_network(
            meta["arch"], int(meta["num_classes"]), background=bool(meta["background"]), **options
        )
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the stored architecture: {err}") from err

    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = [
        f"{k} (file {tuple(state[k].shape)}, net {tuple(v.shape)})"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mis_shaped:
        detail = "; ".join(
            f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", mis_shaped),
            )
            if items
        )
        raise CheckpointError(
            f"{path}: tensors do not match a {meta['arch']!r} network as the sidecar says; {detail}"
        )
    check_dtypes(state, own, str(path))
    net.load_state_dict(state)
    return net.to(device).eval()
