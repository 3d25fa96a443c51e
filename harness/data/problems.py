"""Bad input is reported, never silently dropped: one error naming the file and line, or a warning.

With ``skip_bad`` (the CLI's ``--skip-bad``) a caller asks to go on without the offending entries;
it then gets a :class:`DataWarning` that names each one, so a shorter set is always announced.
Text files a user writes (image lists, benchmark YAML) are read by :func:`decode_text`, which
accepts what Windows editors and shells save: a UTF-8 byte-order mark, UTF-16 with its mark, and
CRLF line ends.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from dfb_ood.errors import InputError

FIRST_FEW = 5  # examples in a report (``harness data check``)
NAMED_IN_WARNING = 100  # entries a skip warning names one by one; all of them are on ``.problems``
SKIP_BAD_HINT = "rerun with --skip-bad to leave the bad entries out and go on (a warning names each one)"


@dataclass(frozen=True)
class Problem:
    """One bad entry: where it is (``list.txt:12`` or a file path) and what is wrong.

    ``line`` is the list line of a bad list line (0 when the entry is not one).
    """

    origin: str
    message: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


class DataWarning(UserWarning):
    """Entries of a data set were skipped (``skip_bad``); the message names them.

    ``problems`` holds every skipped entry, for callers that record them (the message names the
    first :data:`NAMED_IN_WARNING`).
    """

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class OverlapWarning(UserWarning):
    """An ID set and an OOD set of a benchmark list the same files (the message names both and the count).

    A warning, not an error: published benchmarks have such overlaps, and their numbers are
    reproduced with them; ``harness data check`` lists the overlap as a problem.
    """


def raise_or_warn(
    problems: list[Problem],
    *,
    what: str,
    set_label: str,
    skip_bad: bool,
    error: type[Exception] = InputError,
    total: int | None = None,
    hint: str = "",
) -> None:
    """Raise ``error`` for the first problem (with the total), or warn naming each when ``skip_bad``.

    ``total`` is the number of entries the problems come from: when every one of them is bad there
    is nothing to skip to, and the error says so (and gives ``hint``) instead of offering
    ``--skip-bad``.
    """
    if not problems:
        return
    count = len(problems)
    more = f" ({count - 1} more {what} in this set)" if count > 1 else ""
    advice = f"; {hint}" if hint else ""
    if total is not None and count >= total:
        every = f"all {total} entries of {set_label} are {what}"
        if total == 1:
            every = f"it is the only entry of {set_label}"
        raise error(f"{problems[0]}; {every}, so there is nothing to go on with{advice}")
    if not skip_bad:
        raise error(f"{problems[0]}{more}; {SKIP_BAD_HINT}")
    named = "".join(f"\n  {p}" for p in problems[:NAMED_IN_WARNING])
    if count > NAMED_IN_WARNING:
        named += f"\n  ... and {count - NAMED_IN_WARNING} more"
    message = f"{set_label}: skipped {count} {what} (--skip-bad):{named}"
    warnings.warn(DataWarning(message, tuple(problems)), stacklevel=3)


def describe_path(path: str) -> str:
    """``path``, plus its escaped form when it holds characters a terminal does not show."""
    if path.isprintable():
        return path
    return f"{path} (the path holds invisible characters: {ascii(path)})"
