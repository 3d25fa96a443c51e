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
import os
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


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file under the current umask."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The parent folder is created. The temporary name ends in ``.tmp`` + ``suffix`` (for writers
    that choose a format by the file name's ending). On success the file is given the umask's
    default mode and renamed to ``path``; on any failure (exceptions, ``KeyboardInterrupt``) it is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # After the write, not at creation: the writer may have replaced the file (see above).
        os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary binary file, fsync it, then rename it to ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
