"""Fetch, verify and unpack the OpenOOD v1.5 archives a benchmark needs (`harness data download`).

OpenOOD decides that a dataset is downloaded when its folder is not empty, so an interrupted unzip
passes for a finished one and is never repaired. Here "downloaded" means: a marker file
``<data root>/.downloads/<archive>.json`` records the archive's size and sha256 and the top-level
paths it put in place, and those paths exist. The marker is written last, after every entry has been
moved into place, so any crash leaves either no marker (the next run redoes the archive) or a
complete extraction with its marker.

Per archive: download to ``.downloads/<archive>.zip.part``; check that it is a complete zip (a
truncated download is not), that no member escapes its folder (zip-slip), and that size and sha256
match the catalogue's expected values, or, when those are unknown, the values an earlier marker
recorded; retry a failed download a few times; unzip into ``.downloads/tmp-<archive>-<random>``
(inside the data root, so the final moves are same-filesystem renames); move each top-level entry
into its destination with ``os.replace``; write the marker atomically.

Before the first move a journal ``.downloads/<archive>.moving.json`` lists the destinations: after a
crash mid-move the next run may replace those (they are this archive's own half-installed entries)
without ``force``, whereas any other existing entry is replaced only with ``force``.

The catalogue (Drive ids, destinations, benchmark lists) is ``configs/downloads.yaml``. Archives with
no known Drive id are reported as "manual": the user saves the zip by hand as
``.downloads/<archive>.zip`` and reruns; a hand-placed zip is also used instead of downloading when
Google Drive refuses (quota), since it goes through the same checks. Two downloads into one data root
at the same time are not supported (each clears the other's stale temporary folders).
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfb_ood.errors import InputError
from dfb_ood.harness.data.archive_check import IGNORED_TOP_LEVEL, checked_members, verify_archive
from dfb_ood.harness.data.download_catalogue import (
    ArchiveSpec,
    ArchiveStatus,
    ArchiveVerificationError,
    Catalogue,
    DestinationExistsError,
    DownloadError,
    MissingDependencyError,
    State,
    UnsafeArchiveError,
    as_catalogue,
    default_catalogue_path,
    load_catalogue,
)
from dfb_ood.harness.data.download_markers import (
    DOWNLOADS_DIR,
    MARKER_FORMAT,
    by_hand,
    expected_digest,
    hand_zip,
    installed_status,
    manual_status,
    marker_path,
    path_exists,
    paths_of,
    read_json,
    read_marker,
)
from dfb_ood.harness.io import write_json

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "DOWNLOADS_DIR",
    "MARKER_FORMAT",
    "ArchiveSpec",
    "ArchiveStatus",
    "ArchiveVerificationError",
    "Catalogue",
    "DestinationExistsError",
    "DownloadError",
    "Fetch",
    "MissingDependencyError",
    "State",
    "UnsafeArchiveError",
    "default_catalogue_path",
    "download_benchmark",
    "download_status",
    "gdown_fetch",
    "load_catalogue",
]

Fetch = Callable[[str, Path], None]

_TEMP_SUFFIX = r"[a-z0-9_]{8}"  # what tempfile.mkdtemp appends
_INSTALL_HINT = "pip install 'dfb-ood[download]'  (or: pip install gdown)"


def gdown_fetch(file_id: str, destination: Path) -> None:
    """Default fetch: download one Google Drive file with gdown, imported only when needed.

    gdown is an optional extra so that evaluating already-downloaded data never requires it.
    """
    try:
        import gdown
    except ImportError as exc:
        raise MissingDependencyError(
            f"downloading from Google Drive needs the optional package gdown: {_INSTALL_HINT}"
        ) from exc
    result = gdown.download(id=file_id, output=str(destination), quiet=False)
    if result is None:  # older gdown reports failure (e.g. Drive's download quota) by returning None
        raise DownloadError(f"gdown could not download Drive file {file_id}")


def download_status(
    benchmark: str, data_root: str | Path, *, catalogue: Catalogue | str | Path | None = None
) -> list[ArchiveStatus]:
    """What ``benchmark`` has on disk per the markers, downloading nothing (for ``--status`` views)."""
    root = Path(data_root)
    statuses = []
    for spec in as_catalogue(catalogue).specs(benchmark):
        status = installed_status(spec, root)
        if status is None:
            if spec.file_id is None and not hand_zip(root, spec).is_file():
                status = manual_status(spec, root, benchmark)
            else:
                status = ArchiveStatus(spec.name, "missing", root / spec.subdir, None, None)
        statuses.append(status)
    return statuses


def download_benchmark(
    benchmark: str,
    data_root: str | Path,
    *,
    fetch: Fetch | None = None,
    retries: int = 2,
    force: bool = False,
    console: Console | None = None,
    catalogue: Catalogue | str | Path | None = None,
) -> list[ArchiveStatus]:
    """Make every archive ``benchmark`` needs present under ``data_root``, verified and marked.

    ``fetch(file_id, destination)`` downloads one file (default: :func:`gdown_fetch`); a failed or
    corrupt download is retried ``retries`` more times. ``force`` lets an archive replace existing
    entries that are not its own; it does not redo archives whose marker is valid (delete
    ``.downloads/<archive>.json`` for that). Archives that fail do not stop the others; afterwards a
    :class:`DownloadError` names each failed archive and what failed: the archive's own error when one
    failed (e.g. :class:`UnsafeArchiveError`), else one listing them all in ``.failures``. Either way
    ``.statuses`` holds the archives that succeeded.
    """
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}")
    specs = as_catalogue(catalogue).specs(benchmark)
    root = Path(data_root)
    (root / DOWNLOADS_DIR).mkdir(parents=True, exist_ok=True)
    say = _printer(console)
    fetch = fetch or gdown_fetch
    statuses: list[ArchiveStatus] = []
    failures: list[DownloadError] = []
    for spec in specs:
        try:
            status = _ensure(spec, root, benchmark, fetch=fetch, retries=retries, force=force, say=say)
        except MissingDependencyError as exc:  # every further archive would fail the same way
            exc.statuses = statuses
            raise
        except DownloadError as exc:
            say(f"FAILED {exc}")
            failures.append(exc)
            continue
        if status.state == "manual":
            say(status.message)
        statuses.append(status)
    if len(failures) == 1:
        failures[0].statuses = statuses
        raise failures[0]
    if failures:
        error = DownloadError(
            f"{benchmark}: {len(failures)} of {len(specs)} archives failed:\n"
            + "\n".join(map(str, failures)),
            statuses,
        )
        error.failures = failures
        raise error
    return statuses


# --------------------------------------------------------------------------------------------------
# per-archive steps


def _ensure(
    spec: ArchiveSpec,
    root: Path,
    benchmark: str,
    *,
    fetch: Fetch,
    retries: int,
    force: bool,
    say: Callable[[str], None],
) -> ArchiveStatus:
    """Skip, install from a hand-placed zip, report as manual, or download: one archive."""
    installed = installed_status(spec, root)
    if installed is not None:
        say(f"{spec.name}: present")
        return installed
    _clear_stale(root, spec.name)
    old_marker = read_marker(root, spec.name)
    expected_size, expected_sha, pinned_by = expected_digest(spec, old_marker, root)
    hand = hand_zip(root, spec)
    if hand.is_file():
        say(f"{spec.name}: installing hand-placed {hand}")
        try:
            size, sha256 = verify_archive(hand, expected_size, expected_sha)
        except DownloadError as exc:
            raise type(exc)(f"{spec.name}: hand-placed {hand} rejected: {exc}{pinned_by}") from exc
        _install(spec, root, hand, size, sha256, old_marker, force=force, source="hand-placed")
        message = f"installed from {hand} (verified; you may delete it)"
        return ArchiveStatus(spec.name, "downloaded", root / spec.subdir, size, sha256, message)
    if spec.file_id is None:
        return manual_status(spec, root, benchmark)

    part = root / DOWNLOADS_DIR / f"{spec.name}.zip.part"
    attempts = retries + 1
    problems: list[str] = []
    for attempt in range(1, attempts + 1):
        part.unlink(missing_ok=True)
        say(f"{spec.name}: downloading Drive file {spec.file_id} (attempt {attempt} of {attempts})")
        try:
            fetch(spec.file_id, part)
            if not part.is_file():
                raise ArchiveVerificationError(f"the download left no file at {part}")
            size, sha256 = verify_archive(part, expected_size, expected_sha)
        except MissingDependencyError as exc:
            part.unlink(missing_ok=True)
            raise MissingDependencyError(f"{spec.name}: {exc}; {by_hand(spec, root)}") from exc
        except UnsafeArchiveError as exc:
            part.unlink(missing_ok=True)
            raise UnsafeArchiveError(f"{spec.name}: refused: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any fetch failure (network, quota, disk) is retried
            part.unlink(missing_ok=True)
            problems.append(f"attempt {attempt}: {exc}")
            say(f"{spec.name}: attempt {attempt} failed: {exc}")
            continue
        try:
            _install(spec, root, part, size, sha256, old_marker, force=force, source="gdrive")
        finally:
            part.unlink(missing_ok=True)
        say(f"{spec.name}: downloaded, verified, extracted into {root / spec.subdir}")
        return ArchiveStatus(spec.name, "downloaded", root / spec.subdir, size, sha256)
    raise DownloadError(
        f"{spec.name}: download failed after {attempts} attempt(s): "
        + "; ".join(problems)
        + pinned_by
        + f"; {by_hand(spec, root)}"
    )


def _install(
    spec: ArchiveSpec,
    root: Path,
    archive: Path,
    size: int,
    sha256: str,
    old_marker: dict | None,
    *,
    force: bool,
    source: str,
) -> None:
    """Unzip into a temp folder inside the data root, move entries into place, then write the marker."""
    downloads = root / DOWNLOADS_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f"tmp-{spec.name}-", dir=downloads))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp, members=checked_members(zf))
        entries = sorted(p.name for p in tmp.iterdir() if p.name not in IGNORED_TOP_LEVEL)
        if not entries:
            raise DownloadError(f"{spec.name}: the archive holds no files")
        relpaths = [posixpath.normpath(posixpath.join(spec.subdir, e)) for e in entries]
        journal = downloads / f"{spec.name}.moving.json"
        owned = set(paths_of(old_marker)) | set(paths_of(read_json(journal)))
        conflicts = [r for r in relpaths if path_exists(root / r) and r not in owned]
        if conflicts and not force:
            raise DestinationExistsError(
                f"{spec.name}: would replace existing {', '.join(str(root / r) for r in conflicts)}, "
                "which this archive did not create; move it away or rerun with --force"
            )
        (root / spec.subdir).mkdir(parents=True, exist_ok=True)
        write_json(journal, {"archive": spec.name, "paths": relpaths})
        # The old marker goes before anything moves: it must never describe a half-replaced tree.
        marker_path(root, spec.name).unlink(missing_ok=True)
        for entry, rel in zip(entries, relpaths):
            _move_into_place(tmp / entry, root / rel, downloads, spec.name)
        _write_marker(
            marker_path(root, spec.name),
            {
                "format": MARKER_FORMAT,
                "archive": spec.name,
                "file_id": spec.file_id,
                "source": source,
                "size": size,
                "sha256": sha256,
                "subdir": spec.subdir,
                "paths": relpaths,
                "completed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
        journal.unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(src: Path, dst: Path, downloads: Path, name: str) -> None:
    """Atomically put ``src`` at ``dst``; a previous ``dst`` is set aside first and then deleted."""
    aside = _set_aside(dst, downloads, name) if path_exists(dst) else None
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # dst's folder is a mount or a symlink to another disk: copy next to dst, then rename.
        staging = dst.parent / f".{dst.name}.incoming-{os.urandom(4).hex()}"
        try:
            if src.is_dir():
                shutil.copytree(src, staging, symlinks=True)
            else:
                shutil.copy2(src, staging)
            os.replace(staging, dst)
        finally:
            _remove(staging)
        _remove(src)
    if aside is not None:
        _remove(aside)


def _set_aside(dst: Path, downloads: Path, name: str) -> Path:
    """Move ``dst`` out of the way (into .downloads, where a crashed run's leftovers get cleared)."""
    trash = Path(tempfile.mkdtemp(prefix=f"trash-{name}-", dir=downloads))
    try:
        os.replace(dst, trash / dst.name)
        return trash
    except OSError as exc:
        trash.rmdir()
        if exc.errno != errno.EXDEV:
            raise
    aside = dst.with_name(f".{dst.name}.replaced-{os.urandom(4).hex()}")  # dst is on another disk
    os.replace(dst, aside)
    return aside


def _write_marker(path: Path, payload: dict[str, Any]) -> None:
    """Write the completion marker atomically; its own function so tests can simulate a crash here."""
    write_json(path, payload)


def _clear_stale(root: Path, name: str) -> None:
    """Remove what a crashed earlier run of this archive left in .downloads (temp dirs, .part)."""
    downloads = root / DOWNLOADS_DIR
    pattern = re.compile(
        rf"^(?:(?:tmp|trash)-{re.escape(name)}-{_TEMP_SUFFIX}"
        rf"|{re.escape(name)}\.zip\.part"
        rf"|{re.escape(name)}\.(?:json|moving\.json)\.tmp-{_TEMP_SUFFIX})$"
    )
    for entry in downloads.iterdir():
        if pattern.match(entry.name):
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _printer(console: Console | None) -> Callable[[str], None]:
    """Progress lines to a rich console, verbatim (archive names and paths are not markup)."""
    if console is None:
        return lambda message: None
    return lambda message: console.print(message, markup=False, highlight=False)
