"""Atomic writes, content hashes and the run-directory lock.

Every artifact is written to a temporary file in its final folder and renamed into place, so a run
killed at any moment leaves either the old artifact or the new one, never half a file. That is what
makes "skip a stage whose artifact exists" safe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.fchmod(fd, default_file_mode())  # mkstemp makes 0600 files; artifacts get the usual permissions
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary binary file, fsync it, then rename it to ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Atomically write JSON (sorted keys, indented, numpy scalars converted)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON with an error that names the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON (line {error.lineno}): {error.msg}") from None


def save_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Atomically write an uncompressed ``.npz``."""
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Atomically write a ``.npy`` (memory-mappable with ``np.load(..., mmap_mode='r')``)."""
    atomic_write(path, lambda handle: np.save(handle, array))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def content_hash(*parts: Any) -> str:
    """A short, stable hash of JSON-able settings (dict order does not matter)."""
    text = json.dumps(parts, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_hash(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (first 16 hex digits), to key later stages on an artifact."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]


class RunLockedError(RuntimeError):
    """Another process holds the run directory."""


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str], wait_s: float = 0.0) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder/run.lock`` so two processes never interleave writes.

    The lock is an ``flock`` on an open file: the kernel releases it when the process dies, so a
    killed run never leaves a stale lock behind. With ``wait_s > 0`` a second process waits that
    long for the first to finish, then fails with a message naming the holder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / "run.lock"
    handle = open(lock_path, "a+")  # noqa: SIM115 - held for the whole context
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise RunLockedError(
                        f"{folder} is in use by {holder}; wait for it to finish or use another --out"
                    ) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield lock_path
    finally:
        handle.close()
