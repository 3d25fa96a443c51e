"""Where an export may be written, and how: the one border every ``--output`` / ``--csv`` / ``--out`` crosses.

An export (a leaderboard table, OpenOOD's tables, a report) is written where the user says, and a
mistyped path must never cost the user or a run a file. The rules, checked before any work:

- a **special file** (a character device such as ``/dev/null`` or a terminal, a FIFO, or a link such
  as ``/dev/stdout`` to one of those or to the file the shell redirected stdout to) is written
  *into*: opened for writing, never renamed over, so the device node or link stays what it was;
- a **file of a run folder's own** (``RUN/results.csv``, ``results.json``, ``run.json``,
  ``stages.json``, ...) is never replaced by an export, ``--overwrite`` or not: it is the run;
- a **regular file harness did not write** (or wrote and the user edited since) is refused unless
  ``--overwrite`` is given, with one message naming the file and ``--overwrite``;
- a file harness wrote in an earlier export, unchanged since, may be replaced. Harness knows its own
  exports by :data:`MARKER`, a small JSON file beside them holding each one's sha256;
- a block device or a folder is refused.

Everything else is written atomically (:func:`harness.io.write_text`) and recorded in the marker
(a :class:`harness.written_record.WrittenRecord`, the record the leaderboard page keeps too).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from dfb_ood.errors import InputError
from dfb_ood.harness.io import file_checksum, write_text
from dfb_ood.harness.runfolder import RUN_ENTRIES, read_record
from dfb_ood.harness.written_record import WrittenRecord

#: The file beside an export that lists what harness wrote there (name -> sha256 of its bytes).
MARKER = ".harness-exports.json"
_RECORD = WrittenRecord(MARKER, "harness export", dict, sort_keys=True)

#: What :func:`check_target` found a target to be.
NEW, SPECIAL, OURS, REPLACE = "new", "special", "ours", "replace"


class ExportTargetError(InputError):
    """An export target harness may not write (the CLI shows it as one line, exit code of bad input)."""


def recorded(folder: Path) -> dict[str, str]:
    """The files harness recorded writing into ``folder`` (relative name -> sha256); {} if none.

    A marker that is missing, a link, or not harness's own counts as recording nothing: the files
    beside it are then the user's, which is the safe reading.
    """
    files = _RECORD.read_or_none(folder)
    if not isinstance(files, dict):
        return {}
    return {str(name): str(digest) for name, digest in files.items()}


def _record(folder: Path, written: Mapping[str, str]) -> None:
    """Add ``written`` (relative name -> sha256) to the folder's marker."""
    _RECORD.write(folder, {**recorded(folder), **written})


def run_artifact(path: Path) -> Path | None:
    """The run folder ``path`` is an artifact of (``RUN/results.csv``, ``RUN/outputs/...``), else None."""
    absolute = Path(os.path.abspath(path))
    for folder in absolute.parents:
        if read_record(folder) is not None:
            first = absolute.relative_to(folder).parts[0]
            return folder if first in RUN_ENTRIES else None
    return None


def _is_stream_link(path: Path) -> bool:
    """``/dev/stdout``, ``/dev/fd/1``, ``/proc/self/fd/1``: links that stand for an open stream."""
    text = os.path.abspath(path)
    return text.startswith(("/dev/", "/proc/"))


