"""Reading herd.toml: TOML, then the frozen models, then the cross-key rules — errors with key paths.

Everything else in herdsman receives a `Project` (the parsed stack plus where it lives) and never
looks at the raw TOML again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from herdsman.errors import Problem, SpecError
from herdsman.spec.checks import MAX_DEPTH, NESTING_HINT, Invalid, check_document, deep_toml_key, quoted
from herdsman.spec.durations import HINT as DURATION_HINT
from herdsman.spec.files import STACK_FILE, find_stack_file, home_for
from herdsman.spec.models import Stack
from herdsman.spec.rules import check_stack


@dataclass(frozen=True)
class Project:
    """A parsed stack and the directory its relative paths are resolved from."""

    file: Path
    stack: Stack

    @property
    def root(self) -> Path:
        return self.file.parent

    @property
    def lock_file(self) -> Path:
        return self.root / "herd.lock"

    @property
    def stack_id(self) -> str:
        """Who this stack is on a driver: its name for people, plus a hash of the directory it lives
        in, so two copies of one project (same `[stack] name`, other directories) never list, heal,
        reap or stop each other's instances. Moving a project makes it a new stack: `herd down` first."""
        where = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:10]
        return f"{self.stack.name}-{where}"

    def image_spec_digest(self, name: str) -> str:
        """A digest of what of a service's spec goes into its image (recipe, command, port).
        Replicas, env or health are release config: changing them must not make a new image."""
        service = self.stack.service[name]
        data = {
            "image": service.image.model_dump(mode="json", by_alias=True),
            "command": list(service.command),
            "port": service.port,
        }
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()


def load_project(path: Path | None = None) -> Project:
    file = find_stack_file(path)
    return Project(file=file, stack=parse_stack(_read(file), file=str(file)))


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            Problem("", "file not found", "run `herd init` to write a starter herd.toml"), file=str(file)
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(Problem("", f"cannot read it: {exc}"), file=str(file)) from None


def parse_stack(text: str, *, file: str = STACK_FILE) -> Stack:
    """Parse and validate a herd.toml document; raise SpecError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(
            Problem("", f"not valid TOML: {exc}", "check quotes, brackets and '=' near that line"), file=file
        ) from None
    except RecursionError:  # the parser recurses per nesting level: a hostile file must not crash us
        key, line = deep_toml_key(text)
        where = f" (line {line})" if line else ""
        raise SpecError(
            Problem(key, f"the file is nested too deeply{where}: more than {MAX_DEPTH} levels", NESTING_HINT),
            file=file,
        ) from None
    problems = check_document(data)
    if problems:  # text the models must not even see (control characters, too deep)
        raise SpecError(problems, file=file)
    try:
        stack = Stack.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(err) for err in exc.errors()]
        problems += _rules_of_the_rest(data, exc.errors(), problems)
        raise SpecError(problems, file=file) from None
    problems = check_stack(stack)
    if problems:
        raise SpecError(problems, file=file)
    return stack


def _rules_of_the_rest(data: dict[str, Any], errors: list[Any], found: list[Problem]) -> list[Problem]:
    """The cross-reference rules (`check_stack`: undeclared volumes, clashing routes...) run on the
    document without the keys that failed validation, so `herd check` reports every problem in one
    round, not a second round once the first is fixed. Problems under a key already reported, or
    from a document that still does not validate, are left out."""
    rest = copy.deepcopy(data)
    for err in errors:
        path = [
            p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]"))
        ]
        _drop(rest, path)
    try:
        stack = Stack.model_validate(rest)
    except ValidationError:
        return []
    reported = {p.key for p in found}
    return [
        p
        for p in check_stack(stack)
        if not any(p.key == k or p.key.startswith(k + ".") or k.startswith(p.key + ".") for k in reported)
    ]


def _drop(data: Any, path: list[Any]) -> None:
    """Remove the value at ``path`` (a list as a whole; a missing key's table, below the top two
    levels, so a table that lacks a required key goes but its service or volume stays)."""
    node = data
    for part in path[:-1]:
        if isinstance(node, list):
            break
        if not isinstance(node, dict) or part not in node:
            return
        parent, node = node, node[part]
        if isinstance(node, list):
            parent.pop(part)  # a list with a bad item goes whole (indices would shift)
            return
    last = path[-1] if path else None
    if isinstance(node, dict) and last in node:
        del node[last]
    elif len(path) > 3:
        _drop(data, path[:-1])


def _problem(err: Any) -> Problem:
    loc = tuple(err["loc"])
    key = _key_path(loc)
    kind = err["type"]
    message = str(err["msg"]).removeprefix("Value error, ")
    hint = ""
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, Invalid):
        return Problem(key, str(cause), cause.hint)
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        message = f"unknown key {loc[-1]!r}"
        hint = f"allowed here: {', '.join(allowed)}" if allowed else "remove it"
    elif kind == "missing":
        message = "required key is missing"
        hint = f"add {loc[-1]} = ..."
    elif "duration" in message:
        hint = DURATION_HINT
    elif kind.startswith("int_") or kind == "bool_type" or kind.endswith("_type"):
        hint = f"got {err.get('input')!r}"
    elif kind == "string_pattern_mismatch":
        message = f"{quoted(str(err.get('input')))} is not allowed here"
        hint = _pattern_hint(loc)
    elif kind == "literal_error":
        message = f"{quoted(str(err.get('input')))} is not a choice here"
        hint = f"use {(err.get('ctx') or {}).get('expected', 'one of the documented values')}"
    return Problem(key, message, hint)


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or part in ("[key]",):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _pattern_hint(loc: tuple[Any, ...]) -> str:
    if (loc and loc[-1] == "[key]") or (len(loc) >= 2 and loc[0] in ("service", "volume", "environment")):
        return "names use lower-case letters, digits and '-', starting with a letter"
    return "see `herd init` for a commented example"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys a table at ``loc`` accepts, by walking the models (for 'unknown key' hints)."""
    current: Any = Stack
    for part in loc:
        model = _model_in(current)
        if model is not None and isinstance(part, str):
            field = next(
                (f for n, f in model.model_fields.items() if (f.alias or n) == part),
                None,
            )
            if field is None:
                return []
            current = field.annotation
        else:
            current = _container_item(current)
    model = _model_in(current)
    if model is None:
        return []
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    if typing.get_origin(annotation) is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    return None


def _container_item(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    args = typing.get_args(annotation)
    return args[-1] if args else None


def herd_home(project: Project) -> Path:
    """Where herdsman keeps images, state, logs and volumes: `.herd/` beside herd.toml, or $HERD_HOME."""
    return home_for(project.file)
