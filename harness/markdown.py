"""Markdown for names read from files: text made safe, and the pipe tables both writers share.

``report.md`` and ``harness export --format markdown`` both put names a user wrote into tables
and paragraphs. Written raw, ``<script>`` or ``<img onerror=...>`` in a benchmark name would be
HTML to a Markdown viewer, a ``|`` would split a table cell, and a newline would split a table
row. One function escapes them all, so both writers show a name as the literal text it is; one
function lays out their tables, so they are written the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# CommonMark lets a backslash escape any ASCII punctuation; these are the ones that start markup
# (HTML tags, code spans, emphasis, links and images, headings, table cells).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_|<>\[\]#])")
# Control characters (a newline above all) and the Unicode line/paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _visible(match: re.Match[str]) -> str:
    char = match.group(0)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return named.get(char, f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def markdown_escape(text: object) -> str:
    """``text`` shown literally by GitHub / CommonMark Markdown, also inside a table cell.

    Markup characters get a backslash; control characters (newlines included) are written as
    their escapes (``\\n``, ``\\x1b``), so a table row stays one line and nothing renders as HTML.
    """
    shown = _CONTROL.sub(_visible, str(text))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", shown)


def markdown_table(header: Sequence[str], aligns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub pipe table: the header, the alignment row (``---``, ``---:``, ``:--``...), the rows.

    Cells are written as given, so the caller escapes text with :func:`markdown_escape` and may add
    markup of its own (``**best**``). No line break follows the last row.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


__all__ = ["markdown_escape", "markdown_table"]
