"""Array sets: images stored as uint8 arrays in one ``.npz`` file (the built-in ``fmnist_mini``).

Why a set type of its own: a benchmark that ships inside the package must be compact (a few MB,
not thousands of small files) and must be read the same way from a wheel as from a checkout.
One ``.npz`` holds every set of such a benchmark, ``<key>_images`` (N, H, W) or (N, H, W, 1|3)
uint8 and, for ID sets, ``<key>_labels`` (N,) integers. The YAML may record the file's SHA-256:
then the file is used only when its bytes hash to it (a damaged or replaced file is refused, and
``harness data check`` reports it). The fingerprint of a set covers its own arrays' bytes, so a
changed set invalidates its cached outputs and nothing else.

Only plain files are opened (never a FIFO or a device), numpy's loader never unpickles, and the
file's and each member's size are bounded (``MAX_ARRAY_BYTES``) before anything is read.
"""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from pathlib import Path

import numpy as np

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness.data.specs import SetSpec

MAX_ARRAY_BYTES = 8 * 2**30  # a declared array larger than this is refused before it is read


def _open_regular(path: Path, spec: SetSpec) -> bytes:
    """The bytes of ``path``, refusing anything but a regular file (a FIFO would block forever)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MissingInputError(
            f"{path}: array file not found (set {spec.name!r} at {spec.source}); the built-in benchmark's "
            "file ships with the package: reinstall it, or fix `file:`"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file (set {spec.name!r} at {spec.source})")
    if info.st_size > MAX_ARRAY_BYTES:
        raise InputError(f"{path}: {info.st_size} bytes, above the {MAX_ARRAY_BYTES} an array set may hold")
    return path.read_bytes()


def file_bytes(spec: SetSpec) -> bytes:
    """The array file of ``spec``, its SHA-256 checked when the YAML records one."""
    path: Path = spec.params["file"]
    data = _open_regular(path, spec)
    expected = spec.params.get("sha256")
    if expected is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise InputError(
                f"{path}: SHA-256 {actual[:16]}... does not match the {expected[:16]}... recorded at "
                f"{spec.source}; the file is damaged or was replaced: reinstall the package (or rebuild "
                "it with scripts/make_fmnist_mini.py and update the YAML)"
            )
    return data


def _members(data: bytes, spec: SetSpec) -> dict[str, np.ndarray]:
    """The set's arrays (``<key>_images`` and, if present, ``<key>_labels``) read from the file's bytes."""
    key = spec.params["key"]
    names = (f"{key}_images", f"{key}_labels")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InputError(
            f"{spec.params['file']}: not an .npz file (set {spec.name!r} at {spec.source})"
        ) from None
    with archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        if names[0] not in members:
            known = sorted(n.removesuffix("_images") for n in members if n.endswith("_images"))
            raise InputError(
                f"{spec.params['file']}: no array {names[0]!r} for set {spec.name!r} at {spec.source}; "
                f"keys in the file: {', '.join(known) or 'none'}"
            )
        out = {}
        for name in names:
            if name not in members:
                continue
            if members[name].file_size > MAX_ARRAY_BYTES:
                raise InputError(
                    f"{spec.params['file']}: array {name!r} declares {members[name].file_size} bytes"
                )
            with archive.open(members[name]) as handle:
                try:
                    out[name] = np.lib.format.read_array(handle, allow_pickle=False)
                except (ValueError, OSError, zipfile.BadZipFile) as error:  # object arrays, bad headers
                    raise InputError(f"{spec.params['file']}: cannot read array {name!r}: {error}") from None
    return out


def load_array_set(spec: SetSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """(images (N, H, W, 3) uint8, labels (N,) int64 or None) of an array set, validated."""
    arrays = _members(file_bytes(spec), spec)
    key = spec.params["key"]
    images = arrays[f"{key}_images"]
    where = f"{spec.params['file']} array {key}_images (set {spec.name!r} at {spec.source})"
    if images.dtype != np.uint8:
        raise InputError(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise InputError(f"{where}: expected a non-empty (N, H, W[, 1 or 3]) array, got {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    labels = arrays.get(f"{key}_labels")
    if labels is not None:
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
            raise InputError(
                f"{spec.params['file']} array {key}_labels: expected {len(images)} integer labels, "
                f"got {labels.dtype} {labels.shape}"
            )
        labels = labels.astype(np.int64)
    return np.ascontiguousarray(images), labels


def array_set_fingerprint(spec: SetSpec) -> str:
    """A digest of the set's own arrays (names, dtypes, shapes and bytes) and its subset."""
    arrays = _members(file_bytes(spec), spec)
    digest = hashlib.sha256(f"arrays|{spec.params.get('subset')}".encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"|{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:24]