def check_target(
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
    option: str = "--output",
    marker_folder: Path | None = None,
) -> str:
    """What writing an export to ``path`` would do (:data:`NEW`, :data:`SPECIAL`, :data:`OURS`,
    :data:`REPLACE`); raises :class:`ExportTargetError` where it may not, before any work is done.

    ``marker_folder`` is the folder whose marker records ``path`` (default: its own folder; a folder
    export's root for the files under it).
    """
    path = Path(path)
    where = marker_folder if marker_folder is not None else path.parent
    run = run_artifact(path)
    if run is not None:
        raise ExportTargetError(
            f"{option} {path} is a file of the run folder {run} (the run's own results and records): an "
            "export never replaces it, --overwrite or not; give another file name, e.g. leaderboard.md"
        )
    if not os.path.lexists(path):
        parent = next((p for p in Path(os.path.abspath(path)).parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ExportTargetError(f"{option} {path}: {parent} is a file, so no folder can be made there")
        return NEW
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # a broken link: a file of the user's like any other
    if mode is not None and stat.S_ISDIR(mode):
        raise ExportTargetError(
            f"{option} {path} is a folder; give a file name, e.g. {path / 'leaderboard.md'}"
        )
    if mode is not None and stat.S_ISBLK(mode):
        raise ExportTargetError(f"{option} {path} is a block device (a disk); give a file name")
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return SPECIAL
    if path.is_symlink() and mode is not None and _is_stream_link(path):
        return SPECIAL  # /dev/stdout redirected by the shell to a file: write into that file
    name = os.path.relpath(os.path.abspath(path), os.path.abspath(where))
    if not path.is_symlink() and recorded(where).get(name) == file_checksum(path):
        return OURS
    if overwrite:
        return REPLACE
    what = "a link harness did not make" if path.is_symlink() else "a file harness did not write"
    raise ExportTargetError(
        f"{option} {path} exists and is {what} (or was changed since): pass --overwrite to replace "
        "it, or give another file name"
    )


def _write_into(path: Path, text: str) -> None:
    """Write into a device, FIFO or stream link without replacing it (no rename, no truncation).

    A FIFO is opened without blocking: with no process reading it, the open fails at once (rather
    than waiting for ever) and the error says so.
    """
    flags = os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if stat.S_ISREG(os.stat(path).st_mode):
        flags |= os.O_APPEND  # the shell's redirection file: after what was already written
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise ExportTargetError(
            f"cannot write into {path}: {error.strerror} (is anything reading it?)"
        ) from None
    try:
        os.set_blocking(fd, True)
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def write_export(
    path: str | os.PathLike[str], text: str, *, overwrite: bool, option: str = "--output"
) -> None:
    """Write one export file by the rules of this module (checked again: the file may have changed)."""
    path = Path(path)
    kind = check_target(path, overwrite=overwrite, option=option)
    if kind == SPECIAL:
        _write_into(path, text)
        return
    write_text(path, text)
    _record(path.parent, {path.name: file_checksum(path)})


def check_folder_targets(
    folder: str | os.PathLike[str], names: list[str], *, overwrite: bool, option: str = "--output"
) -> None:
    """Refuse a folder export that would replace any file it did not write, before writing any."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ExportTargetError(f"{option} {folder} is a file; this export writes a folder of files there")
    for name in names:
        kind = check_target(folder / name, overwrite=overwrite, option=option, marker_folder=folder)
        if kind == SPECIAL:
            raise ExportTargetError(f"{option} {folder / name} is not a regular file; give another folder")


def write_export_folder(
    folder: str | os.PathLike[str], files: Mapping[str, str], *, overwrite: bool, option: str = "--output"
) -> None:
    """Write a folder export (relative name -> text): all targets checked first, then each written
    atomically, and the folder's marker records them all."""
    folder = Path(folder)
    check_folder_targets(folder, list(files), overwrite=overwrite, option=option)
    written = {}
    for name, text in files.items():
        write_text(folder / name, text)
        written[name] = file_checksum(folder / name)
    _record(folder, written)


def check_report_folder(out: Path, run_dir: Path) -> None:
    """A report's ``--out`` folder must not hold a ``report.md`` or figure that harness did not write.

    The run's own ``RUN/report`` is harness's (it is one of the run's entries); elsewhere every
    non-hidden file already in the folder must be one an earlier report wrote (:data:`MARKER`).
    """
    if os.path.abspath(out) == os.path.abspath(run_dir / "report") or not out.is_dir():
        return
    ours = recorded(out)
    foreign = [
        entry.name
        for entry in sorted(out.iterdir())
        if not entry.name.startswith(".")
        and (entry.is_symlink() or not entry.is_file() or ours.get(entry.name) != file_checksum(entry))
        and not (entry.is_dir() and not entry.is_symlink() and entry.name in ours)
    ]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ExportTargetError(
            f"--out {out} holds files the report did not write ({shown}); a report is written only into "
            "a new or empty folder, or one a report wrote before, so that nothing of yours is replaced: "
            "give another --out, or move those files"
        )


def record_report(out: Path, run_dir: Path) -> None:
    """Record every file a report wrote into ``out`` (its own ``RUN/report`` needs no record)."""
    if os.path.abspath(out) == os.path.abspath(run_dir / "report"):
        return
    files = {e.name: file_checksum(e) for e in out.iterdir() if e.is_file() and not e.name.startswith(".")}
    _record(out, files)
