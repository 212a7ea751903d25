"""herd.toml -> frozen models: the one place raw configuration is read and validated.

Names are loaded on first use (PEP 562), so that code needing only `spec.files` (finding herd.toml)
does not pay for building the pydantic models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herdsman.spec.durations import format_duration, parse_duration
    from herdsman.spec.files import STACK_FILE, find_stack_file
    from herdsman.spec.load import Project, herd_home, load_project, parse_stack
    from herdsman.spec.models import CopyStep, HealthCheck, ImageRecipe, Route, Service, Stack, Volume

_WHERE = {
    "format_duration": "durations",
    "parse_duration": "durations",
    "STACK_FILE": "files",
    "find_stack_file": "files",
    "Project": "load",
    "herd_home": "load",
    "load_project": "load",
    "parse_stack": "load",
    "CopyStep": "models",
    "HealthCheck": "models",
    "ImageRecipe": "models",
    "Route": "models",
    "Service": "models",
    "Stack": "models",
    "Volume": "models",
}

__all__ = [
    "STACK_FILE",
    "CopyStep",
    "HealthCheck",
    "ImageRecipe",
    "Project",
    "Route",
    "Service",
    "Stack",
    "Volume",
    "find_stack_file",
    "format_duration",
    "herd_home",
    "load_project",
    "parse_duration",
    "parse_stack",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'herdsman.spec' has no attribute {name!r}")
    return getattr(importlib.import_module(f"herdsman.spec.{module}"), name)
