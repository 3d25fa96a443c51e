"""The kinds of failure a user can act on, and the exit code of each.

The CLI prints every one of them as one line on stderr and exits with the kind's code, so that a
script driving ``harness`` can tell a typo from a missing data set, a busy run folder or a full
disk without parsing messages. The exception classes also derive from the built-in type a caller
would expect (``ValueError``, ``FileNotFoundError``, ``OSError``), so library callers may catch
either.

==== =========================================================================================
code meaning
==== =========================================================================================
0    success
1    unexpected failure (a bug, or an error of a library that is not one of the kinds below)
2    a bad option, setting or config value (unknown name, out-of-range number, bad YAML)
3    missing input: a file, list, image, data set or checkpoint that is not there
4    the run folder refused the work: in use, made with other settings, not a harness run,
     or an artifact in it is damaged and cannot be recomputed
5    the system: out of disk space, no permission, a device that is not available
130  interrupted (Ctrl-C), the shell's convention for SIGINT
==== =========================================================================================

Click's own usage errors (an unknown option, a value that is not one of an option's choices, a
missing argument) exit with 2 as well: they are bad options too. ``harness --help`` prints this
table from :data:`EXIT_CODES`.
"""

from __future__ import annotations

import errno

from dfb_ood.errors import DfbOodError, InputError, MissingInputError, StateError, UnknownNameError

__all__ = [
    "DfbOodError",
    "InputError",
    "MissingInputError",
    "RunFolderError",
    "RunLockedError",
    "StateError",
    "SystemResourceError",
    "UnknownNameError",
    "exit_code_for",
]

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_INPUT = 3
EXIT_RUN_FOLDER = 4
EXIT_SYSTEM = 5
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_UNEXPECTED: "unexpected failure (a bug or an unclassified library error)",
    EXIT_BAD_INPUT: "bad option, setting or config value",
    EXIT_MISSING_INPUT: "missing input file, list, image, data set or checkpoint",
    EXIT_RUN_FOLDER: "run folder refused (in use, other settings, not a harness run, damaged artifact)",
    EXIT_SYSTEM: "system: disk full, no permission, device not available",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class RunFolderError(StateError):
    """The run folder cannot be used as asked: another process holds it, it was made with other
    settings, it holds files that are not a harness run's, or one of its artifacts is damaged."""


class RunLockedError(RunFolderError):
    """Another process holds the run folder."""


class SystemResourceError(DfbOodError, OSError):
    """The machine cannot do what was asked: disk full, no permission, no such device."""


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of an exception (see the table in this module's docstring)."""
    if isinstance(error, RunFolderError):
        return EXIT_RUN_FOLDER
    if isinstance(error, FileNotFoundError):
        return EXIT_MISSING_INPUT
    if isinstance(error, (ValueError, KeyError)):
        return EXIT_BAD_INPUT
    if isinstance(error, OSError):
        if error.errno == errno.ENOENT:
            return EXIT_MISSING_INPUT
        return EXIT_SYSTEM
    return EXIT_UNEXPECTED
