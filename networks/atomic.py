"""Atomic file writes: a temporary file beside the target, renamed into place only on success.

A process killed at any moment leaves either the old file or the new one, never half a file, and
no temporary file behind unless it is killed outright. This is the project's one implementation:
``networks.checkpoint`` writes with it, and ``harness.io`` re-exports it (``networks`` never
imports ``harness``).

The final file gets the mode a plain ``open(path, "w")`` would give it (``0o666 & ~umask``), set
just before the rename, so it does not matter how the writer produced the temporary file: some
writers do not write into the path they are given but create their own temporary file (mode
0600) and rename it over that path; safetensors' ``save_file`` does (seen with 0.8).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``).

    Elsewhere it falls back to setting and restoring it, which briefly sets the umask to 0 for
    every thread of the process.
    """
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0)
    os.umask(umask)
    return umask


#: The longest file name (bytes) most file systems allow (ext4, XFS, btrfs, tmpfs, APFS, NTFS).
NAME_MAX = 255
_RANDOM = 8  # characters tempfile.mkstemp puts between the prefix and the suffix


def temporary_prefix(name: str, suffix: str) -> str:
    """The prefix of a temporary file for ``name``: ``.{name}.``, shortened when that would be too long.

    ``.{name}.XXXXXXXX{suffix}`` must fit in :data:`NAME_MAX` bytes, or a target whose own name is
    allowed (244 bytes, say) could never be written. A long name keeps its start and gets a short
    hash of the whole name (``.{start}~{hash}.``), so the temporary is still recognisably a
    leftover of that file and, starting with ``.`` and holding ``.tmp``, is still found by
    ``harness.runfolder.remove_temporaries``.
    """
    room = NAME_MAX - _RANDOM - len(os.fsencode(suffix))
    prefix = f".{name}."
    if len(os.fsencode(prefix)) <= room:
        return prefix
    tag = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:12] + "."
    start = "." + name
    while start and len(os.fsencode(start + tag)) > room:
        start = start[:-1]
    return start + tag


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file under the current umask."""
    return 0o666 & ~current_umask()


def _seal(tmp_path: Path) -> None:
    """Give the finished temporary file the umask's default mode, refusing anything but a regular file.

    The file is reopened without following links and changed through its descriptor: if another
    user of a shared folder swapped the temporary name for a link to one of their files, that
    file is left alone and the write fails instead.
    """
    fd = os.open(tmp_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{tmp_path} is not a regular file; refusing to put it in place")
        os.fchmod(fd, default_file_mode())
    finally:
        os.close(fd)


#: errno values of a write the disk (or a quota, or a file-size limit) had no room for.
NO_ROOM = tuple({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG})
# PyTorch's own file writer (torch.save to a path) reports a short write as a RuntimeError without
# an errno: "[enforce fail at inline_container.cc:...] . unexpected pos 123 vs 456" (or "... failed
# writing file ...").
_TORCH_SHORT_WRITE = ("unexpected pos", "failed writing")
# numpy's ``ndarray.tofile`` (what ``np.save`` writes a contiguous array with) reports a short write
# as an OSError without an errno: "100000 requested and 12484 written".
_NUMPY_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


class NoRoomError(OSError):
    """A write that found no room; its text is the whole message (the file is in it and in ``filename``)."""

    def __str__(self) -> str:
        return str(self.strerror)


def no_room_error(path: Path, error: BaseException) -> OSError | None:
    """The error to raise for a write to ``path`` that found no room, or None for any other error.

    One message whatever the writer (our own handle, numpy, PyTorch's C++ writer): the file, the
    cause and the fix. The errno stays that of the cause (ENOSPC for PyTorch's, which has none),
    so callers can still tell a full disk from a file-size limit.
    """
    if isinstance(error, OSError) and error.errno in NO_ROOM:
        code = error.errno
    elif isinstance(error, OSError) and error.errno is None and _NUMPY_SHORT_WRITE.match(str(error)):
        code = errno.ENOSPC
    elif isinstance(error, RuntimeError) and any(text in str(error) for text in _TORCH_SHORT_WRITE):
        code = errno.ENOSPC
    else:
        return None
    if code == errno.EFBIG:
        text = (
            f"file too large writing {path}: a file-size limit (ulimit -f) was reached; raise it, or "
            "write to another disk (another --out)"
        )
    else:
        known = isinstance(error, OSError) and error.errno is not None
        why = "" if known else " (or a disk quota or file-size limit was reached)"
        text = (
            f"no space left on device writing {path}{why}; free some space, or write to another disk "
            "(another --out)"
        )
    return NoRoomError(code, text, str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The parent folder is created. The temporary name ends in ``.tmp`` + ``suffix`` (for writers
    that choose a format by the file name's ending). On success the file is given the umask's
    default mode and renamed to ``path``; on any failure (exceptions, ``KeyboardInterrupt``) it is
    removed and ``path`` is left as it was. The rename replaces ``path`` itself: if ``path`` is a
    symbolic link, the link is replaced and whatever it pointed at is never written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=temporary_prefix(path.name, ".tmp" + suffix), suffix=".tmp" + suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except (OSError, RuntimeError) as error:
            if (full := no_room_error(path, error)) is not None:
                raise full from error
            raise
        # After the write, not at creation: the writer may have replaced the file (see above).
        _seal(tmp_path)
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary binary file, fsync it, then rename it to ``path``.

    The bytes go through the descriptor that created the temporary file (``O_EXCL``, never a
    name reopened later), so nothing outside the new file can be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path.name, ".tmp"), suffix=".tmp", dir=path.parent)
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fchmod(handle.fileno(), default_file_mode())
                os.fsync(handle.fileno())
        except (OSError, RuntimeError) as error:
            if (full := no_room_error(path, error)) is not None:
                raise full from error
            raise
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
