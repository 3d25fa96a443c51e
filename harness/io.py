"""Atomic writes, content hashes and the run-directory lock.

Every artifact is written to a temporary file in its final folder and renamed into place, so a run
killed at any moment leaves either the old artifact or the new one, never half a file. That is what
makes "skip a stage whose artifact exists" safe. The atomic-write primitive itself lives in
:mod:`networks.atomic` (``networks`` may not import ``harness``) and is re-exported here.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.harness.errors import RunFolderError, RunLockedError
from dfb_ood.harness.names import check_file_name
from dfb_ood.networks.atomic import atomic_path, atomic_write, default_file_mode  # noqa: F401 - re-exported


def decode_text(data: bytes, path: str | Path, where: str = "") -> str:
    """The text of a list or YAML file a user wrote, with ``\\n`` line ends.

    Accepts UTF-8 with or without a byte-order mark (Windows Notepad writes one), UTF-16 with its
    mark (PowerShell 5's ``>`` writes that), and CRLF or CR line ends. Anything else raises a
    ValueError naming the file, the line of the first bad byte and how to fix it.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"  # strips one leading BOM when present
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(
            f"{path}:{line}: not a UTF-8 text file (byte {error.start}: {error.reason}); "
            f"save it as UTF-8{where}"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(path: str | os.PathLike[str], mode: int, what: str) -> OSError:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    error = IsADirectoryError if stat.S_ISDIR(mode) else OSError
    return error(f"{path}: {what} must be a regular file, but this is {kind}")


def open_regular(path: str | os.PathLike[str], what: str = "a file") -> IO[bytes]:
    """Open a user's file for reading, refusing anything but a regular file (links are followed).

    Why: opening a FIFO blocks until some process writes to it, so a named pipe inside an image
    folder, or given as a list or YAML, would hang ``bench`` and ``data check`` for ever, and a
    device such as ``/dev/zero`` never ends. The path is checked before it is opened (opening some
    devices has effects), and the open descriptor again (the path may have changed in between);
    ``O_NONBLOCK`` keeps even that one open from blocking. ``FileNotFoundError`` passes through;
    anything else is an ``OSError`` (``IsADirectoryError`` for a folder) naming the file and kind.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(path, info.st_mode, what)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode, what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], what: str = "a file", limit: int | None = None) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`), refused above ``limit`` bytes.

    The size is checked before anything is read, so a huge file given by mistake costs no memory.
    """
    with open_regular(path, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        if limit is not None and size > limit:
            raise InputError(
                f"{path}: {size} bytes, more than the {limit} {what} may hold; is it the right file?"
            )
        return handle.read()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Atomically write JSON (sorted keys, indented, numpy scalars converted)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str], *, follow_symlinks: bool = True) -> Any:
    """Read JSON with an error that names the file.

    ``follow_symlinks=False`` for a file of a run folder: a link there is refused
    (:func:`open_regular_no_follow`), never read through.
    """
    try:
        if follow_symlinks:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        return json.loads(read_regular_text(path))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON (line {error.lineno}): {error.msg}") from None


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
    """sha256 of a user's file (first 16 hex digits; links followed), to key later stages on it."""
    return _sha256(path, chunk, follow_symlinks=True)[:16]


def file_checksum(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The full sha256 of a file's bytes: what ``stages.json`` records of every artifact it vouches for.

    Opened without following a symbolic link (``OSError`` ELOOP on a link): an artifact is a
    regular file the run wrote, never a link to somewhere else.
    """
    return _sha256(path, chunk, follow_symlinks=False)


def _sha256(path: str | os.PathLike[str], chunk: int, *, follow_symlinks: bool) -> str:
    digest = hashlib.sha256()
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags), "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ no-follow access
def _link_message(path: Path, what: str, hint: str = "") -> str:
    return (
        f"{path} is {what}; harness neither reads nor writes through a link planted in a run folder "
        f"(it may point at another user's files): remove it (its target is not touched){hint}"
    )


def own_folder(
    root: str | os.PathLike[str], relative: str | os.PathLike[str], *, create: bool = True, hint: str = ""
) -> Path | None:
    """``root/relative``, every folder of ``relative`` a plain folder of its own, made when ``create``.

    ``root`` (a run folder, as the user gave it) may itself be a link: that is the user's choice.
    Each component below it is created without following links (``mkdir`` never does) and then
    looked at with ``lstat``: a symbolic link, or a file where a folder belongs, raises
    :class:`RunFolderError` naming it and saying to remove it (``hint`` adds another way out, such
    as ``--out``). Without ``create``, a missing component returns ``None``. Each component must be
    one plain name (:mod:`harness.names`): nothing here leaves ``root``.
    """
    current = Path(root)
    if create:
        try:
            current.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise RunFolderError(f"{current} is a file, not a folder; give a folder") from None
    for part in Path(relative).parts:
        current = current / check_file_name(part, "folder name", str(current))
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(current)
        try:
            info = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            if create:
                raise
            return None
        if stat.S_ISLNK(info.st_mode):
            raise RunFolderError(_link_message(current, "a symbolic link, not a folder of the run", hint))
        if not stat.S_ISDIR(info.st_mode):
            what = "not a folder (a file stands where one belongs)"
            raise RunFolderError(_link_message(current, what, hint))
    return current


def open_regular_no_follow(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a regular file for reading without following a symbolic link at its name.

    A link raises :class:`RunFolderError` (``O_NOFOLLOW``: ELOOP), as does anything but a regular
    file (a FIFO is opened non-blocking, so it cannot hang the reader, then refused); a missing
    file raises ``FileNotFoundError``. The folders above are the caller's to check
    (:func:`own_folder`).
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0)
    if not hasattr(os, "O_NOFOLLOW") and path.is_symlink():
        raise RunFolderError(_link_message(path, "a symbolic link, not a file of the run"))
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP or (error.errno != errno.ENOENT and path.is_symlink()):
            raise RunFolderError(_link_message(path, "a symbolic link, not a file of the run")) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunFolderError(_link_message(path, "not a regular file (a device, FIFO or folder)"))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file, a link at its name refused (:func:`open_regular_no_follow`)."""
    with open_regular_no_follow(path) as handle:
        return handle.read()


def read_regular_text(path: str | os.PathLike[str]) -> str:
    """UTF-8 text of a regular file, a link at its name refused (:func:`open_regular_no_follow`)."""
    return read_regular_bytes(path).decode("utf-8")


def _open_lock_file(path: Path, *, write: bool) -> int | None:
    """Open a lock file without following a symbolic link; ``None`` when reading and it is absent.

    A run folder may sit on a shared file system: if ``run.lock`` were a link to another user's
    file, opening it for writing would let us damage that file. ``O_NOFOLLOW`` refuses the link
    (on systems without it the link is checked first), and a file with other hard links is refused
    as well, since writing into it would change those other names too.
    """
    flags = (os.O_RDWR | os.O_CREAT) if write else os.O_RDONLY
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    if not hasattr(os, "O_NOFOLLOW") and path.is_symlink():
        raise RunFolderError(f"{path} is a symbolic link; a run's lock file must be a plain file: remove it")
    try:
        fd = os.open(path, flags, 0o666)
    except FileNotFoundError:
        if write:
            raise
        return None
    except OSError as error:
        if error.errno == errno.ELOOP or path.is_symlink():
            raise RunFolderError(
                f"{path} is a symbolic link; a run's lock file must be a plain file: remove it"
            ) from None
        if not write and error.errno in (errno.EACCES, errno.EPERM):
            return None  # a reader that may not open the lock cannot be damaging anything either
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise RunFolderError(
            f"{path} is not a plain file of its own (a device, folder or hard link); remove it"
        )
    return fd


#: The descriptors of the run-folder locks this process holds (or is about to take). A forked
#: child (a DataLoader worker) closes its copies at once: see :func:`_close_inherited_locks`.
_held_lock_fds: set[int] = set()


def _close_inherited_locks() -> None:
    """In a forked child: close the copies of the parent's lock descriptors, without unlocking.

    An ``flock`` belongs to the open file description, which a fork shares: while any copy of the
    descriptor is open the lock stays held. DataLoader workers forked during a stage would keep
    the folder locked after their parent is killed (until they notice it is gone, seconds later),
    and an immediate rerun would be refused. ``flock(LOCK_UN)`` here would be worse: it would
    release the lock the parent still relies on. Closing our copy leaves the parent's lock alone.
    The set is emptied so that the child's unwinding ``run_lock`` does not close the numbers again
    (by then they may name files the child opened since).
    """
    for fd in _held_lock_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_lock_fds.clear()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork, and its lock is per handle anyway
    os.register_at_fork(after_in_child=_close_inherited_locks)


def _release(fd: int) -> None:
    """Close a lock descriptor this process still owns (a forked child closed its copy already)."""
    if fd in _held_lock_fds:
        _held_lock_fds.discard(fd)
        os.close(fd)


def _try_lock(fd: int, exclusive: bool) -> bool:
    """Take an advisory lock without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: msvcrt locks bytes; a lock of the first byte stands for the file
        import msvcrt

        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        return False
    return True


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str], wait_s: float = 0.0) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder/run.lock`` so two processes never interleave writes.

    The lock is an ``flock`` on an open file: the kernel releases it when the process dies, so a
    killed run never leaves a stale lock behind. With ``wait_s > 0`` a second process waits that
    long for the first to finish, then fails with a message naming the holder. The lock file is
    opened without following links (see :func:`_open_lock_file`). Processes forked while it is
    held (DataLoader workers) do not keep it: they close their copy (:func:`_close_inherited_locks`),
    so a killed run's folder is free as soon as the run itself is gone, not when its workers are.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / "run.lock"
    fd = _open_lock_file(lock_path, write=True)
    assert fd is not None
    _held_lock_fds.add(fd)  # before the lock is taken: a fork from another thread may come any time
    deadline = time.monotonic() + wait_s
    try:
        while not _try_lock(fd, exclusive=True):
            if time.monotonic() >= deadline:
                raise RunLockedError(
                    f"{folder} is in use by {_holder(fd)}; wait for it to finish or use another --out"
                )
            time.sleep(0.5)
        if not hasattr(os, "geteuid") or os.fstat(fd).st_uid == os.geteuid():
            # Our own plain file (checked above): the holder's pid, for the next process's message.
            # A lock file of another user (a shared folder) still locks, and is never written.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        yield lock_path
    finally:
        _release(fd)


#: How long a reader of a finished run (``harness report``, ``verify``, ``figure tsne``) waits for a
#: bench holding the folder before it gives up: long enough for a bench that is just finishing.
READ_WAIT_S = 5.0
READ_FIX = "wait for it to finish, then run this command again"


@contextlib.contextmanager
def read_lock(
    folder: str | os.PathLike[str],
    wait_s: float = 0.0,
    fix: str = "wait for it to finish or use another --out",
) -> Iterator[None]:
    """A shared lock for reading a finished run: creates nothing, so a read-only folder works.

    Fails when a writer holds the folder (its artifacts may be half-way through a change), after
    waiting up to ``wait_s`` for it; the message names the holder and then ``fix``. Held for the
    whole of a read, it also keeps a bench from starting to replace the artifacts being read (a
    report of the old networks written into a retrained run). When there is no lock file, or it
    cannot be opened, nobody can be writing through it.
    """
    lock_path = Path(folder) / "run.lock"
    fd = _open_lock_file(lock_path, write=False)
    if fd is None:
        yield
        return
    _held_lock_fds.add(fd)
    deadline = time.monotonic() + wait_s
    try:
        while not _try_lock(fd, exclusive=False):
            if time.monotonic() >= deadline:
                raise RunLockedError(f"{folder} is in use by {_holder(fd)}; {fix}")
            time.sleep(0.25)
        yield
    finally:
        _release(fd)
