"""A decoded-image cache for file-backed sets, so repeated runs do not decode PNG/JPEG again.

Decoding is the slowest part of evaluating small images from files (about 12-19k images/s for
28 px PNGs here against ~1M/s from memory, ``benchmarks/bench_data.py``). A set is cached as one
uint8 ``.npy`` array (memory-mappable) plus its labels, keyed by everything that decides its
pixels: every file's path, size and modification time, the labels, and the test transform's
resize and crop. Changing an image, the list or the transform changes the key; nothing stale is
ever served.

Location: ``$HARNESS_CACHE/decoded`` (default ``~/.cache/dfb-ood/decoded``); ``HARNESS_CACHE=off``
turns it off.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from harness.data.imglist import FileTable
from harness.io import save_npy, write_json

CACHE_ENV = "HARNESS_CACHE"
CACHE_VERSION = 1  # bump when the decode or fit code changes what pixels a key maps to


def cache_root() -> Path | None:
    """The decoded-cache folder, or None when the user turned the cache off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("", "0", "off", "false", "no"):
        return None
    base = Path(value).expanduser() if value else Path.home() / ".cache" / "dfb-ood"
    return base / "decoded"


def cache_key(table: FileTable, resize: int | tuple[int, int], crop: int) -> str:
    """Hash of the files' identities (path, size, mtime), the labels and the transform."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{resize}|{crop}|{len(table)}".encode())
    for path in table.paths:
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(np.ascontiguousarray(table.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:24]


def load_decoded(key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (images memory-mapped, labels) of a key, or None when absent or turned off."""
    root = cache_root()
    if root is None:
        return None
    folder = root / key
    images, labels = folder / "images.npy", folder / "labels.npy"
    if not (images.is_file() and labels.is_file()):
        return None
    return np.load(images, mmap_mode="r"), np.load(labels)


def store_decoded(key: str, images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Cache a decoded set (atomic writes: labels last, so a half-written entry is never used)."""
    root = cache_root()
    if root is None:
        return
    folder = root / key
    save_npy(folder / "images.npy", images)
    write_json(
        folder / "source.json", {"source": source, "count": int(len(labels)), "version": CACHE_VERSION}
    )
    save_npy(folder / "labels.npy", labels)
