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
import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from dfb_ood.harness.io import write_json

if TYPE_CHECKING:
    from rich.console import Console

Fetch = Callable[[str, Path], None]
State = Literal["present", "downloaded", "manual", "missing"]

DOWNLOADS_DIR = ".downloads"
MARKER_FORMAT = 1
_CHUNK = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TEMP_SUFFIX = r"[a-z0-9_]{8}"  # what tempfile.mkdtemp appends
_IGNORED_TOP_LEVEL = frozenset({"__MACOSX"})
_INSTALL_HINT = "pip install 'dfb-ood[download]'  (or: pip install gdown)"


class DownloadError(RuntimeError):
    """An archive could not be fetched, verified or put in place; the message names the archive."""

    def __init__(self, message: str, statuses: list[ArchiveStatus] | None = None) -> None:
        super().__init__(message)
        self.statuses: list[ArchiveStatus] = statuses or []
        self.failures: list[DownloadError] = []


class ArchiveVerificationError(DownloadError):
    """A downloaded file is not the expected complete zip; downloading it again may help."""


class UnsafeArchiveError(DownloadError):
    """A zip member would land outside its folder (zip-slip); downloading again will not help."""


class DestinationExistsError(DownloadError):
    """An entry the archive would create already exists and is not this archive's; needs ``force``."""


class MissingDependencyError(DownloadError):
    """The optional downloader (gdown) is not installed."""


@dataclass(frozen=True)
class ArchiveSpec:
    """One archive of the catalogue: where it comes from, where it goes, what it must hash to."""

    name: str
    file_id: str | None
    subdir: str
    sha256: str | None = None
    size: int | None = None
    manual: str | None = None
    provides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalogue:
    """The parsed ``configs/downloads.yaml``: archives by name and each benchmark's archive list."""

    archives: dict[str, ArchiveSpec]
    benchmarks: dict[str, tuple[str, ...]]

    def specs(self, benchmark: str) -> list[ArchiveSpec]:
        """The archives ``benchmark`` needs, in catalogue order; unknown names list the known ones."""
        if benchmark not in self.benchmarks:
            raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(self.benchmarks)}")
        return [self.archives[name] for name in self.benchmarks[benchmark]]


@dataclass(frozen=True)
class ArchiveStatus:
    """Where one archive stands.

    state: "present" (valid marker, or manual data already in place), "downloaded" (installed by
    this call), "manual" (no Drive id: must be fetched by hand, ``message`` says how), "missing"
    (only from :func:`download_status`: not installed yet). ``path`` is the folder the archive
    extracts into; ``size``/``sha256`` are the archive's, from its marker (None when unknown).
    """

    name: str
    state: State
    path: Path
    size: int | None
    sha256: str | None
    message: str = ""


# --------------------------------------------------------------------------------------------------
# catalogue


