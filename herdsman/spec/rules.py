"""Rules that span several keys, each reported at the exact key it is about.

Pydantic checks one field at a time; these need the whole stack (is this volume declared? does
another route already listen there?). They return problems instead of raising, so `herd check`
shows every mistake in one run.
"""

from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath

from herdsman.errors import Problem
from herdsman.spec.models import Service, Stack
from herdsman.spec.placement_rules import placement_problems, placement_warnings


def check_stack(stack: Stack) -> list[Problem]:
    problems: list[Problem] = []
    if not stack.service:
        problems.append(Problem("service", "the stack declares no service", "add a [service.web] table"))
    routes: dict[tuple[str, str], str] = {}
    for name, service in stack.service.items():
        key = f"service.{name}"
        problems += _check_service(key, service, stack)
        if service.route is not None:
            problems += _check_listen(f"{key}.route.listen", service.route.listen)
            address = (service.route.listen, (service.route.host or "").lower())
            if address in routes:
                problems.append(
                    Problem(
                        f"{key}.route",
                        f"route {service.route.listen}"
                        + (f" host {service.route.host}" if service.route.host else "")
                        + f" is already used by service.{routes[address]}.route",
                        "give each route its own listen address, or tell them apart with `host`",
                    )
                )
            else:
                routes[address] = name
    for env_name, env in stack.environment.items():
        for service_name in env.replicas:
            if service_name not in stack.service:
                problems.append(
                    Problem(
                        f"environment.{env_name}.replicas.{service_name}",
                        f"there is no service {service_name!r}",
                        f"known services: {', '.join(sorted(stack.service)) or 'none'}",
                    )
                )
    return problems + placement_problems(stack)


