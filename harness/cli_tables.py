"""Rich tables on stdout that stay whole in a pipe or a log file: no value cut, none wrapped.

On a terminal a table is fitted to the window, as rich does. When stdout is a pipe or a file
(``harness leaderboard runs/x | grep knn``, ``harness verify run > log``), rich would lay the table
out for 80 columns and cut or wrap the values that do not fit ("near AUR...", a file name split over
two lines), so ``grep`` misses them. There the table is printed at the width its content needs
instead, every cell on one line.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

#: Wide enough for any table we print; only used to measure a table's natural width.
_MEASURE_WIDTH = 100_000


def natural_width(table: Table) -> int:
    """The columns a table needs to hold every cell (and its title) on one line."""
    measurer = Console(width=_MEASURE_WIDTH, file=io.StringIO(), color_system=None)
    width = measurer.measure(table).maximum
    title = len(str(table.title)) if table.title is not None else 0
    return max(width, title)


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` on ``console``: fitted to a terminal, at its natural width anywhere else.

    Args:
        console: Where to print (a terminal, a pipe, a file).
        table: The table.
    """
    if console.is_terminal:
        console.print(table)
        return
    for column in table.columns:
        column.no_wrap = True
        column.overflow = "ignore"
    # a console of its own: Console.print(width=...) never goes beyond the console's (80) width
    wide = Console(file=console.file, width=max(natural_width(table), 1), color_system=None, highlight=False)
    wide.print(table, crop=False)


__all__ = ["natural_width", "print_table"]