def default_catalogue_path() -> Path:
    """``configs/downloads.yaml`` as shipped in the installed package (found via importlib)."""
    from dfb_ood.harness.config import configs_root

    return configs_root() / "downloads.yaml"


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Parse and check the catalogue, so a typo fails here with its location, not mid-download."""
    path = Path(path) if path is not None else default_catalogue_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"download catalogue not found: {path}") from None
    if not isinstance(data, dict) or not isinstance(data.get("archives"), dict):
        raise ValueError(f"{path}: expected a mapping with 'archives' and 'benchmarks'")
    archives = {name: _parse_spec(path, name, entry) for name, entry in data["archives"].items()}
    benchmarks_raw = data.get("benchmarks")
    if not isinstance(benchmarks_raw, dict):
        raise ValueError(f"{path}: 'benchmarks' must map each benchmark to a list of archive names")
    benchmarks: dict[str, tuple[str, ...]] = {}
    for bench, names in benchmarks_raw.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path}: benchmark {bench!r} must list archive names")
        unknown = [n for n in names if n not in archives]
        if unknown:
            raise ValueError(f"{path}: benchmark {bench!r} names unknown archive(s) {unknown}")
        benchmarks[str(bench)] = tuple(names)
    return Catalogue(archives=archives, benchmarks=benchmarks)


def _parse_spec(path: Path, name: Any, entry: Any) -> ArchiveSpec:
    """One archive entry, with each field checked (ids and hashes are easy to mangle by hand)."""
    where = f"{path}: archive {name!r}"
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{where}: names must be letters, digits, '_' and '.'")
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping")
    unknown = set(entry) - {"file_id", "subdir", "sha256", "size", "manual", "provides"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
    file_id = entry.get("file_id")
    if file_id is not None and (not isinstance(file_id, str) or not file_id.strip()):
        raise ValueError(f"{where}: file_id must be a non-empty string or null")
    subdir = entry.get("subdir")
    if not isinstance(subdir, str) or _unsafe_relative(subdir) is not None:
        raise ValueError(f"{where}: subdir must be a relative path inside the data root, got {subdir!r}")
    sha256 = entry.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256_RE.match(sha256.lower())):
        raise ValueError(f"{where}: sha256 must be 64 hex digits or null")
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ValueError(f"{where}: size must be a positive integer (bytes) or null")
    provides = entry.get("provides") or []
    if not isinstance(provides, list) or any(not isinstance(p, str) or _unsafe_relative(p) for p in provides):
        raise ValueError(f"{where}: provides must list relative paths inside the data root")
    manual = entry.get("manual")
    return ArchiveSpec(
        name=name,
        file_id=file_id.strip() if file_id else None,
        subdir=posixpath.normpath(subdir),
        sha256=sha256.lower() if sha256 else None,
        size=size,
        manual=str(manual) if manual else None,
        provides=tuple(posixpath.normpath(p) for p in provides),
    )


def _as_catalogue(catalogue: Catalogue | str | Path | None) -> Catalogue:
    """Accept a parsed catalogue, a YAML path, or None for the shipped one."""
    return catalogue if isinstance(catalogue, Catalogue) else load_catalogue(catalogue)


# --------------------------------------------------------------------------------------------------
# public API


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
    for spec in _as_catalogue(catalogue).specs(benchmark):
        status = _installed_status(spec, root)
        if status is None:
            if spec.file_id is None and not _hand_zip(root, spec).is_file():
                status = _manual_status(spec, root, benchmark)
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
        raise ValueError(f"retries must be >= 0, got {retries}")
    specs = _as_catalogue(catalogue).specs(benchmark)
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
    installed = _installed_status(spec, root)
    if installed is not None:
        say(f"{spec.name}: present")
        return installed
    _clear_stale(root, spec.name)
    old_marker = _read_marker(root, spec.name)
    expected_size, expected_sha, pinned_by = _expected(spec, old_marker, root)
    hand = _hand_zip(root, spec)
    if hand.is_file():
        say(f"{spec.name}: installing hand-placed {hand}")
        try:
            size, sha256 = _verify_archive(hand, expected_size, expected_sha)
        except DownloadError as exc:
            raise type(exc)(f"{spec.name}: hand-placed {hand} rejected: {exc}{pinned_by}") from exc
        _install(spec, root, hand, size, sha256, old_marker, force=force, source="hand-placed")
        message = f"installed from {hand} (verified; you may delete it)"
        return ArchiveStatus(spec.name, "downloaded", root / spec.subdir, size, sha256, message)
    if spec.file_id is None:
        return _manual_status(spec, root, benchmark)

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
            size, sha256 = _verify_archive(part, expected_size, expected_sha)
        except MissingDependencyError as exc:
            part.unlink(missing_ok=True)
            raise MissingDependencyError(f"{spec.name}: {exc}; {_by_hand(spec, root)}") from exc
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
        + f"; {_by_hand(spec, root)}"
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
            zf.extractall(tmp, members=_checked_members(zf))
        entries = sorted(p.name for p in tmp.iterdir() if p.name not in _IGNORED_TOP_LEVEL)
        if not entries:
            raise DownloadError(f"{spec.name}: the archive holds no files")
        relpaths = [posixpath.normpath(posixpath.join(spec.subdir, e)) for e in entries]
        journal = downloads / f"{spec.name}.moving.json"
        owned = set(_paths_of(old_marker)) | set(_paths_of(_read_json(journal)))
        conflicts = [r for r in relpaths if _exists(root / r) and r not in owned]
        if conflicts and not force:
            raise DestinationExistsError(
                f"{spec.name}: would replace existing {', '.join(str(root / r) for r in conflicts)}, "
                "which this archive did not create; move it away or rerun with --force"
            )
        (root / spec.subdir).mkdir(parents=True, exist_ok=True)
        write_json(journal, {"archive": spec.name, "paths": relpaths})
        # The old marker goes before anything moves: it must never describe a half-replaced tree.
        _marker_path(root, spec.name).unlink(missing_ok=True)
        for entry, rel in zip(entries, relpaths):
            _move_into_place(tmp / entry, root / rel, downloads, spec.name)
        _write_marker(
            _marker_path(root, spec.name),
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
    aside = _set_aside(dst, downloads, name) if _exists(dst) else None
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


# --------------------------------------------------------------------------------------------------
# verification


def _verify_archive(path: Path, expected_size: int | None, expected_sha: str | None) -> tuple[int, str]:
    """Size, sha256 and zip integrity of a file; raises on the first problem, else (size, sha256)."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ArchiveVerificationError(f"size is {size} bytes, expected {expected_size}")
    digest = _sha256(path)
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
    unsafe = [(n, reason) for n in names if (reason := _unsafe_relative(n)) is not None]
    if unsafe:
        shown = "; ".join(f"{n!r} ({reason})" for n, reason in unsafe[:5])
        raise UnsafeArchiveError(f"zip members would be written outside the extraction folder: {shown}")
    return size, digest


