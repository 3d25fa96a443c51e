"""Names that become file and folder names: one rule, checked where a name enters.

A benchmark's ``name``, its OOD set names, a network name and the like end up as one component of
a path: ``runs/<benchmark>/<network>/seed<k>/``, ``outputs/<network>/<set>/``. A name such as
``../../x`` or ``/abs/path`` would put those files outside the run folder (or replace a file of
the user's), and a newline or a 300-character name breaks the file system or the messages. So a
name read from a YAML file, a list or a command line is checked here, where it is read, and
refused with a message naming the file, the line and the fix (:func:`check_file_name`); names
that only label output (a results row's benchmark, a figure folder) are mapped to a safe file
name instead (:func:`safe_file_name`). :func:`join_inside` is the last guard where such a name is
joined to its folder: whatever got through, the joined path stays inside that folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from dfb_ood.errors import InputError

#: The longest name accepted. Well under NAME_MAX (255 bytes): the atomic writes' temporary files
#: add ``.`` + 8 random characters + ``.tmp`` + a suffix, and a class-subset benchmark adds
#: ``_c<count>_s<seed>`` to its name.
MAX_NAME = 100

#: One plain component: ASCII letters, digits and ``_ - . +``, not starting with a dot.
_PLAIN = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")
#: Names Windows keeps for devices (``NUL.npz`` opens the null device there).
_WINDOWS_DEVICES = re.compile(r"(?i)(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?")

RULE = "letters, digits and _ - . + only (ASCII), not starting with a dot, at most {max} characters"


def _shown(name: str) -> str:
    """The name as a message shows it: escaped (a newline stays on the line), a long one cut short."""
    text = repr(name)
    return text if len(text) <= 120 else f"{text[:40]}...' ({len(name)} characters)"


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be one component of a path, or None when it can."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not text"
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it has {len(name)} characters, more than {MAX_NAME}"
    if "/" in name or "\\" in name or (os.sep in name) or (os.altsep and os.altsep in name):
        return "it holds a path separator (a name is one file name, never a path)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character (a newline, a tab, NUL, ...)"
    if name.startswith("."):
        return "it starts with a dot (a hidden file, or the folder above with '..')"
    if ".." in name:
        return "it holds '..'"
    if name.endswith("."):
        return "it ends with a dot (Windows drops it)"
    if _WINDOWS_DEVICES.fullmatch(name):
        return "it is a device name on Windows"
    if not _PLAIN.fullmatch(name):
        bad = sorted(set(_UNSAFE.findall(name)))
        return "it holds " + ", ".join(repr(c) for c in bad[:5])
    return None


def safe_file_name(text: object, fallback: str = "_") -> str:
    """``text`` mapped to a name :func:`check_file_name` accepts: each other character becomes ``-``.

    For names that only label output (a results row's benchmark in an export's folder, a figure
    folder of the leaderboard page). A name that had to be cut short keeps a hash of the whole,
    so two long names stay two files.
    """
    raw = str(text)
    name = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", _UNSAFE.sub("-", raw))).strip(".-")
    if _WINDOWS_DEVICES.fullmatch(name):
        name = "_" + name
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = name[: MAX_NAME - 9].rstrip(".") + "-" + digest
    return name if name and name_problem(name) is None else fallback


def check_file_name(name: object, what: str, where: str = "") -> str:
    """``name`` when it can be one file or folder name; else a ValueError that says why and how.

    ``what`` says what the name is (``"OOD set name"``), ``where`` where it was read (a YAML's
    ``file:line``, an option such as ``--network``); the message leads with ``where``.
    """
    problem = name_problem(name)
    if problem is None:
        assert isinstance(name, str)
        return name
    suggestion = safe_file_name(str(name).strip("/\\. ").replace("/", "_").replace("\\", "_"), "my_name")
    lead = f"{where}: " if where else ""
    raise InputError(
        f"{lead}{what} {_shown(str(name))} cannot be used: {problem}. It becomes a file or folder name "
        f"of the run, so use {RULE.format(max=MAX_NAME)}, e.g. {suggestion!r}"
    )


def join_inside(folder: str | os.PathLike[str], *names: str, what: str = "name") -> Path:
    """``folder / names...``, each name one plain component; the last guard before a name is joined.

    A name that is not (a path, ``..``, a separator) raises ValueError; the result is checked to
    stay inside ``folder`` as well, whatever the names.
    """
    folder = Path(folder)
    for name in names:
        check_file_name(name, what, str(folder))
    path = folder.joinpath(*names)
    base = os.path.normpath(os.path.abspath(folder))
    joined = os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([base, joined]) != base or joined == base and names:
        raise InputError(f"{path} is not inside {folder}: refusing to write there")
    return path


__all__ = ["MAX_NAME", "check_file_name", "join_inside", "name_problem", "safe_file_name"]
