"""The record in an output folder of the files harness wrote there: what it may replace or delete.

Why: harness writes into folders the user names (a report's ``--out``, the leaderboard page's
``--html``, a folder export), and must never replace a file of the user's. Each writer therefore
leaves a small JSON file beside what it wrote, naming itself (``writer``) and the files; a later
write trusts only a record of its own writer. This module is that record for every writer: where
it is, how it is read (strictly, with the reason a record is not one, or leniently, where a bad
record simply means "nothing is ours") and how it is written. What counts as "ours" in a folder
(a listed name; a listed name whose checksum still matches) stays each writer's own rule:
:mod:`harness.export_target` for exports and reports, :mod:`harness.page_folder` for the page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfb_ood.harness.io import read_json, write_text

__all__ = ["NotARecordError", "WrittenRecord"]


class NotARecordError(ValueError):
    """The folder's record file exists but is not this writer's record (the message says why)."""


@dataclass(frozen=True)
class WrittenRecord:
    """One writer's record: its file name in the folder, the writer it names, and how files are listed.

    ``files`` is the type of the record's ``files`` entry: ``list`` (names) or ``dict`` (name ->
    sha256 of the bytes written). ``fields`` are written between ``writer`` and ``files``;
    ``sort_keys`` writes the keys sorted instead (as :func:`harness.io.write_json` does).
    """

    marker: str
    writer: str
    files: type[list] | type[dict]
    fields: Mapping[str, object] = field(default_factory=dict)
    sort_keys: bool = False

    def path(self, folder: Path) -> Path:
        """Where the record of ``folder`` is."""
        return folder / self.marker

    def read(self, folder: Path) -> list[Any] | dict[str, Any] | None:
        """The recorded files; None when there is no record; :class:`NotARecordError` or the read's
        OSError / ValueError when the record file is not this writer's record (a link included)."""
        path = self.path(folder)
        if not path.exists() and not path.is_symlink():
            return None
        if path.is_symlink() or not path.is_file():
            raise NotARecordError("not a regular file")
        record = read_json(path)
        if not isinstance(record, dict) or record.get("writer") != self.writer:
            raise NotARecordError(f"no 'writer: {self.writer}'")
        files = record.get("files")
        if not isinstance(files, self.files):
            raise NotARecordError("no list of files" if self.files is list else "no table of files")
        return files

    def read_or_none(self, folder: Path) -> list[Any] | dict[str, Any] | None:
        """The recorded files, or None when there is no record of this writer (a missing, linked,
        unreadable or foreign record alike: the files beside it are then the user's)."""
        try:
            return self.read(folder)
        except (OSError, ValueError):
            return None

    def write(self, folder: Path, files: list[str] | Mapping[str, str]) -> None:
        """Write the record of ``folder`` (atomically): this writer and ``files``."""
        record = {"writer": self.writer, **self.fields, "files": files}
        write_text(self.path(folder), json.dumps(record, indent=2, sort_keys=self.sort_keys) + "\n")
