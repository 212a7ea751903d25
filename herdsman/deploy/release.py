"""What a release records, built purely from the parsed stack and the baked image digests.

A release holds, per service, the image digest and the resolved run config (command, env, port,
replicas, health, route, deploy policy, volumes). Secrets appear by name only: their values are
read from the deployer's environment when an instance starts, and never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from herdsman.spec import Project


def release_content(project: Project, env: str, images: Mapping[str, str]) -> dict[str, Any]:
    stack = project.stack
    environment = stack.environment.get(env)
    services: dict[str, Any] = {}
    for name, service in sorted(stack.service.items()):
        config = service.model_dump(mode="json", by_alias=True, exclude={"image"})
        if config.get("placement") is None:  # unset: the same content as before placement existed
            config.pop("placement", None)
        if environment is not None:
            config["env"] = {**environment.env, **config["env"]}
            if name in environment.replicas:
                config["replicas"] = environment.replicas[name]
        services[name] = {
            "image": images[name],
            "image_spec": project.image_spec_digest(name),
            "config": config,
        }
    return {
        "stack": stack.name,
        "env": env,
        "driver": environment.driver if environment is not None else "process",
        "services": services,
        "volumes": sorted(stack.volume),
    }


def changed_keys(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Which service images and config keys differ between two release contents (for `herd releases`)."""
    if old is None:
        return ["everything (first release)"]
    changes: list[str] = []
    old_services = old.get("services", {})
    for name, entry in new.get("services", {}).items():
        before = old_services.get(name)
        if before is None:
            changes.append(f"{name} (new service)")
            continue
        if before["image"] != entry["image"]:
            changes.append(f"{name}.image")
        for key in sorted(set(entry["config"]) | set(before["config"])):
            if entry["config"].get(key) != before["config"].get(key):
                changes.append(f"{name}.{key}")
    changes += [f"{name} (removed)" for name in old_services if name not in new.get("services", {})]
    return changes
