"""OpenOOD image lists and plain image folders, read into a table of files before any decoding.

OpenOOD list format (UTF-8, with or without a byte-order mark, or UTF-16 with one; any line ends):
one image per line, ``<relative path> <label>``, the path relative to an
image folder that the benchmark names (``images_classic/`` or ``images_largescale/`` under the
data root for OpenOOD's own lists). The line is split at the first run of whitespace; the rest is
either an integer label, possibly followed by extra fields that are ignored, or a Python dict
literal with a ``label`` key (OpenOOD's "extras" form). OOD lists use label -1.

Missing files are found here, when a set is built (one directory listing per folder, a stat only
for names the listing lacks), not on first access in the middle of an evaluation.
"""

from __future__ import annotations

import array
import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness.data.images import IMAGE_EXTENSIONS, list_images
from dfb_ood.harness.data.problems import Problem
from dfb_ood.harness.io import decode_text, read_regular


@dataclass
class FileTable:
    """The files of one set: absolute paths, labels, and where each came from."""

    paths: list[str]
    labels: np.ndarray
    lines: np.ndarray | None = None
    list_path: Path | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def origin(self, index: int) -> str:
        """``list.txt:<line>`` for list entries, else the file path itself."""
        if self.list_path is not None and self.lines is not None:
            return f"{self.list_path}:{int(self.lines[index])}"
        return self.paths[index]

    def select(self, indices: list[int] | np.ndarray) -> FileTable:
        """A sub-table, in the given order."""
        indices = np.asarray(indices, dtype=np.int64)
        return FileTable(
            paths=[self.paths[i] for i in indices],
            labels=self.labels[indices],
            lines=None if self.lines is None else self.lines[indices],
            list_path=self.list_path,
        )


def parse_label(rest: str) -> int:
    """The label of a list line from the text after its path; ValueError when there is none."""
    rest = rest.strip()
    if not rest:
        raise InputError("no label (expected '<path> <label>')")
    if rest.startswith("{"):
        try:
            extras = ast.literal_eval(rest)
        except (ValueError, SyntaxError) as error:
            raise InputError(f"cannot read the extras {rest!r}: {error}") from None
        if not isinstance(extras, dict) or "label" not in extras:
            raise InputError(f"extras {rest!r} have no 'label'")
        label = extras["label"]
        if isinstance(label, bool) or not isinstance(label, int):
            raise InputError(f"label {label!r} is not an integer")
        return label
    token = rest.split(None, 1)[0]
    try:
        return int(token)
    except ValueError:
        raise InputError(f"label {token!r} is not an integer") from None


def read_imglist(
    list_path: Path, image_base: Path, *, num_classes: int | None, source: str = ""
) -> tuple[FileTable, list[Problem]]:
    """Parse one list file; bad lines come back as problems (the caller raises or skips).

    ``num_classes`` is the ID label range to enforce; None for OOD lists, whose labels become -1.
    A missing or empty list file raises at once: there is nothing to skip to.
    """
    where = f" (set defined at {source})" if source else ""
    try:
        data = read_regular(list_path, "an image list")  # a FIFO would block for ever
    except FileNotFoundError:
        raise MissingInputError(f"image list not found: {list_path}{where}") from None
    except IsADirectoryError:
        raise InputError(f"image list {list_path} is a directory, not a list file{where}") from None
    text = decode_text(data, list_path, where)
    del data
    base = str(image_base)
    paths: list[str] = []
    # machine integers, not lists of Python ints, and the text's lines one at a time, not split
    # into a list: at ImageNet scale (1.28M lines) those transients were most of what reading a
    # list cost, and a streamed set's memory is otherwise flat in its size (benchmarks/bench_memory.py)
    labels = array.array("q")
    lines = array.array("i")
    problems: list[Problem] = []
    for number, raw in enumerate(_lines_of(text), start=1):
        line = raw.strip().lstrip("\ufeff").strip()  # marks mid-file: Windows lists joined with cat
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        origin = f"{list_path}:{number}"
        try:
            label = parse_label(parts[1] if len(parts) > 1 else "")
        except ValueError as error:
            problems.append(Problem(origin, str(error), number))
            continue
        if num_classes is not None and not 0 <= label < num_classes:
            message = f"label {label} outside 0..{num_classes - 1} in an ID list"
            problems.append(Problem(origin, message, number))
            continue
        relative = parts[0]
        paths.append(relative if os.path.isabs(relative) else os.path.join(base, relative))
        labels.append(-1 if num_classes is None else label)
        lines.append(number)
    if not paths and not problems:
        raise InputError(f"{list_path}: the image list is empty{where}")
    table = FileTable(paths, np.array(labels, dtype=np.int64), np.array(lines, dtype=np.int32), list_path)
    return table, problems


