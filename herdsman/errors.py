"""The one small tree of errors herdsman raises, so the CLI can print them without a traceback.

    HerdError                 anything a user can act on: message, where (file, key path), hint
    ├── SpecError             herd.toml or herd.lock is wrong (file + key path: service.web.health.interval)
    ├── BakeError             an image could not be baked (missing source, failing pip, unsafe archive)
    ├── DeployError           a rollout could not proceed (later issues)
    └── DriverError           a driver could not start, stop or list instances (later issues)

An error that may succeed when tried again says so (`retryable=True`) and when (`delay`, seconds),
in the manner of kopf's `TemporaryError(delay=...)`, so a control loop knows whether and when to
retry instead of giving up.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one place: a key path (``service.web.replicas``) and what to do about it."""

    key: str
    message: str
    hint: str = ""

    def render(self) -> str:
        where = f"{self.key}: " if self.key else ""
        return f"{where}{self.message}"


class HerdError(Exception):
    """An error a user can act on. ``str(err)`` is one line: where, what."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str = "",
        hint: str = "",
        retryable: bool = False,
        delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.key = key
        self.hint = hint
        self.retryable = retryable or delay is not None
        self.delay = delay  # for a retryable error: seconds after which trying again makes sense

    @property
    def where(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join(parts)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class SpecError(HerdError):
    """herd.toml (or herd.lock) is invalid. Carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem] | Problem, *, file: str | None = None) -> None:
        if isinstance(problems, Problem):
            problems = [problems]
        if not problems:
            raise ValueError("SpecError needs at least one problem")
        first = problems[0]
        message = first.message
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
        super().__init__(message, file=file, key=first.key, hint=first.hint)
        self.problems = problems

    def lines(self) -> list[str]:
        """Every problem as ``file: key: message`` lines, for `herd check`."""
        prefix = f"{self.file}: " if self.file else ""
        return [prefix + p.render() for p in self.problems]


class BakeError(HerdError):
    """An image could not be baked or read."""


class DeployError(HerdError):
    """A rollout could not proceed; the old release keeps serving."""


class DriverError(HerdError):
    """A driver could not do what was asked of it."""
