"""From a release's service entry and its image config to the `InstanceSpec` a driver starts. Pure.

The image says how to run (entrypoint, cmd, env, workdir, user); the release says with which config
(service env, secrets by name, volumes). Per-instance values — HERD_INSTANCE, HERD_RELEASE,
HERD_SERVICE, HERD_ENV, and PORT (set by the driver) — are the only things decided at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from herdsman.drivers.base import InstanceSpec, VolumeMount
from herdsman.errors import DeployError
from herdsman.spec import Service
from herdsman.state import ServiceRelease

PREVIEW_PREFIX = "preview-"


def is_preview(env: str) -> bool:
    """A short-lived environment made by `herd preview create` (deploy/preview.py)."""
    return env.startswith(PREVIEW_PREFIX)


def volume_key(env: str, name: str) -> str:
    """The name volume ``name`` has on a driver in ``env``. Volumes are per stack, so every long-lived
    environment keeps sharing them and production's names and paths never change; a preview's are its
    own: "preview-NAME.VOLUME" (a "." is in no declared volume's name, so it never meets one)."""
    return f"{env}.{name}" if is_preview(env) else name


def log_root(home: Path, env: str) -> Path:
    """Where instances of ``env`` write their logs: `.herd/logs` (SERVICE/INSTANCE.log below it), a
    preview's under `.herd/logs/@preview-NAME`, which no service name can be (so `herd logs` and
    `herd prune` of the stack never see them; they go with the preview)."""
    return home / "logs" / f"@{env}" if is_preview(env) else home / "logs"


def id_base(env: str, service: str) -> str:
    """What instance ids of ``service`` in ``env`` start with: a preview's name its environment, so
    they never meet production's on a driver (ids are unique per driver, not per environment)."""
    return f"{env}-{service}" if is_preview(env) else service


def instance_spec(
    *,
    instance_id: str,
    stack: str,
    stack_id: str,
    env_name: str,
    service: str,
    release: int,
    entry: ServiceRelease,
    image_config: Mapping[str, Any],
    home: Path,
    secrets: Mapping[str, str],
) -> InstanceSpec:
    config = entry.config
    run = image_config.get("config") or {}
    command = list(config.command) or list(run.get("Cmd") or [])
    argv = list(run.get("Entrypoint") or []) + command
    if not argv:
        raise DeployError(f"service {service!r} has nothing to run", hint="set `command` in herd.toml")
    env: dict[str, str] = {}
    for pair in run.get("Env") or []:
        key, _, value = str(pair).partition("=")
        env[key] = value
    env.update(config.env)
    for name in config.secrets:
        if name not in secrets:
            raise DeployError(
                f"secret {name} of service {service!r} is not set",
                hint=f"export {name}=... in the environment that runs herd (secrets are never stored)",
            )
        env[name] = secrets[name]
    env.update(
        {
            "HERD_INSTANCE": instance_id,
            "HERD_RELEASE": str(release),
            "HERD_SERVICE": service,
            "HERD_ENV": env_name,
        }
    )
    labels = {
        "herd.stack": stack,
        "herd.stack-id": stack_id,
        "herd.env": env_name,
        "herd.service": service,
        "herd.release": str(release),
        "herd.instance": instance_id,
        "herd.image": entry.image,
    }
    volumes = tuple(
        VolumeMount(volume_key(env_name, name), home / "volumes" / volume_key(env_name, name), target)
        for name, target in sorted(config.volumes.items())
    )
    return InstanceSpec(
        id=instance_id,
        image=entry.image,
        labels=labels,
        argv=tuple(argv),
        env=env,
        workdir=str(run.get("WorkingDir") or "/"),
        user=str(run.get("User") or ""),
        volumes=volumes,
        stop_grace=config.stop_grace,
        log_file=log_root(home, env_name) / service / f"{instance_id}.log",
        wants_port=config.port is not None,
        secrets=tuple(config.secrets),
        cap_add=tuple(config.cap_add),
        memory=config.limits.memory,
        cpus=config.limits.cpus,
        placement=config.placement,
        needs_exec=needs_exec(config),
    )


def needs_exec(config: Service) -> bool:
    """Its health check or a canary check runs a command inside the instance."""
    checks = ([config.health] if config.health else []) + list(config.canary.checks)
    return any(check.type == "command" for check in checks)
