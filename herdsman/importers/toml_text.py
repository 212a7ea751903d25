"""Writing herd.toml by hand, with comments: a TOML library would drop them, and the comments are
what makes an imported file readable (where each value came from, what to check)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
COMMENT_COLUMN = 38

Value = object  # str, int, float, bool, or lists and dicts of them


def key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)


def value(data: Value) -> str:
    """One TOML value on one line (JSON's string escapes are TOML's)."""
    if isinstance(data, bool):
        return "true" if data else "false"
    if isinstance(data, int | float):
        return repr(data)
    if isinstance(data, str):
        return json.dumps(data, ensure_ascii=False)
    if isinstance(data, list | tuple):
        return "[" + ", ".join(value(item) for item in data) + "]"
    if isinstance(data, dict):
        return (
            "{ " + ", ".join(f"{key(str(k))} = {value(v)}" for k, v in data.items()) + " }" if data else "{}"
        )
    raise TypeError(f"no TOML value for {data!r}")


@dataclass
class Table:
    """``[name]``, a comment above it, and its ``key = value  # comment`` lines in order."""

    name: str
    comment: str = ""
    lines: list[str] = field(default_factory=list)

    def set(self, name: str, data: Value, comment: str = "") -> None:
        line = f"{key(name)} = {value(data)}"
        if comment:
            line = f"{line.ljust(COMMENT_COLUMN - 1)} # {comment}"
        self.lines.append(line)

    def note(self, comment: str) -> None:
        self.lines.append(f"# {comment}")

    def render(self) -> str:
        head = [f"# {line}" for line in self.comment.splitlines()] if self.comment else []
        return "\n".join([*head, f"[{self.name}]", *self.lines]) + "\n"
