"""What a set's data is, as a short hash: the key that tells a run its cached outputs are stale.

A run caches one forward pass per (network, set). The benchmark YAML alone does not say what a
set holds: the lines of its list file and the image files they name can change under the same
YAML. So every stage that read a set carries this fingerprint in its key, and a change anywhere
recomputes exactly what read that set (and says so).

What is hashed, per set type:

- ``imglist`` / ``folder``: the entries as read (each image's path below the set's image folder
  and its label, so an edited or shortened list changes it) and every image's size and
  modification time (so an image replaced under the same name changes it). Hashing the pixels
  themselves would cost a full read of the data set on every run; size + mtime is what
  ``make`` and rsync trust too.
- ``torchvision``: the class, split and options (in the YAML key already) plus the size and
  modification time of every file under its root folder.
- ``shapes``: its parameters (the images are generated from them).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from dfb_ood.harness.data.imglist import FileTable
from dfb_ood.harness.data.problems import DataWarning
from dfb_ood.harness.data.specs import Benchmark, SetSpec
from dfb_ood.harness.data.tables import file_table

FINGERPRINT_VERSION = 1


def table_fingerprint(table: FileTable, root: str | os.PathLike[str] | None = None) -> str:
    """Hash of a file table: each entry's path, size and modification time, and the labels.

    Paths under ``root`` are hashed relative to it, so a data folder moved or copied whole (with
    its times kept, as ``mv`` and ``cp -p`` do) is still the same data. A file that vanished
    since the table was read hashes as missing instead of raising: the load that follows
    reports it with its list line.
    """
    digest = hashlib.sha256(f"table v{FINGERPRINT_VERSION}|{len(table)}\n".encode())
    prefix = None if root is None else os.path.join(os.path.abspath(root), "")
    for path in table.paths:
        name = path[len(prefix) :] if prefix and path.startswith(prefix) else path
        try:
            stat = os.stat(path)
            digest.update(f"{name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}|missing\n".encode())
    digest.update(np.ascontiguousarray(table.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:24]


def tree_fingerprint(root: str | os.PathLike[str]) -> str:
    """Hash of every file's relative path, size and modification time under ``root`` (sorted)."""
    digest = hashlib.sha256(f"tree v{FINGERPRINT_VERSION}\n".encode())
    root = Path(root)
    if not root.exists():
        digest.update(b"missing")
        return digest.hexdigest()[:24]
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                stat = path.stat()
            except OSError:
                continue  # a dangling link: the dataset class reports what it cannot read
            digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def listed_entries(spec: SetSpec, benchmark: Benchmark, *, skip_bad: bool = False) -> FileTable:
    """A list or folder set's entries as read now, its bad-entry warnings silenced.

    Bad list lines raise here exactly as the load would (or, under ``skip_bad``, are left out
    silently: the load itself announces them). For what needs the entries but not the pixels:
    the fingerprint, and how large the set is.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # announced once, by the load
        return file_table(spec, benchmark, skip_bad=skip_bad)


def set_fingerprint(
    spec: SetSpec, benchmark: Benchmark, *, skip_bad: bool = False, entries: FileTable | None = None
) -> str:
    """The fingerprint of one set of ``benchmark`` (see the module docs for what it covers).

    ``entries``: the set's :func:`listed_entries`, when the caller has read them already.
    """
    if spec.type in ("imglist", "folder"):
        table = entries if entries is not None else listed_entries(spec, benchmark, skip_bad=skip_bad)
        root = spec.params.get("images") if spec.type == "imglist" else spec.params.get("path")
        return table_fingerprint(table, root)
    if spec.type == "torchvision":
        return tree_fingerprint(spec.params["root"])
    if spec.type == "arrays":
        from dfb_ood.harness.data.arrays import array_set_fingerprint

        return array_set_fingerprint(spec)
    return hashlib.sha256(repr(sorted(spec.params.items())).encode()).hexdigest()[:24]
