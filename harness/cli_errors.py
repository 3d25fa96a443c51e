"""One-line errors for every ``harness`` command: stderr, the kind's exit code, ``--debug`` anywhere.

Shared by every command module (:mod:`harness.cli`, ``cli_bench``, ``cli_list``,
``cli_leaderboard``, ``cli_figure``, ``cli_data``) so that every subcommand reports a mistake the
same way: one line naming the option, file or value and the fix, the exit code of its kind
(:mod:`harness.errors`), and the traceback only with ``--debug``, which each command accepts
itself as well as before the subcommand (and each group, ``harness data --debug check``).
The exit codes ``harness --help`` lists come from the same table (:func:`exit_codes_epilog`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from dfb_ood.harness.errors import EXIT_BAD_INPUT, EXIT_CODES, EXIT_INTERRUPTED, DfbOodError, exit_code_for

err_console = Console(stderr=True)
DEBUG_STATE = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])

#: What a command reports as one line: the project's own kinds (:mod:`dfb_ood.errors`), raised with
#: a message written for the user, and the system's ``OSError`` (disk full, no permission). Any
#: other exception (a ``ValueError`` inside numpy, a ``KeyError`` in our own code) is a bug and
#: keeps its traceback, under exit code 1.
USER_ERRORS: tuple[type[BaseException], ...] = (DfbOodError, OSError)


DebugAnnotation = Annotated[
    bool,
    typer.Option(
        "--debug", metavar="", rich_help_panel="System", help="Show tracebacks instead of one-line errors."
    ),
]


def debug_callback(debug: DebugAnnotation = False) -> None:
    """A group's ``--debug`` (``harness --debug ...``, ``harness data --debug ...``): on for the command.

    Only ever switches it on: ``harness --debug data check x`` must not be undone by the ``data``
    group's own (absent) flag. The command's :func:`friendly_errors` switches it off again.
    """
    if debug:
        DEBUG_STATE["debug"] = True


def exit_codes_epilog() -> str:
    """The exit-code table of :mod:`harness.errors` as the text under ``harness --help``.

    Generated, so the help and the code cannot drift apart. One line per code (Typer's rich help
    keeps single line breaks in an epilog); no square brackets, which rich would read as markup.
    """
    lines = ["Exit codes (every command; errors are one line on stderr, --debug shows the traceback):"]
    for code, meaning in EXIT_CODES.items():
        extra = "; also usage errors (unknown option, bad choice)"
        lines.append(f"{code:>4}  {meaning}{extra if code == EXIT_BAD_INPUT else ''}")
    return "\n".join(lines)


INTERRUPTED_MESSAGE = (
    "interrupted: run the same command again to resume (completed stages, and the completed chunks "
    "of a pass over images, are kept in the run folder)"
)


def print_error(message: object) -> None:
    """One error line on stderr; the text is printed as is (brackets in it are not rich markup)."""
    err_console.print(f"[bold red]error:[/bold red] {escape(str(message))}", highlight=False, soft_wrap=True)
    err_console.print("(run with --debug for the traceback)", style="dim")


def friendly_errors(command: F) -> F:
    """Turn the errors a user can act on into one line and their exit code, unless --debug is on.

    The wrapped command also takes ``--debug`` itself, so that it works after the subcommand
    (``harness bench --debug``) as well as before it (``harness --debug bench``).
    """

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        show_traceback = debug or DEBUG_STATE["debug"]  # after the subcommand, or before it
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise  # click's own exits derive from RuntimeError: not user errors
        except BrokenPipeError:
            raise  # the reader of stdout went away (`| head`): harness.cli.main ends quietly
        except KeyboardInterrupt:
            if show_traceback:
                raise
            err_console.print(INTERRUPTED_MESSAGE, style="bold red", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except USER_ERRORS as error:
            if show_traceback:
                raise
            print_error(error.args[0] if isinstance(error, KeyError) and error.args else error)
            raise typer.Exit(exit_code_for(error)) from None
        finally:
            DEBUG_STATE["debug"] = False  # one command's --debug never leaks into the next (tests, notebooks)

    signature = inspect.signature(command, eval_str=True)
    debug = inspect.Parameter(
        "debug", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=DebugAnnotation
    )
    parameters = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    wrapper.__signature__ = signature.replace(parameters=[*parameters, debug])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*parameters, debug]}
    return wrapper  # type: ignore[return-value]
