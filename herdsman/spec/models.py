"""The frozen models a herd.toml is parsed into, once, at the edge.

Every model rejects unknown keys (a typo such as ``replica = 3`` must not silently mean the default).
Field names are the TOML keys, so a validation error's location *is* the key path a user types.
Cross-field rules (a volume used but not declared, two routes on one address) live in
``spec.rules`` so each can name the exact key it is about.

Values that would pass a type check but fail later are refused here too (issue 14): one-line
values (paths, bases, addresses) hold no control character and `health.path` and `route.host`
follow `spec.checks`; a duration is at most 30 days, and 0 only where it means "at once" or
"never" (`PositiveDuration` elsewhere); a driver must be an installed `herdsman.drivers` entry
point, read by name only so that the spec never imports a driver.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
from functools import cache
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from herdsman.spec.checks import Invalid, host_name, http_path, one_line, quoted
from herdsman.spec.durations import format_duration, parse_duration
from herdsman.spec.placement import Placement

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,40}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise Invalid(
            "a duration of 0 makes no sense here",
            'give it a length, such as "250ms" or "1s" (0 would make it spin or fail at once)',
        )
    return seconds


# Seconds inside; written back as "250ms"/"2m" in JSON, so a dumped config parses again unchanged.
# At most 30 days (durations.MAX_SECONDS); 0 is allowed where it means "at once" or "never".
Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, when_used="json")
]
# A duration where 0 makes no sense (a check interval, a timeout, a deadline).
PositiveDuration = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    PlainSerializer(format_duration, when_used="json"),
]
Line = Annotated[str, AfterValidator(one_line)]
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
    one_line(value)
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path inside the instance, such as /data")
    if any(part == ".." for part in value.split("/")):
        raise ValueError(f"{value!r} must not contain '..'")
    return value.rstrip("/") or "/"


def _copy_dest(value: str) -> str:
    """An absolute path that keeps one trailing "/": it says "into this directory" (Docker's COPY)."""
    path = _absolute_path(value)
    return path + "/" if value.endswith("/") and path != "/" else path


Argv = Annotated[tuple[str, ...], BeforeValidator(_argv)]
AbsPath = Annotated[str, AfterValidator(_absolute_path)]
CopyDest = Annotated[str, AfterValidator(_copy_dest)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False, populate_by_name=True)


class CopyStep(Model):
    """Files from the project (``src``, relative to herd.toml) into the image at ``dest``, as
    Docker's COPY: a directory's contents go into ``dest``; a file goes into ``dest`` when it ends
    with "/", and is otherwise renamed to ``dest``."""

    src: Line = "."
    dest: CopyDest = "/app"


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

    base: Annotated[str, AfterValidator(one_line), AfterValidator(_base)] = "host"
    packages: tuple[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.+-]+(=[^\s]+)?$")], ...] = ()
    requirements: Line | None = None
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
    labels: dict[Line, str] = Field(default_factory=dict)
    annotations: dict[Line, str] = Field(default_factory=dict)


class HealthCheck(Model):
    """How to tell an instance is ready (admission) and still alive (ejection)."""

    type: Literal["http", "tcp", "command"] = "http"
    path: Annotated[str, AfterValidator(http_path)] = "/healthz"  # sent in the probe's request line
    status: Annotated[int, Field(ge=100, le=599)] = 200
    command: Argv = ()
    interval: PositiveDuration = 1.0
    timeout: PositiveDuration = 1.0
    successes: Annotated[int, Field(ge=1, le=100)] = 1
    failures: Annotated[int, Field(ge=1, le=100)] = 3
    deadline: PositiveDuration = 60.0


class Route(Model):
    """A stable address in front of the service's pool."""

    listen: Line = "127.0.0.1:8080"
    host: Annotated[str, AfterValidator(host_name)] | None = None  # lower-cased, as the router compares
    drain_timeout: Duration = 30.0  # 0: in-flight requests are not waited for
    # From the request fully sent to the first byte of the response: past it, the router gives up
    # on that instance (an idempotent request is retried elsewhere, another gets a 504), so a hung
    # instance holds no request, and no drain, for longer than this.
    first_byte_timeout: Annotated[Duration, Field(gt=0)] = 30.0


class DeployPolicy(Model):
    """How a new release replaces the old one."""

    strategy: Literal["rolling", "blue-green", "canary"] = "rolling"
    max_surge: Annotated[int, Field(ge=0, le=1000)] = 1
    max_unavailable: Annotated[int, Field(ge=0, le=1000)] = 0
    canary_weights: tuple[Annotated[int, Field(ge=1, le=100)], ...] = (10, 50, 100)
    canary_pause: Duration = 30.0  # 0: no pause between steps
    auto_rollback: bool = True


class Canary(Model):
    """How a canary's verdict is reached (`strategy = "canary"`, see deploy/verdict.py): at the end
    of each `canary_pause` the new release's instances are compared with the current release's
    over the same window."""

    max_error_increase: Annotated[float, Field(ge=0, le=1)] = 0.01  # 0.01: one point of error rate
    max_latency_ratio: Annotated[float, Field(gt=1)] = 1.5  # canary p50 or p99 over the baseline's
    min_latency_increase: Duration = 0.002  # and at least this much slower (below it: noise)
    min_requests: Annotated[int, Field(ge=1)] = 50  # on each side, before any verdict
    max_wait: Duration = 300.0  # a step short of traffic holds this long, then too_little_traffic
    too_little_traffic: Literal["fail", "pass"] = "fail"
    on_fail: Literal["stop", "quarantine"] = "stop"  # quarantine: keep a failed canary for a post-mortem
    # what the canary is compared with: "fresh" instances of the serving release started for it at
    # its weight (as warm as the canary), where the pool allows; "serving": the instances serving
    baseline: Literal["fresh", "serving"] = "fresh"
    # custom checks (the health check's kinds: http, tcp, command run inside the instance), run
    # against every canary instance at the end of each step; one failing fails the canary
    checks: tuple[HealthCheck, ...] = ()


class Scale(Model):
    """Autoscaling bounds and target, read from the router's live counters."""

    min: Annotated[int, Field(ge=0)] = 1
    max: Annotated[int, Field(ge=1)] = 10
    target_inflight: Annotated[float, Field(gt=0)] | None = None
    target_rps: Annotated[float, Field(gt=0)] | None = None
    scale_in_window: Duration = 300.0  # 0: scale in as soon as the load allows


class Migrate(Model):
    """A one-off command run from the new image before any new instance takes traffic."""

    command: Argv
    timeout: PositiveDuration = 600.0
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
    canary: Canary = Field(default_factory=Canary)
    volumes: dict[Name, AbsPath] = Field(default_factory=dict)
    stop_grace: Duration = 10.0  # 0: SIGKILL at once
    # with no health check, how long a new instance must keep running before it counts (an app
    # that exits at once is not "deployed"), as Kubernetes' minReadySeconds
    min_ready: Annotated[Duration, Field(ge=0)] = 1.0
    scale: Scale | None = None
    migrate: Migrate | None = None
    limits: Limits = Field(default_factory=Limits)
    cap_add: tuple[Annotated[str, Field(pattern=r"^[A-Z_]+$")], ...] = ()
    drift: Literal["replace", "report", "ignore"] = "replace"
    quarantine_keep: Annotated[int, Field(ge=0, le=1000)] = 3
    placement: Placement | None = None  # which nodes (swarm); spec/placement.py


class Volume(Model):
    """Named data that lives outside every instance and survives every replacement."""

    description: str = ""
    snapshots_keep: Annotated[int, Field(ge=0, le=1000)] = 5


@cache
def known_drivers() -> tuple[str, ...]:
    """The driver names installed (entry points of the group ``herdsman.drivers``); read as names
    only, so the spec never imports a driver. ``process``, the embedded default, is always known."""
    names = {ep.name for ep in importlib.metadata.entry_points(group="herdsman.drivers")}
    return tuple(sorted(names | {"process"}))


def _driver(name: str) -> str:
    known = known_drivers()
    if name not in known:
        raise Invalid(
            f"there is no driver {quoted(name)}",
            f"known drivers: {', '.join(known)} (a driver is installed as a `herdsman.drivers` entry point)",
        )
    return name


class Environment(Model):
    """A named target made from the same releases: its driver and replica overrides."""

    driver: Annotated[str, AfterValidator(_driver)] = "process"
    replicas: dict[Name, Annotated[int, Field(ge=0, le=10000)]] = Field(default_factory=dict)
    env: dict[EnvName, str] = Field(default_factory=dict)
    # REGISTRY/PREFIX: every deploy pushes its images to PREFIX/SERVICE, and the docker driver
    # runs them pulled from there, by digest
    registry: Annotated[str, Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+/[a-z0-9._/-]+$")] | None = None
    # the Docker engine of the swarm driver (e.g. "unix:///run/herd-swarm/docker.sock"); unset:
    # DOCKER_HOST, else the default engine
    docker_host: Annotated[str, Field(pattern=r"^(unix|tcp|ssh)://\S+$")] | None = None


ROUTER_ENGINES = ("embedded", "haproxy")


def _engine(name: str) -> str:
    if name not in ROUTER_ENGINES:
        raise Invalid(
            f"there is no router engine {quoted(name)}",
            'engine = "embedded" (the default, nothing to install) or "haproxy" (HAProxy >= 2.6 on PATH)',
        )
    return name


MAX_ROUTER_WORKERS = 64


def _workers(value: object) -> int | str:
    """`workers`: a count of processes (1..64) or "auto" (one per core this machine gives us)."""
    if value == "auto" or (type(value) is int and 1 <= value <= MAX_ROUTER_WORKERS):
        return value
    raise Invalid(
        f'workers must be a whole number from 1 to {MAX_ROUTER_WORKERS} or "auto", not {quoted(str(value))}',
        'workers = 2 (two router processes sharing the listeners), or workers = "auto" (one per core)',
    )


class RouterSettings(Model):
    """Which data plane serves the routes: herdsman's embedded router, or a HAProxy it runs and drives;
    and for the embedded one, how many processes share its listeners (SO_REUSEPORT workers)."""

    engine: Annotated[str, AfterValidator(_engine)] = "embedded"
    workers: Annotated[int | str, BeforeValidator(_workers)] = 1

    @model_validator(mode="after")
    def _workers_are_embedded(self) -> RouterSettings:
        if self.engine != "embedded" and self.workers != 1:
            raise Invalid(
                f"workers is the embedded router's setting, and engine is {quoted(self.engine)}",
                'remove workers (HAProxy runs its own threads), or use engine = "embedded"',
            )
        return self

    def worker_count(self) -> int:
        """How many router processes to run: "auto" is the cores this process may run on."""
        if self.workers == "auto":
            return max(1, min(MAX_ROUTER_WORKERS, len(os.sched_getaffinity(0))))
        return int(self.workers)


class StackInfo(Model):
    name: Name
    environment: Name = "production"
    # how often the agent checks running instances against their image and release (0: never)
    verify_every: Duration = 300.0


class Retention(Model):
    """What `herd prune` (and the agent, every `prune_every`) keeps; the rest is deleted."""

    releases: Annotated[int, Field(ge=1, le=10000)] = 10  # the images of the last N releases per environment
    failed_for: Duration = 7 * 86400.0  # a failed release's images, for a post-mortem
    logs_for: Duration = 14 * 86400.0  # logs of instances gone for longer are deleted
    grace: Duration = 180.0  # a blob younger than this is never deleted (a bake in progress)
    prune_every: Duration = 6 * 3600.0  # how often a running agent prunes (0: never; `herd prune` by hand)


class Previews(Model):
    """Short-lived environments (`herd preview create`): how long one lives unless told, and how
    many may exist at once (the agent removes expired ones; a create past `max` is refused)."""

    ttl: PositiveDuration = 2 * 3600.0
    max: Annotated[int, Field(ge=0, le=1000)] = 5  # 0: no previews


class Stack(Model):
    """Everything one herd.toml declares."""

    stack: StackInfo
    service: dict[Name, Service]
    volume: dict[Name, Volume] = Field(default_factory=dict)
    environment: dict[Name, Environment] = Field(default_factory=dict)
    retention: Retention = Field(default_factory=Retention)
    preview: Previews = Field(default_factory=Previews)
    router: RouterSettings = Field(default_factory=RouterSettings)

    @property
    def name(self) -> str:
        return self.stack.name

    @property
    def services(self) -> dict[str, Service]:
        return self.service
