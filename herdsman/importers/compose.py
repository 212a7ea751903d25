"""`herd import compose.yaml`: a compose file as a commented herd.toml, plus what has no equivalent.

Pure: `load_compose` turns the compose text (and the variables of the environment and `.env`)
into the interpolated document; `convert` turns that into herd.toml text. Files the compose file
refers to (env files, Dockerfiles) come through a `read` function, so the facade decides what
may be read and the tests pass a dictionary. YAML is read as compose reads it, YAML 1.2 style:
"8080:80" is a string (not a base-60 number) and only true/false are booleans.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from herdsman.errors import HerdError
from herdsman.importers.compose_service import Reader, ServiceImport
from herdsman.importers.compose_values import herd_name
from herdsman.importers.gaps import Gap
from herdsman.importers.interpolate import Interpolation
from herdsman.importers.toml_text import Table


class _ComposeLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader with YAML 1.2 core booleans and integers, as compose (Go's yaml.v3) reads them."""


_ComposeLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ComposeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_ComposeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)

_TOP_LEVEL = {"version", "name", "services", "volumes", "secrets"}
_TOP_GAPS = {
    "networks": "instances share the host's loopback; services reach each other by their routes",
    "configs": "no config files are mounted: bake them into the image (copy) or pass them in env",
    "include": "one herd.toml per stack: import each included file and merge them by hand",
}


@dataclass(frozen=True)
class Imported:
    text: str  # the herd.toml
    gaps: tuple[Gap, ...]
    services: tuple[str, ...]
    volumes: tuple[str, ...]


def load_compose(text: str, *, file: str, variables: Mapping[str, str]) -> tuple[dict[str, Any], set[str]]:
    """The compose document with x- keys dropped and variables substituted; and the unset names."""
    try:
        data = yaml.load(text, Loader=_ComposeLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HerdError(
            f"not valid YAML{where}: {problem}",
            file=file,
            hint="check indentation, quotes and ':' near that line",
        ) from None
    if not isinstance(data, dict):
        raise HerdError(
            "a compose file is a mapping with a `services` key", file=file, hint="services:\n  web: ..."
        )
    data = _without_extensions(data)
    interpolation = Interpolation(variables, file)
    data = interpolation.value(data)
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        raise HerdError(
            "the compose file declares no service", file=file, key="services", hint="services:\n  web: ..."
        )
    for name, service in services.items():
        if not isinstance(service, dict):
            raise HerdError(
                f"a service is a mapping, not {type(service).__name__}",
                file=file,
                key=f"services.{name}",
                hint=f"services:\n  {name}:\n    image: ...",
            )
    return data, interpolation.unset


def _without_extensions(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_extensions(v) for k, v in data.items() if not str(k).startswith("x-")}
    if isinstance(data, list):
        return [_without_extensions(item) for item in data]
    return data


def convert(
    compose: dict[str, Any],
    *,
    file: str,
    stack_name: str,
    read: Reader,
    prefix: str = "",
    unset: set[str] | frozenset[str] = frozenset(),
    variables: Mapping[str, str] | None = None,
) -> Imported:
    """herd.toml text for an interpolated compose document (see `load_compose`). ``file`` names the
    compose file in errors and comments; ``prefix`` is its directory relative to herd.toml."""
    interpolation = Interpolation(variables or {}, file)
    gaps: list[Gap] = []
    declared = compose.get("volumes") or {}
    volume_names = {str(name): herd_name(str(name)) for name in declared}
    sections: list[str] = []
    seen: dict[str, str] = {}
    services: list[str] = []
    used: dict[str, str] = {}
    for compose_name, spec in compose["services"].items():
        name = herd_name(str(compose_name))
        if name in seen:
            raise HerdError(
                f"services {seen[name]!r} and {compose_name!r} would both be named {name!r} in herd.toml",
                file=file,
                key=f"services.{compose_name}",
                hint="rename one of them (herdsman names use lower-case letters, digits and '-')",
            )
        seen[name] = str(compose_name)
        result = ServiceImport(
            name, str(compose_name), spec, file, read, interpolation, prefix, volume_names
        ).convert()
        services.append(name)
        gaps += result.gaps
        used.update(result.volumes)
        sections.append("\n".join(table.render() for table in result.tables))
    for compose_name, herd in sorted(volume_names.items(), key=lambda item: item[1]):
        table = Table(f"volume.{herd}")
        table.set("description", f"compose volume {compose_name}")
        options = declared.get(compose_name) or {}
        for option in ("driver", "driver_opts", "external", "name", "labels"):
            if option in options:
                gaps.append(Gap(f"volumes.{compose_name}.{option}", _VOLUME_OPTIONS[option]))
        sections.append(table.render())
    for top, why in _TOP_GAPS.items():
        if top in compose:
            gaps.append(Gap(top, why))
    for top in compose:
        if top not in _TOP_LEVEL and top not in _TOP_GAPS:
            gaps.append(Gap(str(top), "not a compose key herdsman knows"))
    for secret, options in (compose.get("secrets") or {}).items():
        source = ", ".join(f"{k} {v}" for k, v in (options or {}).items() if k in ("file", "environment"))
        gaps.append(
            Gap(f"secrets.{secret}", f"not read ({source or 'no source'}): export it when you deploy")
        )
    missing = sorted(set(unset) | interpolation.unset)
    gaps = [Gap(f"${{{name}}}", "not set: replaced by an empty string") for name in missing] + gaps
    stack = Table("stack")
    stack.set("name", stack_name)
    text = "\n".join([_header(file), stack.render(), *sections, _footer(gaps)])
    return Imported(text, tuple(gaps), tuple(services), tuple(sorted(volume_names.values())))


_VOLUME_OPTIONS = {
    "driver": "volumes live in .herd/volumes (process driver) or as herd-STACKID-NAME (docker driver)",
    "driver_opts": "volumes live in .herd/volumes (process driver) or as herd-STACKID-NAME (docker driver)",
    "external": "herdsman creates its own volume: bring the data in with `herd volume restore NAME FILE`",
    "name": "herdsman names the volume itself (herd-STACKID-NAME on Docker)",
    "labels": "volumes carry herdsman's own labels",
}


def _header(file: str) -> str:
    return (
        f"# herd.toml written by `herd import {file}`: read it through,\n"
        "# then `herd check` and `herd deploy`.\n"
        "# Each service listens on $PORT (herdsman sets it per instance) behind its route on loopback;\n"
        "# instances are disposable, with a read-only root: data lives in [volume.*] only.\n"
        "# What compose said that herd.toml cannot say is listed at the end, with why.\n"
    )


def _footer(gaps: list[Gap]) -> str:
    if not gaps:
        return "# No equivalent missing: everything in the compose file is said above.\n"
    lines = ["# ---- No equivalent in herdsman (compose key: why) ----"]
    lines += [f"# {gap.render()}" for gap in gaps]
    return "\n".join(lines) + "\n"