def _checked_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The members to extract; re-checks zip-slip right before extracting, never trusting a cache."""
    members = []
    for info in zf.infolist():
        reason = _unsafe_relative(info.filename)
        if reason is not None:
            raise UnsafeArchiveError(f"zip member {info.filename!r} refused ({reason})")
        if posixpath.normpath(info.filename).split("/")[0] not in _IGNORED_TOP_LEVEL:
            members.append(info)
    return members


def _unsafe_relative(name: str) -> str | None:
    """Why ``name`` is not a plain relative path that stays inside its folder, or None if it is."""
    if not name or "\x00" in name:
        return "empty or NUL in name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "'..' component"
    return None


def _sha256(path: Path) -> str:
    """Streamed sha256, so multi-GB archives are hashed in constant memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _expected(spec: ArchiveSpec, old_marker: dict | None, root: Path) -> tuple[int | None, str | None, str]:
    """Expected size/sha256: the catalogue's, else the earlier marker's (same Drive id), else unknown.

    The third element is a hint to append to a mismatch error when the values came from the marker.
    """
    if spec.sha256 is not None or spec.size is not None:
        return spec.size, spec.sha256, ""
    if old_marker and old_marker.get("file_id") == spec.file_id:
        size, sha = old_marker.get("size"), old_marker.get("sha256")
        if isinstance(size, int) and isinstance(sha, str) and _SHA256_RE.match(sha):
            hint = (
                f" (expected values recorded by the earlier download in {_marker_path(root, spec.name)};"
                " delete that file to accept different content)"
            )
            return size, sha, hint
    return None, None, ""


# --------------------------------------------------------------------------------------------------
# markers and status


def _installed_status(spec: ArchiveSpec, root: Path) -> ArchiveStatus | None:
    """The "present" status when the marker is valid (or manual data is in place), else None."""
    marker = _read_marker(root, spec.name)
    if marker is not None and _marker_valid(spec, marker, root):
        return ArchiveStatus(spec.name, "present", root / spec.subdir, marker["size"], marker["sha256"])
    if spec.file_id is None and spec.provides and all(_exists(root / p) for p in spec.provides):
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
    return all(isinstance(p, str) and _unsafe_relative(p) is None and _exists(root / p) for p in paths)


def _manual_status(spec: ArchiveSpec, root: Path, benchmark: str) -> ArchiveStatus:
    """Status of an archive without a Drive id, with instructions for fetching it by hand."""
    how = f"{spec.manual}; " if spec.manual else ""
    message = (
        f"{spec.name}: no Google Drive id is known, so it must be fetched by hand: {how}"
        f"save the zip as {_hand_zip(root, spec)} and rerun `harness data download {benchmark}` "
        f"(it is verified and extracted into {root / spec.subdir})"
    )
    return ArchiveStatus(spec.name, "manual", root / spec.subdir, None, None, message)


def _by_hand(spec: ArchiveSpec, root: Path) -> str:
    """Instructions to fetch an archive with a browser when automatic download is impossible."""
    return (
        f"or fetch it by hand from https://drive.google.com/uc?id={spec.file_id} , save it as "
        f"{_hand_zip(root, spec)} and rerun"
    )


def _hand_zip(root: Path, spec: ArchiveSpec) -> Path:
    return root / DOWNLOADS_DIR / f"{spec.name}.zip"


def _marker_path(root: Path, name: str) -> Path:
    return root / DOWNLOADS_DIR / f"{name}.json"


def _read_marker(root: Path, name: str) -> dict | None:
    return _read_json(_marker_path(root, name))


def _read_json(path: Path) -> dict | None:
    """A JSON object from disk, or None if absent or unreadable (a torn file counts as absent)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _paths_of(record: dict | None) -> Iterable[str]:
    """The safe relative paths a marker or journal lists (anything else is ignored)."""
    paths = record.get("paths") if record else None
    if not isinstance(paths, list):
        return []
    return [p for p in paths if isinstance(p, str) and _unsafe_relative(p) is None]


# --------------------------------------------------------------------------------------------------
# small helpers


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


def _exists(path: Path) -> bool:
    """True for anything at ``path``, including a dangling symlink (os.replace would clobber it)."""
    return path.exists() or path.is_symlink()


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
