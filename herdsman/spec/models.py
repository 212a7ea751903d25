"""The frozen models a herd.toml is parsed into, once, at the edge.

Every model rejects unknown keys (a typo such as ``replica = 3`` must not silently mean the default).
Field names are the TOML keys, so a validation error's location *is* the key path a user types.
Cross-field rules (a volume used but not declared, two routes on one address) live in
``spec.rules`` so each can name the exact key it is about.
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from herdsman.spec.durations import format_duration, parse_duration

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,40}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Seconds inside; written back as "250ms"/"2m" in JSON, so a dumped config parses again unchanged.
Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, when_used="json")
]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _argv(value: object) -> object:
    """A command is a list of strings, or one string split like a shell would."""
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise ValueError(f"cannot split the command {value!r}: {exc}") from None
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path inside the instance, such as /data")
    if any(part == ".." for part in value.split("/")):
        raise ValueError(f"{value!r} must not contain '..'")
    return value.rstrip("/") or "/"


Argv = Annotated[tuple[str, ...], BeforeValidator(_argv)]
AbsPath = Annotated[str, AfterValidator(_absolute_path)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False, populate_by_name=True)


class CopyStep(Model):
    """Files from the project (``src``, relative to herd.toml) into the image at ``dest``."""

    src: str = "."
    dest: AbsPath = "/app"


def _copy_steps(value: object) -> object:
    if isinstance(value, str):
        return ({"src": value},)
    if isinstance(value, list):
        return tuple({"src": item} if isinstance(item, str) else item for item in value)
    return value


_SUITE = re.compile(r"^[a-z][a-z0-9-]*$")
_REGISTRY = re.compile(
    r"^(?:[a-z0-9-]+(?:\.[a-z0-9-]+)+(?::\d+)?|localhost(?::\d+)?|[a-z0-9-]+:\d+|\[::1\](?::\d+)?)"
    r"/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::\w[\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def _base(value: str) -> str:
    if value in ("scratch", "host"):
        return value
    kind, sep, rest = value.partition(":")
    if sep and kind == "debian" and _SUITE.match(rest):
        return value
    if sep and kind in ("oci", "docker-archive") and rest.split("#", 1)[0]:
        return value
    if _REGISTRY.match(value):
        return value
    raise ValueError(
        f"unknown base {value!r}: use 'scratch', 'host', 'debian:SUITE' (e.g. debian:bookworm), "
        "'oci:PATH' (an OCI image layout directory), 'docker-archive:PATH' (a `docker save` tar) "
        "or 'REGISTRY/NAME@sha256:...' (an image in a registry; REGISTRY/NAME:TAG is pinned in herd.lock)"
    )


class ImageRecipe(Model):
    """How to bake a service's image: a base, then Python requirements, then the copied sources."""

    base: Annotated[str, AfterValidator(_base)] = "host"
    packages: tuple[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.+-]+(=[^\s]+)?$")], ...] = ()
    requirements: str | None = None
    python_path: AbsPath = "/opt/herd/python"
    copy_steps: Annotated[tuple[CopyStep, ...], BeforeValidator(_copy_steps)] = Field(
        default=(CopyStep(),), alias="copy"
    )
    workdir: AbsPath = "/app"
    user: Annotated[
        str, Field(pattern=r"^$|^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")
    ] = ""
    entrypoint: Argv = ()
    env: dict[EnvName, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class HealthCheck(Model):
    """How to tell an instance is ready (admission) and still alive (ejection)."""

    type: Literal["http", "tcp", "command"] = "http"
    path: Annotated[str, Field(pattern=r"^/")] = "/healthz"
    status: Annotated[int, Field(ge=100, le=599)] = 200
    command: Argv = ()
    interval: Duration = 1.0
    timeout: Duration = 1.0
    successes: Annotated[int, Field(ge=1, le=100)] = 1
    failures: Annotated[int, Field(ge=1, le=100)] = 3
    deadline: Duration = 60.0


class Route(Model):
    """A stable address in front of the service's pool."""

    listen: str = "127.0.0.1:8080"
    host: str | None = None
    drain_timeout: Duration = 30.0


class DeployPolicy(Model):
    """How a new release replaces the old one."""

    strategy: Literal["rolling", "blue-green", "canary"] = "rolling"
    max_surge: Annotated[int, Field(ge=0, le=1000)] = 1
    max_unavailable: Annotated[int, Field(ge=0, le=1000)] = 0
    canary_weights: tuple[Annotated[int, Field(ge=1, le=100)], ...] = (10, 50, 100)
    canary_pause: Duration = 30.0
    auto_rollback: bool = True


class Scale(Model):
    """Autoscaling bounds and target, read from the router's live counters."""

    min: Annotated[int, Field(ge=0)] = 1
    max: Annotated[int, Field(ge=1)] = 10
    target_inflight: Annotated[float, Field(gt=0)] | None = None
    target_rps: Annotated[float, Field(gt=0)] | None = None
    scale_in_window: Duration = 300.0


class Migrate(Model):
    """A one-off command run from the new image before any new instance takes traffic."""

    command: Argv
    timeout: Duration = 600.0
    rollback_data: bool = False


class Limits(Model):
    memory: Annotated[str, Field(pattern=r"^\d+[kmg]?$")] | None = None
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = None


class Service(Model):
    image: ImageRecipe = Field(default_factory=ImageRecipe)
    command: Argv = ()
    env: dict[EnvName, str] = Field(default_factory=dict)
    secrets: tuple[EnvName, ...] = ()
    port: Port | None = None
    replicas: Annotated[int, Field(ge=0, le=10000)] = 1
    health: HealthCheck | None = None
    route: Route | None = None
    deploy: DeployPolicy = Field(default_factory=DeployPolicy)
    volumes: dict[Name, AbsPath] = Field(default_factory=dict)
    stop_grace: Duration = 10.0
    # with no health check, how long a new instance must keep running before it counts (an app
    # that exits at once is not "deployed"), as Kubernetes' minReadySeconds
    min_ready: Annotated[Duration, Field(ge=0)] = 1.0
    scale: Scale | None = None
    migrate: Migrate | None = None
    limits: Limits = Field(default_factory=Limits)
    cap_add: tuple[Annotated[str, Field(pattern=r"^[A-Z_]+$")], ...] = ()
    drift: Literal["replace", "report", "ignore"] = "replace"
    quarantine_keep: Annotated[int, Field(ge=0, le=1000)] = 3


class Volume(Model):
    """Named data that lives outside every instance and survives every replacement."""

    description: str = ""
    snapshots_keep: Annotated[int, Field(ge=0, le=1000)] = 5


class Environment(Model):
    """A named target made from the same releases: its driver and replica overrides."""

    driver: Literal["process", "docker", "swarm", "kubernetes"] = "process"
    replicas: dict[Name, Annotated[int, Field(ge=0, le=10000)]] = Field(default_factory=dict)
    env: dict[EnvName, str] = Field(default_factory=dict)
    # REGISTRY/PREFIX: every deploy pushes its images to PREFIX/SERVICE, and the docker driver
    # runs them pulled from there, by digest
    registry: Annotated[str, Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+/[a-z0-9._/-]+$")] | None = None


class StackInfo(Model):
    name: Name
    environment: Name = "production"
    # how often the agent checks running instances against their image and release (0: never)
    verify_every: Duration = 300.0


class Stack(Model):
    """Everything one herd.toml declares."""

    stack: StackInfo
    service: dict[Name, Service]
    volume: dict[Name, Volume] = Field(default_factory=dict)
    environment: dict[Name, Environment] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.stack.name

    @property
    def services(self) -> dict[str, Service]:
        return self.service
