"""Where a stack lives on disk — found without loading the models, so quick paths stay quick."""

from __future__ import annotations

import os
from pathlib import Path

from herdsman.errors import Problem, SpecError

STACK_FILE = "herd.toml"


def find_stack_file(start: Path | None = None) -> Path:
    """herd.toml in ``start`` (a file or directory) or the nearest parent directory holding one."""
    here = (start or Path.cwd()).resolve()
    if here.is_file() or here.suffix == ".toml":
        return here
    for directory in (here, *here.parents):
        candidate = directory / STACK_FILE
        if candidate.is_file():
            return candidate
    raise SpecError(
        Problem(
            "", f"no {STACK_FILE} here or in any parent of {here}", "run `herd init` to write a starter one"
        ),
    )


def home_for(stack_file: Path) -> Path:
    """Where herdsman keeps images, state, logs and volumes: `.herd/` beside herd.toml, or $HERD_HOME."""
    override = os.environ.get("HERD_HOME")
    return Path(override).resolve() if override else stack_file.parent / ".herd"
