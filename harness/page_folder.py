"""The page's folder guard: which files in ``--html DIR`` the page writer wrote and may replace.

Why: ``harness leaderboard --html DIR`` writes into a folder the user names, and a mistyped name
must never overwrite or delete a user's files. So the writer records what it wrote in a manifest
(:data:`MANIFEST`), refuses a folder that holds anything else (naming those files, before any work
is done), and on a rewrite removes only what an earlier write of its own left behind. The
manifest is a :class:`harness.written_record.WrittenRecord`, the record exports and reports keep too.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from dfb_ood.errors import InputError
from dfb_ood.harness.io import atomic_write, open_regular_no_follow
from dfb_ood.harness.written_record import WrittenRecord

__all__ = [
    "FIGURES",
    "INDEX",
    "MANIFEST",
    "WRITER",
    "PageFolderError",
    "check_page_folder",
    "copy_atomic",
    "remove_stale",
    "write_manifest",
]

INDEX = "index.html"
#: The list of files the page writer wrote into its folder: what it may replace or delete.
MANIFEST = ".harness-page.json"
FIGURES = "figures"
#: The command that writes the page (named in its manifest, its footer and its generator tag).
WRITER = "harness leaderboard --html"
_RECORD = WrittenRecord(MANIFEST, WRITER, list, {"version": 1})

# An interrupted atomic write's temporary file (networks.atomic names it .NAME.<random>.tmp).
_TEMP_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")


class PageFolderError(InputError):
    """The page's folder cannot be used: it holds files the page writer did not write, or is a file."""


def _safe_relative(entry: object, manifest: Path) -> str:
    """A manifest entry as a plain relative POSIX path inside the folder, or PageFolderError."""
    path = PurePosixPath(str(entry)) if isinstance(entry, str) else None
    if path is None or not str(entry) or path.is_absolute() or any(p in ("..", ".", "") for p in path.parts):
        raise PageFolderError(
            f"{manifest}: entry {entry!r} is not a file name inside the folder; this manifest was not "
            "written by the page writer. Choose another folder for the page, or remove this one."
        )
    return path.as_posix()


def _read_manifest(out_dir: Path) -> frozenset[str]:
    try:
        files = _RECORD.read(out_dir)
    except (OSError, ValueError) as error:
        raise PageFolderError(
            f"{_RECORD.path(out_dir)} is not a page manifest ({error}), so the files in {out_dir} cannot be "
            "told apart from yours. Choose another folder for the page, or remove this one."
        ) from None
    if files is None:
        return frozenset()
    return frozenset(_safe_relative(entry, _RECORD.path(out_dir)) for entry in files)


def _foreign_entries(out_dir: Path, ours: frozenset[str]) -> list[str]:
    """Everything under ``out_dir`` that is neither listed in the manifest nor our own leftover.

    A listed name that is now a link or a folder counts as foreign: the user put it there. Leftover
    temporary files of an interrupted atomic write (``.NAME.xxxx.tmp`` beside a listed NAME) are ours.
    """
    folders = {parent.as_posix() for name in ours for parent in PurePosixPath(name).parents} - {"."}
    foreign = []
    for root, dirs, files in os.walk(out_dir):
        rel_root = PurePosixPath(Path(root).relative_to(out_dir).as_posix())
        for name in list(dirs):
            rel = (rel_root / name).as_posix()
            if (Path(root) / name).is_symlink() or rel not in folders:
                foreign.append(rel + ("" if (Path(root) / name).is_symlink() else "/"))
                dirs.remove(name)  # do not list a foreign folder's contents
        for name in files:
            rel = (rel_root / name).as_posix()
            path = Path(root) / name
            if rel in ours or rel == MANIFEST:
                if path.is_symlink():
                    foreign.append(rel)
                continue
            leftover = _TEMP_LEFTOVER.match(name)
            if leftover and (rel_root / leftover["name"]).as_posix() in ours | {INDEX, MANIFEST}:
                continue
            foreign.append(rel)
    return sorted(foreign)


def check_page_folder(out_dir: str | os.PathLike[str]) -> frozenset[str]:
    """Whether the page may be written into ``out_dir``; the files an earlier page write left there.

    A folder that does not exist yet, an empty one, or one that holds only what the page writer
    wrote before (its manifest says which) is fine. Anything else raises :class:`PageFolderError`
    naming the files, before any work is done: the page never replaces or deletes a file it did not
    write. Callers (the CLI) may call this first to fail before loading anything.
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink() and not out_dir.exists():
        raise PageFolderError(f"page folder {out_dir} is a broken link; give a folder, e.g. leaderboard-page")
    if not out_dir.exists():
        parent = next((folder for folder in out_dir.absolute().parents if folder.exists()), None)
        if parent is not None and not parent.is_dir():
            raise PageFolderError(
                f"page folder {out_dir}: {parent} is a file, so no folder can be made there"
            )
        return frozenset()
    if not out_dir.is_dir():
        raise PageFolderError(
            f"page folder {out_dir} is a file; --html takes a folder (it is created), "
            f"e.g. {out_dir.parent / 'leaderboard-page'}"
        )
    ours = _read_manifest(out_dir)
    foreign = _foreign_entries(out_dir, ours)
    if foreign:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PageFolderError(
            f"page folder {out_dir} holds files the leaderboard page did not write ({listed}); the page "
            "is written only into a new or empty folder, or one it wrote before, so that nothing of "
            "yours is replaced. Give another folder, e.g. --html leaderboard-page, or move those files."
        )
    return ours


def write_manifest(out_dir: Path, files: Iterable[str]) -> None:
    """Record ``files`` (relative POSIX names) as the page writer's in ``out_dir``'s manifest."""
    _RECORD.write(out_dir, sorted(files))


def copy_atomic(source: Path, target: Path) -> None:
    """Copy a run's figure: a temporary file beside the target, renamed into place when complete.

    The source is opened without following a link (:func:`harness.io.open_regular_no_follow`): a
    link planted in a run's ``report/`` never puts the file it points at into a published page.
    """
    with open_regular_no_follow(source) as src:
        atomic_write(target, lambda handle: shutil.copyfileobj(src, handle))


def remove_stale(out_dir: Path, stale: Iterable[str], keep: set[str]) -> None:
    """Delete files an earlier page write made that this one does not (listed in its manifest)."""
    for name in sorted(stale):
        path = out_dir / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
    for path in sorted(out_dir.rglob(".*.tmp")):
        leftover = _TEMP_LEFTOVER.match(path.name)
        rel_parent = path.parent.relative_to(out_dir).as_posix()
        known = keep | set(stale) | {INDEX, MANIFEST}
        if leftover and path.is_file() and PurePosixPath(rel_parent, leftover["name"]).as_posix() in known:
            path.unlink()
    figures = out_dir / FIGURES
    if figures.is_dir() and not figures.is_symlink():
        for folder in sorted((p for p in figures.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
        if not any(figures.iterdir()):
            figures.rmdir()
