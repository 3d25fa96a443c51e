"""The download catalogue (``configs/downloads.yaml``) and the types every download step shares.

The catalogue says where each OpenOOD archive comes from (its Google Drive id), where it goes under
the data root and what it must hash to; it is checked whole when read, so a typo fails with its
location, not mid-download. The errors and the per-archive status live here too, below the
fetching (:mod:`harness.data.download`), the checks of an archive (:mod:`harness.data.archive_check`)
and the markers (:mod:`harness.data.download_markers`), which all raise or return them.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dfb_ood.errors import InputError, MissingInputError, StateError
from dfb_ood.harness.config import configs_root
from dfb_ood.harness.yaml_reader import read_yaml

State = Literal["present", "downloaded", "manual", "missing"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(StateError):
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
            raise InputError(f"unknown benchmark {benchmark!r}; known: {', '.join(self.benchmarks)}")
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


def default_catalogue_path() -> Path:
    """``configs/downloads.yaml`` as shipped in the installed package (found via importlib)."""
    return configs_root() / "downloads.yaml"


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Parse and check the catalogue, so a typo fails here with its location, not mid-download."""
    path = Path(path) if path is not None else default_catalogue_path()
    try:
        data = read_yaml(path, "the download catalogue").data
    except FileNotFoundError:
        raise MissingInputError(f"download catalogue not found: {path}") from None
    if not isinstance(data, dict) or not isinstance(data.get("archives"), dict):
        raise InputError(f"{path}: expected a mapping with 'archives' and 'benchmarks'")
    archives = {name: _parse_spec(path, name, entry) for name, entry in data["archives"].items()}
    benchmarks_raw = data.get("benchmarks")
    if not isinstance(benchmarks_raw, dict):
        raise InputError(f"{path}: 'benchmarks' must map each benchmark to a list of archive names")
    benchmarks: dict[str, tuple[str, ...]] = {}
    for bench, names in benchmarks_raw.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{path}: benchmark {bench!r} must list archive names")
        unknown = [n for n in names if n not in archives]
        if unknown:
            raise InputError(f"{path}: benchmark {bench!r} names unknown archive(s) {unknown}")
        benchmarks[str(bench)] = tuple(names)
    return Catalogue(archives=archives, benchmarks=benchmarks)


def _parse_spec(path: Path, name: Any, entry: Any) -> ArchiveSpec:
    """One archive entry, with each field checked (ids and hashes are easy to mangle by hand)."""
    where = f"{path}: archive {name!r}"
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(f"{where}: names must be letters, digits, '_' and '.'")
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a mapping")
    unknown = set(entry) - {"file_id", "subdir", "sha256", "size", "manual", "provides"}
    if unknown:
        raise InputError(f"{where}: unknown key(s) {sorted(unknown)}")
    file_id = entry.get("file_id")
    if file_id is not None and (not isinstance(file_id, str) or not file_id.strip()):
        raise InputError(f"{where}: file_id must be a non-empty string or null")
    subdir = entry.get("subdir")
    if not isinstance(subdir, str) or unsafe_relative(subdir) is not None:
        raise InputError(f"{where}: subdir must be a relative path inside the data root, got {subdir!r}")
    sha256 = entry.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not SHA256_RE.match(sha256.lower())):
        raise InputError(f"{where}: sha256 must be 64 hex digits or null")
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise InputError(f"{where}: size must be a positive integer (bytes) or null")
    provides = entry.get("provides") or []
    if not isinstance(provides, list) or any(not isinstance(p, str) or unsafe_relative(p) for p in provides):
        raise InputError(f"{where}: provides must list relative paths inside the data root")
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


def as_catalogue(catalogue: Catalogue | str | Path | None) -> Catalogue:
    """Accept a parsed catalogue, a YAML path, or None for the shipped one."""
    return catalogue if isinstance(catalogue, Catalogue) else load_catalogue(catalogue)


def unsafe_relative(name: str) -> str | None:
    """Why ``name`` is not a plain relative path that stays inside its folder, or None if it is."""
    if not name or "\x00" in name:
        return "empty or NUL in name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "'..' component"
    return None
