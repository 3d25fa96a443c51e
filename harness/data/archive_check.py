"""Is a file the complete, safe zip archive expected? Size, sha256, CRCs and member names.

A truncated download is not a complete zip, and a hostile one may name members outside its folder
(zip-slip); both are refused before anything is extracted, and the members are checked again right
before extraction, never trusting an earlier look.
"""

from __future__ import annotations

import hashlib
import posixpath
import zipfile
from pathlib import Path

from dfb_ood.harness.data.download_catalogue import (
    ArchiveVerificationError,
    UnsafeArchiveError,
    unsafe_relative,
)

_CHUNK = 1 << 20
IGNORED_TOP_LEVEL = frozenset({"__MACOSX"})


def verify_archive(path: Path, expected_size: int | None, expected_sha: str | None) -> tuple[int, str]:
    """Size, sha256 and zip integrity of a file; raises on the first problem, else (size, sha256)."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ArchiveVerificationError(f"size is {size} bytes, expected {expected_size}")
    digest = archive_sha256(path)
    if expected_sha is not None and digest != expected_sha:
        raise ArchiveVerificationError(f"sha256 is {digest}, expected {expected_sha}")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            names = zf.namelist()
    except Exception as exc:  # noqa: BLE001 - whatever zipfile raises, the file is not a usable zip
        raise ArchiveVerificationError(f"not a complete zip archive ({type(exc).__name__}: {exc})") from exc
    if bad is not None:
        raise ArchiveVerificationError(f"zip member {bad!r} is corrupt (CRC mismatch)")
    unsafe = [(n, reason) for n in names if (reason := unsafe_relative(n)) is not None]
    if unsafe:
        shown = "; ".join(f"{n!r} ({reason})" for n, reason in unsafe[:5])
        raise UnsafeArchiveError(f"zip members would be written outside the extraction folder: {shown}")
    return size, digest


def checked_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The members to extract; re-checks zip-slip right before extracting, never trusting a cache."""
    members = []
    for info in zf.infolist():
        reason = unsafe_relative(info.filename)
        if reason is not None:
            raise UnsafeArchiveError(f"zip member {info.filename!r} refused ({reason})")
        if posixpath.normpath(info.filename).split("/")[0] not in IGNORED_TOP_LEVEL:
            members.append(info)
    return members


def archive_sha256(path: Path) -> str:
    """Streamed sha256, so multi-GB archives are hashed in constant memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
