"""Progress reporting for slow steps, without tying the image code to a terminal.

The baker calls a `Reporter`; the CLI passes one drawn with rich, tests pass `NullReporter`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol


class Task(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def finish(self, note: str = "") -> None: ...

    def __enter__(self) -> Task: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Reporter(Protocol):
    def task(self, label: str, total: float | None = None) -> Task:
        """Start a slow step; ``total`` (bytes, files) makes it a bar, None a spinner."""
        ...

    def note(self, message: str) -> None:
        """One line of what happened (a cache hit, a lock update)."""
        ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def finish(self, note: str = "") -> None:
        pass

    def __enter__(self) -> _NullTask:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class NullReporter:
    """Reports nothing; remembers notes so tests can assert on what happened."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def task(self, label: str, total: float | None = None) -> Task:
        return _NullTask()

    def note(self, message: str) -> None:
        self.notes.append(message)
