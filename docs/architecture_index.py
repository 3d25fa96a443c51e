"""Write the module index of docs/architecture.md: every module, its size and its docstring's
first sentence, between the ``architecture:modules`` markers.

    .venv/bin/python docs/architecture_index.py           # rewrite the index in place
    .venv/bin/python docs/architecture_index.py --check   # exit 1 when the file is out of date

Why generated: the prose of the map (layers, data flow, stage contracts, where a new detector
goes) is written by hand, but the list of rooms must follow the code as it moves, and a
hand-kept list goes stale the first time a module is split. ``tests/test_structure.py`` runs the
check, so a module added without a docstring or a map update fails the tests.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "docs" / "architecture.md"
START, END = "<!-- architecture:modules:start -->", "<!-- architecture:modules:end -->"
FOLDERS = ("dfb_ood", "harness", "harness/data", "networks", "postprocessors")


def first_sentence(path: Path) -> str:
    """The docstring's first sentence on one line (up to the first full stop followed by a space
    or the end of its first paragraph); a module without a docstring is named as such."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    if not doc:
        return "(no docstring)"
    paragraph = " ".join(doc.split("\n\n")[0].split())
    cut = paragraph.find(". ")
    sentence = paragraph if cut < 0 else paragraph[: cut + 1]
    return sentence.replace("|", "\\|")


def index_text() -> str:
    """The markdown between the markers: one table per folder."""
    parts = [START, ""]
    for folder in FOLDERS:
        files = sorted((REPO / folder).glob("*.py"))
        parts += [f"**`{folder}/`** ({len(files)} modules)", ""]
        parts += ["| module | lines | what it is for |", "|---|---:|---|"]
        for path in files:
            lines = len(path.read_text(encoding="utf-8").splitlines())
            parts.append(f"| `{folder}/{path.name}` | {lines} | {first_sentence(path)} |")
        parts.append("")
    parts.append(END)
    return "\n".join(parts)


def rendered(current: str) -> str:
    """``current`` with its index replaced by the one the code gives today."""
    if START not in current or END not in current:
        raise SystemExit(f"{MAP}: the markers {START} and {END} are missing")
    head, rest = current.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + index_text() + tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the index is out of date")
    args = parser.parse_args()
    current = MAP.read_text(encoding="utf-8")
    wanted = rendered(current)
    if args.check:
        if wanted != current:
            print(f"{MAP} is out of date: run python docs/architecture_index.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        handle, tmp = tempfile.mkstemp(dir=MAP.parent, prefix=".architecture.", suffix=".md")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(wanted)
        os.replace(tmp, MAP)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
