"""Finding published pretrained weights, only when a caller asked for them.

Nothing here runs at import or at network construction: ``create_network(pretrained=True)`` is
the one entry point. Offline (``HF_HUB_OFFLINE=1``) only the local Hugging Face cache is looked
at; if the file is not there, the error says how to provide the weights instead of failing
deep inside a download library.
"""

from __future__ import annotations

import os
from pathlib import Path

from dfb_ood.errors import StateError

_TRUE = {"1", "on", "yes", "true"}


class PretrainedWeightsUnavailable(StateError):
    """Pretrained weights were asked for but cannot be obtained here."""


def hub_offline() -> bool:
    """True when the user told Hugging Face tools to stay offline.

    Read from the environment at call time (not at import, as huggingface_hub does) so that a
    setting made after start-up, or by a test, is honoured.
    """
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in _TRUE for flag in flags)


def _how_to(arch: str, repo_id: str, filenames: tuple[str, ...], npz_url: str | None) -> str:
    lines = [
        f"To use pretrained {arch!r} weights without a download, pass a local file: "
        f"create_network({arch!r}, K, weights='path/to/file')."
    ]
    if npz_url:
        lines.append(f"  - the original BiT archive: {npz_url}")
    lines.append(f"  - or timm's copy: {filenames[0]} from https://huggingface.co/{repo_id}")
    lines.append(
        "  - or fill the Hugging Face cache on a connected machine (run once without HF_HUB_OFFLINE)."
    )
    return "\n".join(lines)


def _cache_dir() -> str | None:
    """The Hugging Face hub cache as set now (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the default)."""
    return os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
    )


def cached_hub_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """Local path of the first of ``filenames`` already in the Hugging Face cache, else None.

    Never touches the network, whatever ``HF_HUB_OFFLINE`` says: for networks whose weights are
    only ever taken from a cache the user filled (``resnet50``, ``vit_b16``).
    """
    import huggingface_hub

    for filename in filenames:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=_cache_dir())
        if isinstance(cached, str) and os.path.isfile(cached):
            return Path(cached)
    return None


def resolve_hub_file(
    arch: str,
    repo_id: str,
    filenames: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin"),
    npz_url: str | None = None,
) -> Path:
    """Local path of the first of ``filenames`` in the Hugging Face repo ``repo_id``.

    timm's hub repos hold the weights as ``model.safetensors`` and, in older ones, as
    ``pytorch_model.bin``; the first that exists is used. Offline, only the local cache is looked
    at; online, the file is downloaded (and cached). ``HF_HUB_CACHE`` / ``HF_HOME`` are honoured as
    set now. Every failure becomes ``PretrainedWeightsUnavailable`` with instructions.
    """
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    cache_dir = _cache_dir()
    if hub_offline():
        cached = cached_hub_file(repo_id, filenames)
        if cached is not None:
            return cached
        raise PretrainedWeightsUnavailable(
            f"pretrained weights for {arch!r} are not in the local Hugging Face cache and HF_HUB_OFFLINE is "
            "set, so they were not downloaded.\n" + _how_to(arch, repo_id, filenames, npz_url)
        )
    last: Exception | None = None
    for filename in filenames:
        try:
            return Path(huggingface_hub.hf_hub_download(repo_id, filename, cache_dir=cache_dir))
        except EntryNotFoundError as err:  # this file is not in the repo (or not reachable): try the next
            last = err
        except Exception as err:  # network, proxy, auth and HTTP failures come in many exception types
            last = err
            break
    raise PretrainedWeightsUnavailable(
        f"could not download pretrained weights for {arch!r} from {repo_id}: {last}\n"
        + _how_to(arch, repo_id, filenames, npz_url)
    ) from last