def _check_service(key: str, service: Service, stack: Stack) -> list[Problem]:
    problems: list[Problem] = []
    deploy = service.deploy
    if deploy.strategy == "canary" and service.route is None:
        problems.append(
            Problem(
                f"{key}.deploy.strategy",
                "a canary is judged on the traffic the router sends it, and this service has no route",
                'add [service.NAME.route], or use strategy = "rolling"',
            )
        )
    if deploy.max_surge == 0 and deploy.max_unavailable == 0:
        problems.append(
            Problem(
                f"{key}.deploy",
                "max_surge and max_unavailable are both 0, so no instance could ever be replaced",
                "set max_surge = 1 (start a new instance before stopping an old one)",
            )
        )
    weights = deploy.canary_weights
    if list(weights) != sorted(weights) or weights[-1:] != (100,):
        problems.append(
            Problem(
                f"{key}.deploy.canary_weights",
                f"canary weights {list(weights)} must rise and end at 100",
                "for example [10, 50, 100]",
            )
        )
    mounts: dict[str, str] = {}
    for volume, mount in service.volumes.items():
        if volume not in stack.volume:
            problems.append(
                Problem(
                    f"{key}.volumes.{volume}",
                    f"volume {volume!r} is used but not declared",
                    f"add a [volume.{volume}] table to herd.toml",
                )
            )
        if mount == "/" or mount in mounts:
            problems.append(
                Problem(
                    f"{key}.volumes.{volume}",
                    f"mount path {mount!r} is "
                    + ("the root" if mount == "/" else f"already used by volume {mounts[mount]!r}"),
                    "mount each volume at its own directory, such as /data",
                )
            )
        mounts[mount] = volume
    recipe = service.image
    if recipe.packages and not recipe.base.startswith("debian:"):
        problems.append(
            Problem(
                f"{key}.image.packages",
                f"packages can only be installed on a debian base, not on {recipe.base!r}",
                'use base = "debian:bookworm", or remove packages',
            )
        )
    for index, step in enumerate(recipe.copy_steps):
        src = PurePosixPath(step.src)
        if src.is_absolute() or ".." in src.parts:
            problems.append(
                Problem(
                    f"{key}.image.copy[{index}].src",
                    f"{step.src!r} must be a path inside the project, relative to herd.toml",
                    "an image is baked from the project's files only, so that it can be reproduced",
                )
            )
    if recipe.requirements is not None:
        req = PurePosixPath(recipe.requirements)
        if req.is_absolute() or ".." in req.parts:
            problems.append(
                Problem(
                    f"{key}.image.requirements",
                    f"{recipe.requirements!r} must be a file inside the project, relative to herd.toml",
                    "an image is baked from the project's files only, so that it can be reproduced",
                )
            )
    for index, check in enumerate(service.canary.checks):
        if check.type == "command" and not check.command:
            problems.append(
                Problem(
                    f"{key}.canary.checks[{index}].command",
                    "a command check needs a command (run inside a canary instance)",
                    'command = ["python3", "check.py"]',
                )
            )
        elif check.type in ("http", "tcp") and service.port is None:
            problems.append(
                Problem(
                    f"{key}.canary.checks[{index}].type",
                    f"an {check.type} check needs the service's port",
                    'set port = 8000, or type = "command"',
                )
            )
    health = service.health
    if health is not None:
        if health.type == "command" and not health.command:
            problems.append(
                Problem(
                    f"{key}.health.command", "a command health check needs a command", 'command = ["true"]'
                )
            )
        if health.type in ("http", "tcp") and service.port is None:
            problems.append(
                Problem(
                    f"{key}.port",
                    f"an {health.type} health check needs the service's port",
                    "set port = 8000 (the app must listen on $PORT, which herdsman sets per instance)",
                )
            )
        if health.timeout > health.interval:
            problems.append(
                Problem(
                    f"{key}.health.timeout",
                    "the health timeout is longer than its interval",
                    'make timeout at most the interval, e.g. interval = "2s", timeout = "1s"',
                )
            )
    if service.route is not None and service.port is None:
        problems.append(
            Problem(f"{key}.port", "a routed service needs a port", "set port = 8000 next to [route]")
        )
    if service.scale is not None:
        scale = service.scale
        if scale.min > scale.max:
            problems.append(
                Problem(
                    f"{key}.scale.min", f"min {scale.min} is above max {scale.max}", "make min at most max"
                )
            )
        if (scale.target_inflight is None) == (scale.target_rps is None):
            problems.append(
                Problem(
                    f"{key}.scale",
                    "set exactly one of target_inflight and target_rps",
                    "target_inflight = 10 keeps about 10 requests in flight per instance",
                )
            )
    # a base of its own (a registry image, an OCI layout, a docker archive) may bring an entrypoint
    # and a command, which the bake inherits; whether one is there is known only then (deploy says)
    own_config = recipe.base in ("scratch", "host") or recipe.base.startswith("debian:")
    if not service.command and not recipe.entrypoint and own_config:
        problems.append(
            Problem(
                f"{key}.command",
                "the service has no command and its image no entrypoint: nothing would run",
                'command = ["python3", "app.py"]',
            )
        )
    return problems


def _check_listen(key: str, listen: str) -> list[Problem]:
    host, sep, port = listen.rpartition(":")
    hint = 'write host:port, such as "127.0.0.1:8080" or "[::1]:8080"'
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return [Problem(key, f"{listen!r} is not an address with a port", hint)]
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return [Problem(key, f"{host!r} is not an IP address", hint)]
    return []


def stack_warnings(stack: Stack) -> list[Problem]:
    """What is allowed but worth a second look (`herd check` prints it and still succeeds): a route
    that listens beyond loopback. Routes are loopback unless explicit, so a wider one is named."""
    warnings: list[Problem] = []
    for name, service in sorted(stack.service.items()):
        if service.route is None:
            continue
        host = service.route.listen.rpartition(":")[0].strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue  # an error, reported by check_stack
        if address.is_loopback:
            continue
        where = (
            "every address of this machine"
            if address.is_unspecified
            else "an address other machines may reach"
        )
        warnings.append(
            Problem(
                f"service.{name}.route.listen",
                f"route listens on {service.route.listen}: {where}, not only loopback",
                "routes are loopback unless explicit: keep it if it is meant to be reachable, "
                'else listen = "127.0.0.1:PORT"',
            )
        )
    return warnings + placement_warnings(stack)
