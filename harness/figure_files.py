"""Saving a figure: the format its file name asks for, reproducible bytes, one atomic rename.

Why apart from the drawing: every figure of the project (report, ``harness figure``, the docs) is
saved the same way, so a format is checked once (:func:`figure_format_of`, before any work), a
vector file carries no creation date and fixed SVG ids (the same figure gives the same bytes), and
a reader never sees half a file. The Agg backend is chosen here: no display is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import matplotlib

from dfb_ood.errors import InputError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dfb_ood.harness.io import atomic_path  # noqa: E402

#: File formats a figure can be saved in (the ``--figure-format`` choices); PNG is the default
#: everywhere because report.md and the README embed it and every viewer shows it.
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf", "svg")
FigureFormat = Literal["png", "pdf", "svg"]
# No creation date in vector files, and SVG element ids from a fixed salt instead of a random one:
# the same figure gives the same bytes (and an empty git diff).
_FORMAT_METADATA: dict[str, dict[str, None]] = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}
_SVG_HASH_SALT = "dfb-ood"


def figure_format_of(path: str | Path) -> str:
    """The format a figure path asks for (its ending), or a ValueError naming the allowed ones."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise InputError(
            f"cannot save a figure as {Path(path).name!r}: the name must end in "
            f"{', '.join('.' + f for f in FIGURE_FORMATS)}"
        )
    return suffix


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> plt.Figure:
    """Save a figure atomically in the format its path ends with, release it, and return it.

    ``bbox_inches="tight"`` grows the saved area to whatever lies outside the axes (the shared
    legend, colour bars, the footnote), so nothing outside the panels is cut off. ``dpi`` sets the
    PNG's pixels and the resolution of images embedded in a PDF or SVG.
    """
    fmt = figure_format_of(path)
    with atomic_path(path, suffix="." + fmt) as tmp:
        with matplotlib.rc_context({"svg.hashsalt": _SVG_HASH_SALT}):
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt, metadata=_FORMAT_METADATA.get(fmt))
    plt.close(fig)
    return fig


__all__ = [
    "FIGURE_FORMATS",
    "FigureFormat",
    "figure_format_of",
    "save_figure",
]
