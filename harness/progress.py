"""Progress reporting for long loops: a rich bar on a terminal, nothing with ``--quiet``.

Loops talk to a :class:`Reporter`, never to rich directly, so that the library code runs the same
under the CLI, in tests and in notebooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Opens one progress bar per task; ``quiet`` turns every bar (and message) off."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)

    def message(self, text: str, label: str | None = None) -> None:
        """One line of status (stderr, so stdout stays clean for tables and ``--json``).

        ``text`` is printed as is: paths and detector names may hold square brackets, which rich
        would otherwise take for markup and swallow. ``label`` (``warning`` or ``note``) is shown
        highlighted in front.
        """
        if self.quiet:
            return
        prefix = f"[yellow]{escape(label)}[/yellow] " if label else ""
        self.console.print(prefix + escape(text), highlight=False)

    @contextlib.contextmanager
    def task(self, description: str, total: int, completed: int = 0) -> Iterator[TaskHandle]:
        """A bar for ``total`` units of work; the handle advances it and shows live metrics."""
        if self.quiet:
            yield TaskHandle(None, None)
            return
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        with progress:
            task_id = progress.add_task(escape(description), total=total, completed=completed, info="")
            yield TaskHandle(progress, task_id)


class TaskHandle:
    """Advances one bar; a no-op when reporting is quiet."""

    def __init__(self, progress: Progress | None, task_id: object) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, units: int = 1, info: str | None = None) -> None:
        """Move the bar forward, optionally replacing its info text (loss, images/s, ...)."""
        if self._progress is None:
            return
        if info is None:
            self._progress.advance(self._task_id, units)  # type: ignore[arg-type]
        else:
            self._progress.update(self._task_id, advance=units, info=info)  # type: ignore[arg-type]
