"""The markers that say an archive is installed, and what a data root holds according to them.

"Downloaded" means: ``<data root>/.downloads/<archive>.json`` records the archive's size, sha256 and
the top-level paths it put in place, it matches the catalogue, and those paths exist (see
:mod:`harness.data.download`). Reading never raises: a torn or foreign marker counts as absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from dfb_ood.harness.data.download_catalogue import SHA256_RE, ArchiveSpec, ArchiveStatus, unsafe_relative

DOWNLOADS_DIR = ".downloads"
MARKER_FORMAT = 1


def expected_digest(
    spec: ArchiveSpec, old_marker: dict | None, root: Path
) -> tuple[int | None, str | None, str]:
    """Expected size/sha256: the catalogue's, else the earlier marker's (same Drive id), else unknown.

    The third element is a hint to append to a mismatch error when the values came from the marker.
    """
    if spec.sha256 is not None or spec.size is not None:
        return spec.size, spec.sha256, ""
    if old_marker and old_marker.get("file_id") == spec.file_id:
        size, sha = old_marker.get("size"), old_marker.get("sha256")
        if isinstance(size, int) and isinstance(sha, str) and SHA256_RE.match(sha):
            hint = (
                f" (expected values recorded by the earlier download in {marker_path(root, spec.name)};"
                " delete that file to accept different content)"
            )
            return size, sha, hint
    return None, None, ""


def installed_status(spec: ArchiveSpec, root: Path) -> ArchiveStatus | None:
    """The "present" status when the marker is valid (or manual data is in place), else None."""
    marker = read_marker(root, spec.name)
    if marker is not None and _marker_valid(spec, marker, root):
        return ArchiveStatus(spec.name, "present", root / spec.subdir, marker["size"], marker["sha256"])
    if spec.file_id is None and spec.provides and all(path_exists(root / p) for p in spec.provides):
        message = "placed by hand (no marker: not hash-verified)"
        return ArchiveStatus(spec.name, "present", root / spec.subdir, None, None, message)
    return None


def _marker_valid(spec: ArchiveSpec, marker: dict, root: Path) -> bool:
    """A marker counts only if it is complete, matches the catalogue, and its paths all exist."""
    paths = marker.get("paths")
    if marker.get("archive") != spec.name or marker.get("subdir") != spec.subdir:
        return False
    if not isinstance(paths, list) or not paths:
        return False
    if not isinstance(marker.get("size"), int) or not isinstance(marker.get("sha256"), str):
        return False
    if spec.file_id is not None and marker.get("file_id") != spec.file_id:
        return False  # the catalogue moved to a new Drive file (e.g. a newer imglist release)
    if spec.sha256 is not None and marker["sha256"] != spec.sha256:
        return False
    if spec.size is not None and marker["size"] != spec.size:
        return False
    return all(isinstance(p, str) and unsafe_relative(p) is None and path_exists(root / p) for p in paths)


def manual_status(spec: ArchiveSpec, root: Path, benchmark: str) -> ArchiveStatus:
    """Status of an archive without a Drive id, with instructions for fetching it by hand."""
    how = f"{spec.manual}; " if spec.manual else ""
    message = (
        f"{spec.name}: no Google Drive id is known, so it must be fetched by hand: {how}"
        f"save the zip as {hand_zip(root, spec)} and rerun `harness data download {benchmark}` "
        f"(it is verified and extracted into {root / spec.subdir})"
    )
    return ArchiveStatus(spec.name, "manual", root / spec.subdir, None, None, message)


def by_hand(spec: ArchiveSpec, root: Path) -> str:
    """Instructions to fetch an archive with a browser when automatic download is impossible."""
    return (
        f"or fetch it by hand from https://drive.google.com/uc?id={spec.file_id} , save it as "
        f"{hand_zip(root, spec)} and rerun"
    )


def hand_zip(root: Path, spec: ArchiveSpec) -> Path:
    """Where a user saves an archive fetched by hand."""
    return root / DOWNLOADS_DIR / f"{spec.name}.zip"


def marker_path(root: Path, name: str) -> Path:
    """The completion marker of archive ``name``."""
    return root / DOWNLOADS_DIR / f"{name}.json"


def read_marker(root: Path, name: str) -> dict | None:
    """Archive ``name``'s marker, or None when absent or unreadable."""
    return read_json(marker_path(root, name))


def read_json(path: Path) -> dict | None:
    """A JSON object from disk, or None if absent or unreadable (a torn file counts as absent)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def paths_of(record: dict | None) -> Iterable[str]:
    """The safe relative paths a marker or journal lists (anything else is ignored)."""
    paths = record.get("paths") if record else None
    if not isinstance(paths, list):
        return []
    return [p for p in paths if isinstance(p, str) and unsafe_relative(p) is None]


def path_exists(path: Path) -> bool:
    """True for anything at ``path``, including a dangling symlink (os.replace would clobber it)."""
    return path.exists() or path.is_symlink()
