"""Drivers are plug-ins, found by name in the `herdsman.drivers` entry-point group.

pyproject.toml registers the built-in ones (`process`, `docker`); a third-party driver is a package
that declares an entry point of its own, and nothing in herdsman changes (in the manner of
pyinfra's connectors). A driver class is loaded only when it is used, so `herd bake` never pays
for the docker SDK. The spec validates `driver = NAME` against the same names, read without
importing anything (`herdsman.spec.models.known_drivers`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import Any, Protocol, cast

from herdsman.drivers.base import Driver
from herdsman.errors import DriverError
from herdsman.image.oci import ImageStore
from herdsman.spec.models import Environment, known_drivers

BUILT_IN = {"process": "herdsman.drivers.process:ProcessDriver"}  # the embedded default, always there


class DriverClass(Protocol):
    """What a registered driver class offers: a way to be made from an environment's settings."""

    def from_environment(self, home: Path, store: ImageStore, environment: Environment | None) -> Driver: ...


def driver_names() -> tuple[str, ...]:
    return known_drivers()


def driver_class(name: str) -> DriverClass:
    """The class registered under ``name``, imported now."""
    for entry in importlib.metadata.entry_points(group="herdsman.drivers"):
        if entry.name == name:
            return cast(DriverClass, entry.load())
    if name in BUILT_IN:
        module, _, attr = BUILT_IN[name].partition(":")
        return cast(DriverClass, getattr(importlib.import_module(module), attr))
    raise DriverError(
        f"there is no driver {name!r}",
        hint=f"known drivers: {', '.join(driver_names())} (a `herdsman.drivers` entry point adds one)",
    )


def make_driver(name: str, home: Path, store: ImageStore, environment: Environment | None) -> Driver:
    """A driver by name, configured from its environment's section (e.g. docker's `registry`)."""
    made: Any = driver_class(name).from_environment(home, store, environment)
    return cast(Driver, made)
