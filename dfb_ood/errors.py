"""The project's own exception kinds: what the ``harness`` command reports as a user's mistake.

Why a kind of our own: the CLI turns a user's mistake into one line and an exit code, and a bug
into a traceback. Catching every ``ValueError`` or ``RuntimeError`` for that would print a
programming error inside numpy or torch as a one-line "user error" and hide it. So every message
written for a user is raised as one of these kinds, and the CLI catches these (and ``OSError``,
which the system raises for a full disk or a missing permission) and nothing else.

Each kind also derives from the built-in type a library caller expects (``ValueError``,
``FileNotFoundError``, ``KeyError``, ``RuntimeError``), so ``except ValueError`` keeps working.
This module sits at the root so that ``dfb_ood.networks`` and ``dfb_ood.postprocessors``, which
never import the harness, raise the same kinds. The exit code of each kind is in
``dfb_ood.harness.errors``.
"""

from __future__ import annotations


class DfbOodError(Exception):
    """Base of every error the project raises for a user to act on."""


class InputError(DfbOodError, ValueError):
    """A bad option, setting, name or config value: the message names it and says how to fix it."""


class UnknownNameError(InputError, KeyError):
    """A name that is not one of the known ones (a set, a detector, a network)."""

    def __str__(self) -> str:  # KeyError quotes its message; a user should read it as written
        return str(self.args[0]) if self.args else ""


class MissingInputError(DfbOodError, FileNotFoundError):
    """A file, list, image, data set or checkpoint that is not there."""


class StateError(DfbOodError, RuntimeError):
    """Something the user asked for cannot be done in the present state (not downloaded, not
    fitted from the CLI's point of view, a report that disagrees with its run)."""
