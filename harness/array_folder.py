"""A set of named arrays stored as a folder of numpy's own ``.npy`` files, one file per array.

Why a folder and not one ``.npz``: numpy memory-maps a ``.npy`` itself (``np.load(mmap_mode="r")``)
but ignores the mode for an ``.npz``, so one archive per set needed hand-made ZIP parsing to be
read without loading it. A cached pass (``outputs/<network>/<set>/``) is written here and mapped
back read-only, pages read as a detector touches them.

The folder is written whole under a temporary name beside it (``.<name>.XXXXXXXX.tmp``, which
``harness.runfolder.remove_temporaries`` removes when a killed run left one) and renamed into
place, so a folder under the final name is always complete. Reading refuses a link or anything
but a regular ``.npy`` file in the folder: the arrays are mapped by name, and a link would be
followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dfb_ood.harness.errors import RunFolderError
from dfb_ood.harness.names import check_file_name
from dfb_ood.networks.atomic import current_umask, default_file_mode, no_room_error, temporary_prefix

SUFFIX = ".npy"


def save_arrays(folder: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``folder/<name>.npy`` for every array, atomically: the whole folder appears at once.

    A folder already there (an older pass of the set) is replaced. On any failure the staging
    folder is removed and ``folder`` is left as it was; a write that finds no room raises
    :class:`networks.atomic.NoRoomError` naming ``folder`` and the fix.
    """
    folder = Path(folder)
    names = [check_file_name(f"{name}{SUFFIX}", "array name", str(folder)) for name in arrays]
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_folder(folder)
    try:
        try:
            for file_name, array in zip(names, arrays.values()):
                _write_npy(staging / file_name, np.asanyarray(array))
        except (OSError, RuntimeError) as error:  # a full disk names the set's folder and the fix
            if (full := no_room_error(folder, error)) is not None:
                raise full from error
            raise
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it 0700; a plain mkdir would not
        _fsync_folder(staging)
        _replace_folder(staging, folder)
        _fsync_folder(folder.parent)
    finally:
        if os.path.lexists(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _temporary_folder(folder: Path) -> Path:
    """A new, empty folder beside ``folder``, named as the run folder's temporaries are."""
    prefix = temporary_prefix(folder.name, ".tmp")
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=folder.parent))


def _write_npy(path: Path, array: np.ndarray) -> None:
    """One ``.npy`` through the descriptor that created it (``O_EXCL``: no name is reopened)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    with os.fdopen(os.open(path, flags, default_file_mode()), "wb") as handle:
        np.lib.format.write_array(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every system can open a folder (Windows)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_folder(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; an old folder there is moved aside first, then removed.

    Between the two renames the set has no folder, which reads as "not cached" (recomputed),
    never as a half-written one. A file or link in the folder's place is unlinked (a link's
    target is never touched).
    """
    try:
        os.rename(staging, folder)
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(folder)
        os.rename(staging, folder)
        return
    aside = _temporary_folder(folder)
    os.rename(folder, aside)  # onto an empty folder: allowed
    try:
        os.rename(staging, folder)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def array_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The ``.npy`` files of an array folder in name order, refusing a link or anything irregular.

    Raises :class:`RunFolderError` when ``folder`` itself, or any entry of it, is a symbolic link
    or not what an array folder holds (a regular ``<name>.npy``); ``FileNotFoundError`` when the
    folder is missing.
    """
    folder = Path(folder)
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RunFolderError(_refusal(folder, "a symbolic link or a file, not a folder of arrays"))
    files = []
    for name in sorted(os.listdir(folder)):
        path = folder / name
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise RunFolderError(_refusal(path, "a symbolic link, not an array this run wrote"))
        if not stat.S_ISREG(mode) or not name.endswith(SUFFIX):
            raise RunFolderError(_refusal(path, f"not a regular {SUFFIX} file (what an array folder holds)"))
        files.append(path)
    return files


def map_arrays(folder: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of a folder by name, as numpy's read-only memory map (an empty array is read)."""
    arrays: dict[str, np.ndarray] = {}
    for path in array_files(folder):
        before = os.lstat(path)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError:  # an empty array cannot be mapped (or the file is damaged: np.load says so)
            array = np.load(path, allow_pickle=False)
            array.flags.writeable = False
        after = os.lstat(path)
        if (before.st_ino, before.st_dev) != (after.st_ino, after.st_dev) or not stat.S_ISREG(after.st_mode):
            raise RunFolderError(_refusal(path, "replaced while it was being read"))
        arrays[path.name.removesuffix(SUFFIX)] = array
    return arrays


def _refusal(path: Path, what: str) -> str:
    return (
        f"{path} is {what}; harness neither reads nor writes through a link planted in a run folder "
        "(it may point at another user's files): remove it (its target is not touched), or run the "
        "same command again after deleting the folder to recompute it"
    )
