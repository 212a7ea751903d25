"""What a preview runs, purely: its name and environment, its release content (a release's exact
images and config, with its own routes and replica count), and whether it has expired.

A preview (`herd preview create NAME`) is the environment `preview-NAME`: production's bytes on
their own instances, volumes (deploy/instances.py: `volume_key`), logs and route. Its route is
its own address (a free 127.0.0.1 port per routed service), never production's listener, so
nothing a preview does can reach production's routes. Only the route, the replica count and the
autoscaling differ from the release it is made from: the images are the same digests.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from herdsman.deploy.instances import PREVIEW_PREFIX, is_preview
from herdsman.errors import DeployError

NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


def preview_env(name: str) -> str:
    """The environment of preview ``name`` (the name checked first)."""
    if not NAME.match(name):
        raise DeployError(
            f"{name!r} is not a preview name",
            hint="lower-case letters, digits and '-', starting with a letter, at most 31 characters "
            "(e.g. pr-42)",
        )
    return PREVIEW_PREFIX + name


def preview_name(env: str) -> str:
    return env.removeprefix(PREVIEW_PREFIX) if is_preview(env) else env


def routed(content: Mapping[str, Any]) -> list[str]:
    """The services of a release's content that have a route."""
    return sorted(n for n, e in content.get("services", {}).items() if e["config"].get("route"))


def preview_content(
    content: Mapping[str, Any], env: str, routes: Mapping[str, str], replicas: Mapping[str, int]
) -> dict[str, Any]:
    """``content`` (a release's, or the working tree's) as preview ``env`` runs it: every routed
    service listens on its own address from ``routes`` (no Host rule: the address is the preview's
    alone), runs ``replicas`` instances where given, and does not autoscale. Images are untouched."""
    out = copy.deepcopy(dict(content))
    out["env"] = env
    for name, entry in out.get("services", {}).items():
        config = entry["config"]
        if config.get("route"):
            if name not in routes:
                raise DeployError(f"preview {env}: no address was chosen for the route of {name!r}")
            config["route"] = {**config["route"], "listen": routes[name], "host": None}
        if name in replicas:
            config["replicas"] = replicas[name]
        config["scale"] = None
    return out


def expired(row: Mapping[str, Any], now: float) -> bool:
    return float(row["expires"]) <= now


def refusal(env: str, row: Mapping[str, Any] | None, now: float) -> DeployError | None:
    """Why nothing may be rolled out to preview ``env`` now (None: it may)."""
    name = preview_name(env)
    if row is None:
        return DeployError(
            f"there is no preview {name!r} (environment {env})",
            hint=f"`herd preview create {name}` makes it; `herd preview ls` lists them",
        )
    if expired(row, now):
        return DeployError(
            f"preview {name!r} expired {now - float(row['expires']):.0f}s ago: nothing is deployed to it",
            hint=f"it is being removed; `herd preview create {name}` makes a fresh one",
        )
    return None
