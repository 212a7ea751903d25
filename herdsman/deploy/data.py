"""Putting data back: restoring a volume from a backup or a pre-migration snapshot, and finding the
migrations a rollback would not undo.

A restore never writes under running instances: under the deploy lock, the instances of every
service that mounts the volume leave the router's pool, drain and stop; the volume is filled; then
instances are started again (the current release's, or — for `herd rollback --restore-data` — the
release rolled back to). Requests to those services get the router's 503 meanwhile: a restore
replaces the data the instances stand on, so it cannot be invisible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from herdsman.deploy.execute import route_name
from herdsman.deploy.release import service_config
from herdsman.deploy.run import Deployment
from herdsman.deploy.volumes import snapshot_dir
from herdsman.state import Release


@dataclass(frozen=True)
class Migration:
    release: int
    service: str
    volumes: tuple[str, ...]


def migrations_after(deployment: Deployment, release: int) -> list[Migration]:
    """Migrations that ran (and succeeded) for releases newer than ``release``, oldest first."""
    out = []
    for event in deployment.state.events(deployment.env, limit=100000):
        number = event["release"] or 0
        if event["kind"] == "migrate" and number > release and event["message"].endswith("done"):
            out.append(Migration(number, event["service"], tuple(event["data"].get("volumes", []))))
    return sorted(out, key=lambda m: m.release)


def snapshots_to_restore(deployment: Deployment, release: int) -> dict[str, Path]:
    """For a rollback to ``release``: each volume's snapshot from the first migration after it
    (the data as it was before any of them ran)."""
    chosen: dict[str, Path] = {}
    for migration in migrations_after(deployment, release):
        for volume in migration.volumes:
            chosen.setdefault(volume, snapshot_dir(deployment.home, migration.release, volume))
    return chosen


async def stop_users(deployment: Deployment, release: Release | None, volumes: set[str]) -> list[str]:
    """Take every instance of a service mounting one of ``volumes`` out of service (pool, drain,
    stop); returns the services. The caller holds the deploy lock."""
    services = []
    if release is not None:
        for name, entry in release.services().items():
            config = service_config(entry)
            if volumes & set(config.volumes):
                services.append(name)
                pools = deployment.executor.pools
                if pools is not None and config.route is not None:
                    await pools.set_pool(route_name(deployment.env, name), [])
    labels = {"herd.stack": deployment.project.stack.name, "herd.env": deployment.env}
    users = [i for i in await deployment.driver.list(labels) if i.service in services]
    await asyncio.gather(*(deployment.driver.stop(i.id, deployment.stop_grace(i)) for i in users))
    return services


async def restore_locked(
    deployment: Deployment, fills: Mapping[str, Callable[[Path], object]], *, restart: bool = True
) -> list[str]:
    """Stop the users of the volumes, fill each volume (``fills``: volume -> fill(directory)),
    then, with ``restart``, bring the current release back. The caller holds the deploy lock."""
    current = deployment.state.current_release(deployment.env)
    services = await stop_users(deployment, current, set(fills))
    for volume, fill in fills.items():
        directory = deployment.driver.volume_dir(deployment.project.stack.name, volume)
        await asyncio.to_thread(fill, directory)
        deployment.state.event(deployment.env, "volume", f"volume {volume} restored", volumes=[volume])
    if restart and current is not None:
        for step in await deployment.executor.plan(current):
            await deployment.executor.apply(step, current)
    return services
