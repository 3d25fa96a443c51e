"""A decoded-image cache for file-backed sets, so repeated runs do not decode PNG/JPEG again.

Decoding is the slowest part of evaluating small images from files (about 12-19k images/s for
28 px PNGs here against ~1M/s from memory, ``benchmarks/bench_data.py``). A set is cached as one
uint8 ``.npy`` array (memory-mappable) plus its labels, keyed by everything that decides its
pixels: every file's path, size and modification time, the labels, and the test transform's
resize and crop. Changing an image, the list or the transform changes the key; nothing stale is
ever served. Each entry also records the sha256 of its two arrays' bytes, checked on every read,
so an entry altered in place (same size, same name) is decoded afresh instead of used.

Location: ``$HARNESS_CACHE/decoded`` (default ``~/.cache/dfb-ood/decoded``); ``HARNESS_CACHE=off``
turns it off.

The cache is an optimisation and never fails a run. An entry is written into a hidden staging
folder beside it and renamed into place whole, so a crash, a full disk or a read-only file system
never leaves a partial entry that a later run could read. When the cache cannot be written (read-only,
full, no permission), the run goes on without it after one :class:`CacheWarning` naming the folder
and the reason; an entry that cannot be read back is decoded afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.harness.data.fingerprint import table_fingerprint
from dfb_ood.harness.data.imglist import FileTable
from dfb_ood.harness.data.problems import Problem
from dfb_ood.harness.io import file_checksum

CACHE_ENV = "HARNESS_CACHE"
CACHE_VERSION = 2  # bump when the decode or fit code changes what pixels a key maps to (2: checksums)
STAGING_SUFFIX = ".partial"
STALE_STAGING_S = 24 * 3600  # staging folders this old were left by a killed process

# Cache folders that failed a write in this process, with the reason: warned about once, then left alone.
_unwritable: dict[Path, str] = {}


class CacheWarning(UserWarning):
    """The decoded-image cache could not be written or read; the run goes on without it."""


def cache_root() -> Path | None:
    """The decoded-cache folder, or None when the user turned the cache off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("", "0", "off", "false", "no"):
        return None
    base = Path(value).expanduser() if value else Path.home() / ".cache" / "dfb-ood"
    return base / "decoded"


def cache_key(table: FileTable, resize: int | tuple[int, int], crop: int) -> str:
    """Hash of the files' identities (path, size, mtime), the labels and the transform."""
    identity = f"v{CACHE_VERSION}|{resize}|{crop}|{table_fingerprint(table)}"
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


def load_decoded(
    key: str, shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, list[Problem]] | None:
    """The cached (images memory-mapped, labels, skipped entries) of a key; None when absent or off.

    ``skipped`` are the undecodable entries left out when the set was stored (empty for a whole
    set). ``shape`` is the images' expected shape when nothing was skipped; an entry that does
    not match, or cannot be read, is ignored (and removed when possible) with a warning.
    """
    root = cache_root()
    if root is None:
        return None
    folder = root / key
    images_path, labels_path = folder / "images.npy", folder / "labels.npy"
    if not (os.path.isfile(images_path) and os.path.isfile(labels_path)):
        return None
    try:
        images = np.load(images_path, mmap_mode="r")
        labels = np.load(labels_path)
        record = _read_record(folder / "source.json")
        skipped = [Problem(str(origin), str(message)) for origin, message in record.get("skipped", [])]
        problem = _checksum_problem(record, {"images.npy": images_path, "labels.npy": labels_path})
    except (OSError, ValueError, KeyError, TypeError) as error:
        return _unusable(folder, f"cannot read it ({error})")
    if problem:
        return _unusable(folder, problem)
    expected = None if shape is None else (shape[0] - len(skipped), *shape[1:])
    if images.dtype != np.uint8 or labels.shape != (len(images),) or (expected and images.shape != expected):
        return _unusable(folder, f"it holds {images.dtype} {images.shape} and {labels.shape} labels")
    return images, labels, skipped


def store_decoded(
    key: str, images: np.ndarray, labels: np.ndarray, source: str, skipped: list[Problem] | None = None
) -> bool:
    """Cache a decoded set; True when stored. Never raises for the file system: see the module docs."""
    root = cache_root()
    if root is None or root in _unwritable:
        return False
    staging: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(root)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=STAGING_SUFFIX, dir=root))
        _write_npy(staging / "images.npy", images)
        _write_npy(staging / "labels.npy", labels)
        record = {
            "source": source,
            "count": int(len(labels)),
            "version": CACHE_VERSION,
            "skipped": [[p.origin, p.message] for p in skipped or []],
            "sha256": {name: file_checksum(staging / name) for name in ("images.npy", "labels.npy")},
        }
        _write_bytes(staging / "source.json", (json.dumps(record, indent=2) + "\n").encode())
        _publish(staging, root / key)
        return True
    except OSError as error:
        reason = error.strerror or str(error)
        _unwritable[root] = reason
        warnings.warn(
            CacheWarning(
                f"cannot write the decoded-image cache in {root} ({reason}); going on without it: "
                f"this and later runs decode the images again. Set {CACHE_ENV}=off to turn the cache "
                f"off, or {CACHE_ENV}=<folder> to keep it elsewhere."
            ),
            stacklevel=2,
        )
        return False
    finally:
        if staging is not None and os.path.lexists(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array))
        handle.flush()
        os.fsync(handle.fileno())


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _complete(folder: Path) -> bool:
    return all(os.path.isfile(folder / name) for name in ("images.npy", "labels.npy", "source.json"))


def _publish(staging: Path, final: Path) -> None:
    """Rename a fully written staging folder to its key (a folder rename: all or nothing)."""
    try:
        os.rename(staging, final)
    except OSError:
        if not os.path.lexists(final):
            raise
        if _complete(final):
            return  # another process stored the same key first; same key, same pixels
        shutil.rmtree(final)  # an incomplete entry of an older version of this code
        os.rename(staging, final)


def _remove_stale_staging(root: Path) -> None:
    """Staging folders of processes killed mid-write (old enough that no writer is still at work)."""
    now = time.time()
    for entry in os.scandir(root):
        if entry.name.startswith(".") and entry.name.endswith(STAGING_SUFFIX):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_STAGING_S:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                continue


def _read_record(path: Path) -> dict:
    if not os.path.isfile(path):
        return {}
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise InputError(f"{path.name} is not a JSON object")
    return record


def _checksum_problem(record: dict, files: dict[str, Path]) -> str | None:
    """Why an entry's bytes cannot be trusted (no checksums recorded, or a mismatch); None if intact."""
    recorded = record.get("sha256")
    if record.get("version") != CACHE_VERSION or not isinstance(recorded, dict):
        return "it was written without checksums (an older version of this code)"
    for name, path in files.items():
        if recorded.get(name) != file_checksum(path):
            return f"{name} does not match the checksum recorded when it was written (altered or damaged)"
    return None


def _unusable(folder: Path, why: str) -> None:
    warnings.warn(
        CacheWarning(f"ignoring the decoded-image cache entry {folder}: {why}; decoding the images again"),
        stacklevel=3,
    )
    shutil.rmtree(folder, ignore_errors=True)
    return None
