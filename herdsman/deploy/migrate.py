"""The data step of a deploy: `[service.NAME.migrate]`, run once, from the new image, guarded.

After the new image is baked and before any new instance takes traffic, each volume the service
can write is snapshotted (`volumes.snapshot`), then the migration runs as a one-off instance of
the *new* image with the service's volumes and config, its output in the log store under the new
release. If it fails (non-zero exit, or past its timeout), every snapshot is restored byte for byte
and the deploy stops: no new instance was started, so the old release serves on, on its own data.

The one-off instance carries the environment label `ENV-migrate`, so neither a rollout's plan nor
the agent counts it as an instance of the service. Migrations run on `herd deploy` only: not on
a rollback (an old release's migration must not run over newer data) nor when a rollout resumes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from herdsman.deploy.instances import id_base, volume_key
from herdsman.deploy.target import Target, log_tail
from herdsman.deploy.volumes import restore, snapshot, snapshot_dir
from herdsman.drivers.base import Driver
from herdsman.errors import DeployError
from herdsman.state import Release, ServiceRelease, StateStore


@dataclasses.dataclass(frozen=True)
class Migrated:
    service: str
    snapshots: dict[str, Path]  # volume -> its snapshot taken before the migration


class Migrator:
    def __init__(self, target: Target, state: StateStore, driver: Driver, say: Callable[[str], None]) -> None:
        self.target = target
        self.state = state
        self.driver = driver
        self.say = say

    async def run(self, release: Release) -> list[Migrated]:
        """Run every migration of ``release``; on a failure, restore and raise."""
        done: list[Migrated] = []
        for service, entry in release.services().items():
            config = entry.config
            if config.migrate is None:
                continue
            snapshots = await asyncio.to_thread(self._snapshot, release, config.volumes)
            try:
                await self._run_one(release, service, entry)
            except DeployError as failure:
                await asyncio.to_thread(self.restore, snapshots)
                self.state.event(
                    self.target.env,
                    "migrate",
                    f"{service}: migration of release {release.number} failed; volumes restored",
                    service=service,
                    release=release.number,
                )
                raise DeployError(
                    f"{failure.message}\nevery volume it could write ({', '.join(snapshots) or 'none'}) was "
                    "restored from the snapshot taken just before it",
                    hint="the previous release serves on, on its own data; fix the migration, deploy again",
                ) from None
            done.append(Migrated(service, snapshots))
            self.state.event(
                self.target.env,
                "migrate",
                f"{service}: migration of release {release.number} done",
                service=service,
                release=release.number,
                volumes=sorted(snapshots),
            )
        return done

    def _snapshot(self, release: Release, volumes: dict[str, str]) -> dict[str, Path]:
        taken = {}
        for volume in sorted(volumes):
            key = volume_key(self.target.env, volume)  # a preview's own (production's: the name)
            source = self.driver.volume_dir(self.target.stack_id, key)
            taken[volume] = snapshot(source, snapshot_dir(self.target.home, release.number, key))
            self.say(f"snapshot of volume {volume} taken ({taken[volume]})")
        return taken

    def restore(self, snapshots: dict[str, Path]) -> None:
        for volume, path in snapshots.items():
            restore(path, self.driver.volume_dir(self.target.stack_id, volume_key(self.target.env, volume)))
            self.say(f"volume {volume} restored from {path}")

    async def _run_one(self, release: Release, service: str, entry: ServiceRelease) -> None:
        config = entry.config
        assert config.migrate is not None
        instance_id = f"{id_base(self.target.env, service)}-{release.number}-migrate"
        spec = await asyncio.to_thread(self.target.spec, instance_id, service, release.number, entry)
        labels = {**spec.labels, "herd.env": f"{self.target.env}-migrate"}
        spec = dataclasses.replace(spec, argv=tuple(config.migrate.command), labels=labels, wants_port=False)
        await self.driver.stop(instance_id, 1)  # what an interrupted deploy may have left
        self.say(f"{service}: migrating ({' '.join(config.migrate.command)})")
        await self.driver.start(spec)
        deadline = time.monotonic() + config.migrate.timeout
        try:
            while True:
                state = await self.driver.inspect(instance_id)
                if state is None or state.state != "running":
                    break
                if time.monotonic() > deadline:
                    raise self._failed(instance_id, f"did not finish within {config.migrate.timeout:g}s")
                await asyncio.sleep(0.05)
            code = state.exit_code if state is not None else None
            if code != 0:
                raise self._failed(instance_id, f"exited with code {code}")
        finally:
            await self.driver.stop(instance_id, 5)

    def _failed(self, instance_id: str, what: str) -> DeployError:
        self.driver.settle_logs(instance_id)  # a driver whose logs arrive late
        tail = log_tail(self.driver.log_file(instance_id))
        message = f"the migration {instance_id} {what}"
        if tail:
            message += f"\n--- last lines of its log ---\n{tail}"
        return DeployError(message)
