"""`herd import` for the faces: reads the compose file, its `.env`, env files and Dockerfiles,
hands them to the pure converter (`importers.compose`), and writes herd.toml.

The files read are only those under the directory herd.toml is written to (the project): a build
context or env file outside it could not be baked or deployed from there either.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from herdsman.errors import HerdError


@dataclass(frozen=True)
class ComposeImport:
    written: Path
    services: tuple[str, ...]
    volumes: tuple[str, ...]
    gaps: tuple[str, ...]  # "compose key: why", as listed at the end of the file


def import_compose(
    compose_file: Path,
    output: Path | None = None,
    *,
    force: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ComposeImport:
    """Write ``output`` (default: herd.toml beside the compose file) from ``compose_file``;
    variables come from ``environ`` (default: this process's environment) over the `.env` file."""
    from herdsman.importers.compose import convert, load_compose
    from herdsman.importers.interpolate import parse_env_file

    compose_file = compose_file.resolve()
    target = (output or compose_file.parent / "herd.toml").resolve()
    if target.exists() and not force:
        raise HerdError(f"{target} already exists", hint="pass --force to overwrite it")
    text = _read(compose_file)
    root = target.parent
    try:
        prefix = compose_file.parent.relative_to(root).as_posix()
    except ValueError:
        raise HerdError(
            f"herd.toml must be written in {compose_file.parent} or a directory above it",
            file=str(compose_file),
            hint="the compose file's build contexts and env files must be inside the project",
        ) from None
    variables: dict[str, str] = {}
    dotenv = compose_file.parent / ".env"
    if dotenv.is_file():
        variables.update(parse_env_file(_read(dotenv), file=str(dotenv)))
    variables.update(os.environ if environ is None else environ)  # the environment wins, as in compose

    def read(relative: str) -> str | None:
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return _read(path)

    data, unset = load_compose(text, file=compose_file.name, variables=variables)
    name = str(data.get("name") or compose_file.parent.name)
    stack_name = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    stack_name = (stack_name if re.match(r"^[a-z]", stack_name) else f"app-{stack_name}")[:41].rstrip("-")
    result = convert(
        data,
        file=compose_file.name,
        stack_name=stack_name,
        read=read,
        prefix="" if prefix == "." else prefix,
        unset=unset,
        variables=variables,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(result.text, encoding="utf-8")
    return ComposeImport(target, result.services, result.volumes, tuple(g.render() for g in result.gaps))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HerdError("file not found", file=str(path), hint="give the path of a compose file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HerdError(f"cannot read it: {exc}", file=str(path)) from None
