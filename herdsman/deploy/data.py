"""Putting data back: restoring a volume from a backup or a pre-migration snapshot, and finding the
migrations a rollback would not undo.

A restore never writes under running instances, and it keeps the time they are down short: the
new data is first copied and verified *beside* the volume while the instances keep serving from
the old data (`volumes.stage`); only then, under the deploy lock, do the instances of every service
that mounts the volume leave the router's pool, drain and stop; the staged copy is renamed into
the volume's place (`volumes.swap_in`) and instances are started again (the current release's,
or — for `herd rollback --restore-data` — the release rolled back to). Requests to those services
get the router's 503 only for the swap and a start, however big the copy. The old data is deleted
once the service runs again.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from herdsman.deploy.instances import volume_key
from herdsman.deploy.run import Deployment
from herdsman.deploy.target import route_name
from herdsman.deploy.volumes import snapshot_dir, stage, swap_in
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
            key = volume_key(deployment.env, volume)
            chosen.setdefault(volume, snapshot_dir(deployment.home, migration.release, key))
    return chosen


async def stop_users(deployment: Deployment, release: Release | None, volumes: set[str]) -> list[str]:
    """Take every instance of a service mounting one of ``volumes`` out of service (pool, drain,
    stop, each with its release's stop_grace); returns the services. The caller holds the lock."""
    services = []
    routed = {}
    if release is not None:
        for name, entry in release.services().items():
            config = entry.config
            if volumes & set(config.volumes):
                services.append(name)
                pools = deployment.executor.pools
                if pools is not None and config.route is not None:
                    await pools.set_pool(route_name(deployment.env, name), [])
                    routed[name] = config.route.drain_timeout
    selector = deployment.executor.target.selector
    users = [i for i in await deployment.driver.list(selector) if i.service in services]
    pools = deployment.executor.pools
    for name, timeout in routed.items():  # requests in flight finish before their instance stops
        addresses = [i.address for i in users if i.service == name and i.address]
        if pools is not None and addresses:
            await pools.drain(route_name(deployment.env, name), addresses, timeout)
    await asyncio.gather(*(deployment.driver.stop(i.id, deployment.stop_grace(i)) for i in users))
    return services


async def rollback(
    deployment: Deployment,
    to: int | None,
    *,
    restore_data: bool = False,
    wait: float = 0.0,
    secrets: Mapping[str, str] | None = None,
) -> Release:
    """`herd rollback [--restore-data]`: with ``restore_data``, the volumes later releases migrated
    get back the snapshot taken before the first such migration (see `snapshots_to_restore`)."""
    snapshots = {}
    if restore_data:
        snapshots = snapshots_to_restore(deployment, deployment.rollback_source(to).number)
    if not snapshots:
        return await deployment.rollback(to, wait=wait, secrets=secrets)
    return await rollback_with_data(deployment, to, snapshots, wait=wait, secrets=secrets)


async def rollback_with_data(
    deployment: Deployment,
    to: int | None,
    snapshots: Mapping[str, Path],
    *,
    wait: float = 0.0,
    secrets: Mapping[str, str] | None = None,
) -> Release:
    """`herd rollback --restore-data`: under one hold of the deploy lock, the instances using the
    volumes stop, each volume gets its snapshot back (volume -> snapshot), then the rollback."""
    from herdsman.deploy.volumes import restore

    with deployment.locked(wait):
        values = deployment.executor.target.secrets if secrets is None else secrets
        deployment.check(deployment.rollback_source(to).content, values)
        fills = {v: functools.partial(restore, snap) for v, snap in snapshots.items()}
        await restore_locked(deployment, fills, restart=False)
        return await deployment.rollback_locked(to, secrets=secrets)


async def restore_locked(
    deployment: Deployment, fills: Mapping[str, Callable[[Path], object]], *, restart: bool = True
) -> list[str]:
    """Stage each volume's new data (``fills``: volume -> fill(empty directory)), then stop the
    users of the volumes, swap the staged copies in and, with ``restart``, bring the current
    release back. The caller holds the deploy lock. Progress goes to the executor's `say`."""
    say = deployment.executor.say
    stack = deployment.project.stack_id
    staged: dict[str, tuple[Path, Path]] = {}
    try:
        for volume, fill in fills.items():
            directory = deployment.driver.volume_dir(stack, volume_key(deployment.env, volume))
            say(f"volume {volume}: copying the new data beside it (the service keeps running)")
            started = time.monotonic()
            staged[volume] = (await asyncio.to_thread(stage, fill, directory), directory)
            say(f"volume {volume}: new data staged and verified in {time.monotonic() - started:.1f}s")
        current = deployment.state.current_release(deployment.env)
        down = time.monotonic()
        services = await stop_users(deployment, current, set(fills))
        say(f"stopped {', '.join(services) or 'no service'}; swapping the data in")
        replaced = []
        for volume in list(staged):
            path, directory = staged.pop(volume)
            replaced.append(await asyncio.to_thread(swap_in, path, directory))
            deployment.state.event(deployment.env, "volume", f"volume {volume} restored", volumes=[volume])
    finally:
        for path, _ in staged.values():  # a failure before the swap: the volumes are unchanged
            await asyncio.to_thread(shutil.rmtree, path, True)
    if restart and current is not None:
        for step in await deployment.executor.plan(current):
            await deployment.executor.apply(step, current)
        say(f"{', '.join(services) or 'nothing'} back after {time.monotonic() - down:.1f}s")
    for old in replaced:
        if old is not None:
            await asyncio.to_thread(shutil.rmtree, old, True)
    return services
