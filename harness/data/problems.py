"""Bad input is reported, never silently dropped: one error naming the file and line, or a warning.

With ``skip_bad`` a caller asks to go on without the offending entries; it then gets a
:class:`DataWarning` with their count and the first few, so a shorter set is always announced.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

FIRST_FEW = 5


class DataWarning(UserWarning):
    """Entries of a data set were skipped (``skip_bad``); the message says how many and which."""


@dataclass(frozen=True)
class Problem:
    """One bad entry: where it is (``list.txt:12`` or a file path) and what is wrong."""

    origin: str
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


def raise_or_warn(
    problems: list[Problem],
    *,
    what: str,
    set_label: str,
    skip_bad: bool,
    error: type[Exception] = ValueError,
) -> None:
    """Raise ``error`` for the first problem (with the total), or warn when ``skip_bad``."""
    if not problems:
        return
    more = f" ({len(problems) - 1} more {what} in this set)" if len(problems) > 1 else ""
    if not skip_bad:
        raise error(f"{problems[0]}{more}; pass skip_bad=True / --skip-bad to skip bad entries")
    first = "; ".join(str(p) for p in problems[:FIRST_FEW])
    warnings.warn(DataWarning(f"{set_label}: skipped {len(problems)} {what}; first: {first}"), stacklevel=3)
