"""What a preview runs, purely: its name and environment, its release content (a release's exact
images and config, with its own routes and replica count), and whether it has expired.

A preview (`herd preview create NAME`) is the environment `preview-NAME`: production's bytes on
their own instances, volumes (deploy/instances.py: `volume_key`), logs and route. Its route is
its own: a free 127.0.0.1 port per routed service, or (`--host`) a Host rule
`NAME.preview.localhost` on production's listener, which the router matches before the listener's
route without a host; production's own route entries never change. Only the route, the replica
count and the autoscaling differ from the release it is made from: the images are the same digests.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

from herdsman.deploy.instances import PREVIEW_PREFIX, is_preview
from herdsman.errors import DeployError, HerdError
from herdsman.spec.durations import parse_duration

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


def port_routes(content: Mapping[str, Any], free: Callable[[], str]) -> dict[str, dict[str, Any]]:
    """Each routed service on an address of its own (``free()``: a free 127.0.0.1:PORT)."""
    return {service: {"listen": free(), "host": None} for service in routed(content)}


def host_routes(content: Mapping[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """Each routed service on the listener of ``content``'s route, for Host NAME.preview.localhost
    (a name every browser and curl resolve to loopback)."""
    return {
        service: {
            "listen": content["services"][service]["config"]["route"]["listen"],
            "host": preview_host(name),
        }
        for service in routed(content)
    }


def preview_host(name: str) -> str:
    return f"{name}.preview.localhost"


def url_of(route: Mapping[str, Any]) -> str:
    """Where a person reaches a preview's route."""
    listen = str(route["listen"])
    if route.get("host"):
        return f"http://{route['host']}:{listen.rpartition(':')[2]}/"
    return f"http://{listen}/"


def preview_content(
    content: Mapping[str, Any],
    env: str,
    routes: Mapping[str, Mapping[str, Any]],
    replicas: Mapping[str, int],
) -> dict[str, Any]:
    """``content`` (a release's, or the working tree's) as preview ``env`` runs it: every routed
    service on its own route from ``routes`` (listen, host), ``replicas`` instances where given,
    no autoscaling. Images are untouched."""
    out = copy.deepcopy(dict(content))
    out["env"] = env
    for name, entry in out.get("services", {}).items():
        config = entry["config"]
        if config.get("route"):
            if name not in routes:
                raise DeployError(f"preview {env}: no route was chosen for {name!r}")
            own = routes[name]
            config["route"] = {**config["route"], "listen": own["listen"], "host": own.get("host")}
        if name in replicas:
            config["replicas"] = replicas[name]
        config["scale"] = None
    return out


def kept(row: Mapping[str, Any], now: float) -> bool:
    """Whether the preview is kept now (`herd preview keep`): for good, or until its keep ends."""
    if not row.get("kept"):
        return False
    until = row.get("kept_until")
    return until is None or float(until) > now


def expired(row: Mapping[str, Any], now: float) -> bool:
    """Past its time to live and not kept: the next expiry round removes it."""
    return float(row["expires"]) <= now and not kept(row, now)


def keep_until(duration: str | None, forever: bool, now: float) -> float | None:
    """When a keep asked for ``duration`` (e.g. "2h") or ``forever`` ends (None: never)."""
    example = "e.g. `herd preview keep NAME --for 2h`, or `--forever`"
    if forever == (duration is not None):
        raise DeployError("say how long to keep the preview: --for DURATION or --forever", hint=example)
    if duration is None:
        return None
    try:
        seconds = parse_duration(duration)
    except (ValueError, HerdError) as exc:
        raise DeployError(f"--for {duration}: {exc}", hint=example) from None
    if seconds <= 0:
        raise DeployError(f"--for {duration}: a keep needs a time, such as 30m or 2h", hint=example)
    return now + seconds


def no_such(name: str, names: list[str]) -> DeployError:
    """There is no preview ``name``: say which there are."""
    there = f"the previews are {', '.join(names)}" if names else "there is no preview at all"
    return DeployError(
        f"there is no preview {name!r}: {there}",
        hint=f"`herd preview ls` lists them; `herd preview create {name}` makes it",
    )


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
