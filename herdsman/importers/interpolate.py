"""Compose's variable interpolation and `.env` files, by the compose specification's rules.

Compose substitutes `$VAR` and `${VAR}` in every string value, from the shell's environment and
the `.env` file beside the compose file (the environment wins). The forms:

    ${VAR:-default}  default when VAR is unset or empty     ${VAR-default}  only when unset
    ${VAR:?message}  an error when VAR is unset or empty    ${VAR?message}  only when unset
    ${VAR:+other}    other when VAR is set and not empty    ${VAR+other}    when set
    $$               a literal $

A default or message may itself hold `${...}`. An unset variable with no default becomes "" and
is reported, as compose warns. Keys are not interpolated, values only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from herdsman.errors import HerdError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")
HINT = "write $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} or $$ for a literal $"


@dataclass
class Interpolation:
    """Substitutes variables from ``variables``; remembers the unset ones it replaced by ""."""

    variables: Mapping[str, str]
    file: str
    unset: set[str] = field(default_factory=set)

    def value(self, data: Any, key: str = "") -> Any:
        """``data`` with every string value interpolated (dicts and lists walked; x- keys kept as is)."""
        if isinstance(data, str):
            return self.text(data, key)
        if isinstance(data, dict):
            return {
                k: v if str(k).startswith("x-") else self.value(v, f"{key}.{k}" if key else str(k))
                for k, v in data.items()
            }
        if isinstance(data, list):
            return [self.value(item, f"{key}[{index}]") for index, item in enumerate(data)]
        return data

    def text(self, text: str, key: str) -> str:
        out, _ = self._scan(text, 0, key, stop=None)
        return out

    def _scan(self, text: str, pos: int, key: str, stop: str | None) -> tuple[str, int]:
        """Interpolate from ``pos`` up to ``stop`` (a closing brace, for a nested default) or the end."""
        out: list[str] = []
        while pos < len(text):
            char = text[pos]
            if stop is not None and char == stop:
                return "".join(out), pos
            if char != "$":
                out.append(char)
                pos += 1
                continue
            nxt = text[pos + 1 : pos + 2]
            if nxt == "$":
                out.append("$")
                pos += 2
            elif nxt == "{":
                value, pos = self._braced(text, pos + 2, key)
                out.append(value)
            else:
                match = _NAME.match(text, pos + 1)
                if match is None:  # a lone $ (e.g. "costs 5$") stays, as compose leaves it
                    out.append("$")
                    pos += 1
                    continue
                out.append(self._lookup(match.group()))
                pos = match.end()
        if stop is not None:
            raise self._error(text, key, "a ${ is never closed")
        return "".join(out), pos

    def _braced(self, text: str, pos: int, key: str) -> tuple[str, int]:
        match = _NAME.match(text, pos)
        if match is None:
            raise self._error(text, key, "${ must be followed by a variable name")
        name, pos = match.group(), match.end()
        if pos >= len(text):
            raise self._error(text, key, "a ${ is never closed")
        if text[pos] == "}":
            return self._lookup(name), pos + 1
        operator = next((op for op in _OPERATORS if text.startswith(op, pos)), None)
        if operator is None:
            raise self._error(text, key, f"unexpected {text[pos : pos + 1]!r} after ${{{name}")
        argument, pos = self._scan(text, pos + len(operator), key, stop="}")
        pos += 1  # the closing brace
        value = self.variables.get(name)
        empty_counts = operator.startswith(":")
        missing = value is None or (empty_counts and value == "")
        if operator.endswith("-"):
            return (argument if missing else str(value)), pos
        if operator.endswith("+"):
            return ("" if missing else argument), pos
        if missing:  # "?": required
            detail = argument or ("it is not set" if value is None else "it is empty")
            raise HerdError(
                f"required variable {name} is missing a value: {detail}",
                file=self.file,
                key=key,
                hint=f"export {name}=... or set it in the .env file beside the compose file",
            )
        return str(value), pos

    def _lookup(self, name: str) -> str:
        value = self.variables.get(name)
        if value is None:
            self.unset.add(name)
            return ""
        return value

    def _error(self, text: str, key: str, why: str) -> HerdError:
        shown = text if len(text) <= 60 else text[:60] + "..."
        return HerdError(f"invalid interpolation in {shown!r}: {why}", file=self.file, key=key, hint=HINT)


def parse_env_file(text: str, *, file: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (a `.env` or an `env_file`): blank lines and `#` comments skipped, an
    `export ` prefix allowed, single quotes literal, double quotes with \\n and \\" escapes, an
    unquoted value cut at " #". A line without "=" is refused with its line number."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            raise HerdError(
                f"line {number} is not NAME=VALUE: {raw.strip()[:60]!r}",
                file=file,
                hint="each line of an env file is NAME=VALUE (or a # comment)",
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        else:
            value = value.split(" #", 1)[0].rstrip()
        values[name] = value
    return values