def _lines_of(text: str) -> Iterator[str]:
    """The lines of ``text`` split at ``\\n`` (as ``text.split("\\n")``), one at a time."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


def find_missing(table: FileTable) -> list[int]:
    """Indices of entries whose file does not exist (fast: one listing per directory)."""
    listings: dict[str, set[str] | None] = {}
    missing = []
    for index, path in enumerate(table.paths):
        directory, name = os.path.split(path)
        names = listings.get(directory, ...)
        if names is ...:
            try:
                names = set(os.listdir(directory))
            except OSError:
                names = None
            listings[directory] = names
        if names is not None and name in names:
            continue
        # Not in the listing (or no listing): confirm with a stat, which also follows
        # case-insensitive file systems and odd mounts.
        if not os.path.isfile(path):
            missing.append(index)
    return missing


def read_folder(
    folder: Path,
    *,
    num_classes: int | None,
    class_names: tuple[str, ...] = (),
    classes: list[str] | None = None,
    source: str = "",
) -> FileTable:
    """Images of a plain folder: one subfolder per class for ID sets, any layout for OOD sets.

    ID labels: ``classes`` (subfolder names in label order) when given; else the benchmark's
    class names when every one has a subfolder (and no two are the same, as ImageNet's two
    "crane"s); else the sorted subfolder names.
    """
    where = f" (set defined at {source})" if source else ""
    if not folder.is_dir():
        raise MissingInputError(f"image folder not found: {folder}{where}")
    if num_classes is None:
        files = list_images(folder)
        if not files:
            raise InputError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}){where}")
        return FileTable([str(p) for p in files], np.full(len(files), -1, dtype=np.int64))
    subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)]
    if loose:
        raise InputError(
            f"{folder}: an ID folder set needs one subfolder per class, but images lie directly in it "
            f"(e.g. {loose[0]}){where}"
        )
    if classes is not None:
        order = list(classes)
    elif class_names and len(set(class_names)) == len(class_names) and set(class_names) <= set(subdirs):
        order = list(class_names)
    else:
        order = subdirs
    if len(order) != num_classes:
        raise InputError(
            f"{folder}: found {len(order)} class subfolders ({', '.join(order[:5])}...), "
            f"expected num_classes={num_classes}{where}"
        )
    extra = sorted(set(subdirs) - set(order))
    absent = [name for name in order if name not in subdirs]
    if extra or absent:
        detail = (
            f"subfolders not in the class list: {extra}" if extra else f"no subfolder for classes {absent}"
        )
        raise InputError(f"{folder}: {detail}{where}")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(order):
        files = list_images(folder / name)
        if not files:
            raise InputError(f"{folder / name}: class folder holds no images{where}")
        paths.extend(str(p) for p in files)
        labels.extend([label] * len(files))
    return FileTable(paths, np.asarray(labels, dtype=np.int64))


def canonical_paths(paths: list[str]) -> list[str]:
    """Each path with its folder resolved (links, ``..``): one ``realpath`` per folder, not per file.

    Cheap enough for ImageNet-size lists (a dictionary look-up per entry); a file reached through
    a link of its own is not followed, which only a hand-made link farm would need.
    """
    folders: dict[str, str] = {}
    out = []
    for path in paths:
        folder, name = os.path.split(path)
        real = folders.get(folder)
        if real is None:
            real = folders[folder] = os.path.realpath(folder)
        out.append(os.path.join(real, name))
    return out


@dataclass(frozen=True)
class Overlap:
    """Files that one ID set and one OOD set of a benchmark both list."""

    id_set: str
    id_where: str
    ood_set: str
    ood_where: str
    count: int
    total: int
    example: str

    def __str__(self) -> str:
        return (
            f"{self.count} of the {self.total} images of OOD set {self.ood_set!r} ({self.ood_where}) are "
            f"also in ID set {self.id_set!r} ({self.id_where}), e.g. {self.example}: each is scored as ID "
            "and as OOD, which pulls AUROC towards 0.5; remove them from one of the two"
        )


def _example(table: FileTable, index: int) -> str:
    origin = table.origin(index)
    return origin if origin == table.paths[index] else f"{table.paths[index]} ({origin})"


def _where(table: FileTable, source: str) -> str:
    listed = f"{table.list_path}, " if table.list_path is not None else ""
    return f"{listed}defined at {source}" if source else listed.rstrip(", ")


def find_overlaps(
    id_tables: list[tuple[str, str, FileTable]], ood_tables: list[tuple[str, str, FileTable]]
) -> list[Overlap]:
    """Every (ID set, OOD set) pair that shares files: ``(name, source, table)`` triples in, by path.

    Paths only (no decoding, no hashing), so a check costs a set look-up per entry; the same
    picture stored twice under two names is not found.
    """
    out = []
    id_keys = [(name, source, table, set(canonical_paths(table.paths))) for name, source, table in id_tables]
    for ood_name, ood_source, ood_table in ood_tables:
        keys = canonical_paths(ood_table.paths)
        for id_name, id_source, id_table, known in id_keys:
            shared = [i for i, key in enumerate(keys) if key in known]
            if shared:
                out.append(
                    Overlap(
                        id_name,
                        _where(id_table, id_source),
                        ood_name,
                        _where(ood_table, ood_source),
                        len(shared),
                        len(ood_table),
                        _example(ood_table, shared[0]),
                    )
                )
    return out
