"""Rules for raw text in herd.toml: how deep it may nest, which characters a string may hold.

herd.toml values travel far: into argv and the environment of every instance (where a NUL byte
makes `execve` fail at deploy, long after `herd check` said "ok"), into HTTP request lines (a CR/LF
in `health.path` would split a probe into two requests), into the router's host table and into
terminal output. So they are checked here, once, at the edge, and refused with their key path:

- nesting: a document deeper than `MAX_DEPTH` tables and arrays is refused (a herd.toml needs
  about 6; TOML parsers recurse, and a hostile file must not crash `herd check`);
- every key, anywhere, is free of control characters (Unicode category Cc);
- every string value is free of control characters except tab, LF and CR, which a multi-line
  script in `command` or a certificate in `env` may need;
- single-line values (paths, bases, hosts, listen addresses) hold no control character at all, and
  `health.path` and `route.host` follow their own stricter rules below.

`Invalid` is a ValueError that carries its hint, so a pydantic validator's hint reaches the user.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from herdsman.errors import Problem

MAX_DEPTH = 32
TEXT_CONTROLS_ALLOWED = frozenset("\t\n\r")
_HOST = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$"
    r"|^\[[0-9a-f:.]+\]$"
)
_HTTP_PATH = re.compile(r"^/[!-~]*$")  # visible ASCII: what a request line may carry unencoded
NESTING_HINT = f"herd.toml needs only a few levels of tables and arrays; at most {MAX_DEPTH} are read"


class Invalid(ValueError):
    """A ValueError with a hint for the user (pydantic keeps the exception in the error's ctx)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def printable(text: str) -> str:
    """``text`` with control characters escaped, so a key path or message stays one clean line."""
    return "".join(ch if unicodedata.category(ch) != "Cc" else ascii(ch)[1:-1] for ch in text)


def quoted(text: str, limit: int = 60) -> str:
    """``text`` for a message: quoted, control characters escaped once, cut when long."""
    shown = printable(text if len(text) <= limit else text[:limit] + "...")
    return "'" + shown.replace("'", "\\'") + "'"


def control_character(text: str, allowed: frozenset[str] = frozenset()) -> str | None:
    """The first control character in ``text`` that is not ``allowed``, or None."""
    for ch in text:
        if ch not in allowed and unicodedata.category(ch) == "Cc":
            return ch
    return None


def _name(ch: str) -> str:
    names = {"\0": "NUL", "\t": "tab", "\n": "LF", "\r": "CR", "\x1b": "ESC", "\x7f": "DEL"}
    return f"U+{ord(ch):04X}" + (f" ({names[ch]})" if ch in names else "")


def check_document(data: dict[str, Any]) -> list[Problem]:
    """Nesting depth and control characters of a parsed TOML document, with key paths; iterative,
    so a deep document cannot exhaust the stack here."""
    problems: list[Problem] = []
    pending: list[tuple[str, Any, int]] = [("", data, 0)]
    while pending:
        key, value, depth = pending.pop()
        if depth > MAX_DEPTH:
            problems.append(Problem(key, f"nested too deeply (more than {MAX_DEPTH} levels)", NESTING_HINT))
            continue
        if isinstance(value, dict):
            for name, item in value.items():
                shown = printable(name)
                if not re.fullmatch(r"[A-Za-z0-9_-]+", shown):
                    shown = '"' + shown.replace('"', '\\"') + '"'
                child = f"{key}.{shown}" if key else shown
                bad = control_character(name)
                if bad is not None:
                    problems.append(
                        Problem(child, f"the key holds the control character {_name(bad)}", "rename the key")
                    )
                    continue
                pending.append((child, item, depth + 1))
        elif isinstance(value, list):
            pending.extend((f"{key}[{i}]", item, depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            bad = control_character(value, TEXT_CONTROLS_ALLOWED)
            if bad is not None:
                problems.append(
                    Problem(
                        key,
                        f"the value holds the control character {_name(bad)}",
                        "text may hold tabs and line breaks, but no NUL or other control character",
                    )
                )
    problems.sort(key=lambda p: p.key)
    return problems


def one_line(value: str) -> str:
    """A value that is one line of text: a path, a base, an address."""
    bad = control_character(value)
    if bad is not None:
        raise Invalid(
            f"{quoted(value)} holds the control character {_name(bad)}",
            "this value is one line of printable characters",
        )
    return value


def http_path(value: str) -> str:
    """A path sent in a probe's request line: no spaces, controls or raw non-ASCII characters."""
    if not _HTTP_PATH.match(value):
        raise Invalid(
            f"{quoted(value)} is not an HTTP path",
            "start with / and use visible ASCII only: no spaces or control characters "
            "(percent-encode others, e.g. %20)",
        )
    return value


def host_name(value: str) -> str:
    """A route's host, as the router compares it: a lower-cased name or [IPv6], without a port."""
    host = value.lower()
    if not _HOST.match(host):
        raise Invalid(
            f"{quoted(value)} is not a host name",
            "a DNS name such as web.example.com (letters, digits, '-', '.'), without a port or a scheme",
        )
    return host


def deep_toml_key(text: str) -> tuple[str, int]:
    """Where a TOML text nests deeper than `MAX_DEPTH` brackets: (the key being assigned, its line).
    A rough scan (quoted strings and comments skipped), used only to say where after the parser gave
    up; (table, 0) when it cannot tell."""
    table = key = ""
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if depth == 0:
            header = re.match(r"^\[\[?\s*([^\]]*?)\s*\]", stripped)
            if header:
                table, key = header.group(1), ""
                continue
            assign = re.match(r"^([^=\[{]+?)\s*=", stripped)
            if assign:
                key = assign.group(1).strip("\"' ")
        quote = ""
        for index, ch in enumerate(line):
            if quote:
                if ch == quote and line[index - 1] != "\\":
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    return ".".join(printable(part) for part in (table, key) if part), number
            elif ch in "]}":
                depth = max(depth - 1, 0)
    return printable(table), 0
