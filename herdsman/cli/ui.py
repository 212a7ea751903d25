"""Terminal output for the CLI: errors as one clear line, progress for slow steps, sizes and digests.

Kept apart from cli.py so the command definitions stay a thin list of what each command does.
"""

from __future__ import annotations

import sys
import traceback
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from herdsman.cli.fmt import human_size, short
from herdsman.errors import HerdError, SpecError

__all__ = ["RichReporter", "console", "err_console", "human_size", "print_error", "short"]

# Piped output is for scripts: never wrap or cut a table there (rich would assume 80 columns).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 1000)
err_console = Console(stderr=True, highlight=False)


def print_error(error: BaseException, *, verbose: bool) -> None:
    """One line saying where and what, then the hint; a traceback only with --verbose."""
    if verbose:
        err_console.print("".join(traceback.format_exception(error)), markup=False, end="")
    if isinstance(error, SpecError) and len(error.problems) > 1:
        for line in error.lines():
            err_console.print(f"[bold red]error:[/] {line}", markup=True, soft_wrap=True)
    elif isinstance(error, HerdError):
        err_console.print("[bold red]error:[/] ", end="")
        err_console.print(str(error), markup=False, soft_wrap=True)
    else:
        err_console.print(f"[bold red]error:[/] unexpected {type(error).__name__}: ", end="")
        err_console.print(str(error), markup=False, soft_wrap=True)
        if not verbose:
            err_console.print("[dim]run again with --verbose for the traceback[/]")
    hint = getattr(error, "hint", "")
    if hint:
        err_console.print("[dim]hint:[/] ", end="")
        err_console.print(hint, markup=False, soft_wrap=True, style="dim")


class _RichTask:
    def __init__(self, progress: Progress, label: str, total: float | None) -> None:
        self.progress = progress
        self.label = label
        self.id = progress.add_task(label, total=total)

    def advance(self, amount: float = 1) -> None:
        self.progress.advance(self.id, amount)

    def finish(self, note: str = "") -> None:
        self.progress.remove_task(self.id)
        if note:
            self.progress.console.print(f"  {self.label}: {note}")

    def __enter__(self) -> _RichTask:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.id in self.progress.task_ids:
            self.progress.remove_task(self.id)


class RichReporter:
    """Live progress on stderr for slow steps (a spinner, or a bar when the total is known)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=quiet or not sys.stderr.isatty(),
        )

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def task(self, label: str, total: float | None = None) -> _RichTask:
        if not self.progress.live.is_started and not self.quiet and not sys.stderr.isatty():
            err_console.print(f"[dim]… {label}[/]")
        return _RichTask(self.progress, label, total)

    def note(self, message: str) -> None:
        if not self.quiet:
            err_console.print(f"[dim]· {message}[/]")
