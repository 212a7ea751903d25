"""Deploy, roll back and take down a project: bake, record an immutable release, roll it out.

This is the effectful shell around `plan` and `execute`. A deploy lock (an flock on
`.herd/run/deploy-ENV.lock`) keeps two deploys of one environment from interleaving; the kernel
drops it when its holder dies, so a killed deploy never leaves a stale lock behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Mapping
from pathlib import Path

from herdsman.deploy.execute import Executor, Pools, Target
from herdsman.deploy.pidlock import pid_lock
from herdsman.deploy.release import release_content
from herdsman.drivers.base import Driver, InstanceState
from herdsman.drivers.process import ProcessDriver
from herdsman.errors import DeployError, DriverError, HerdError
from herdsman.image.assemble import git_revision
from herdsman.image.bake import bake, image_store
from herdsman.image.progress import NullReporter, Reporter
from herdsman.spec import Project, herd_home
from herdsman.state import Release, StateStore


def deploy_lock(home: Path, env: str, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
    """Keeps two deploys of one environment from interleaving (see pidlock)."""
    return pid_lock(
        home / "run" / f"deploy-{env}.lock",
        lambda holder: DeployError(
            f"another deploy of environment {env!r} is running (pid {holder})",
            hint="wait for it to finish, or pass --wait SECONDS",
            retryable=True,
        ),
        wait,
    )


def make_driver(name: str, home: Path, project: Project, registry: str | None = None) -> Driver:
    if name == "process":
        return ProcessDriver(home, image_store(project))
    if name == "docker":
        from herdsman.drivers.docker import DockerDriver  # the docker SDK loads only when used

        return DockerDriver(home, image_store(project), registry=registry)
    raise DriverError(f"the {name!r} driver is not available yet", hint='use driver = "process" or "docker"')


class Deployment:
    """One environment of one project: its state store, driver and router pools."""

    def __init__(
        self,
        project: Project,
        env: str | None = None,
        *,
        driver: Driver | None = None,
        pools: Pools | None = None,
        reporter: Reporter | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.project = project
        self.env = env or project.stack.stack.environment
        self.home = herd_home(project)
        self.state = StateStore(self.home / "state.db")
        environment = project.stack.environment.get(self.env)
        # `herd --driver NAME` (exported as HERD_DRIVER, so a detached agent inherits it) wins over
        # the environment's `driver`
        name = os.environ.get("HERD_DRIVER") or (environment.driver if environment else "process")
        self.registry = environment.registry if environment else None
        self.driver = driver or make_driver(name, self.home, project, self.registry)
        self.pools = pools
        self.reporter = reporter or NullReporter()
        target = Target(
            self.env, project.stack.name, self.home, image_store(project), secrets or dict(os.environ)
        )
        self.executor = Executor(target, self.state, self.driver, pools)

    async def deploy(self, *, trigger: str = "herd deploy", wait: float = 0.0) -> Release:
        """Bake, record a new release, roll it out. On failure the previous release keeps serving."""
        with deploy_lock(self.home, self.env, wait):
            results = await asyncio.to_thread(bake, self.project, None, reporter=self.reporter)
            images = {r.service: r.image.digest for r in results}
            if self.registry:
                await asyncio.to_thread(self._push, images)
            content = release_content(self.project, self.env, images)
            previous = self.state.current_release(self.env)
            release = self.state.create_release(
                self.env, content, trigger=trigger, revision=git_revision(self.project.root)
            )
            await self.executor.rollout(release, previous, migrate=True)
            self._prune_snapshots()
            return self.state.release(self.env, release.number)

    def _push(self, images: dict[str, str]) -> None:
        """Send the release's images to the environment's registry, by digest."""
        from herdsman.image.registry import parse_reference, push

        store = image_store(self.project)
        for service, digest in sorted(images.items()):
            pushed = push(store, digest, parse_reference(f"{self.registry}/{service}"))
            self.executor.say(f"{service}: pushed to {pushed.reference} ({pushed.uploaded} new blob(s))")

    def _prune_snapshots(self) -> None:
        from herdsman.deploy.volumes import prune_snapshots

        for name, volume in self.project.stack.volume.items():
            prune_snapshots(self.home, name, volume.snapshots_keep)

    async def rollback(
        self, to: int | None = None, *, wait: float = 0.0, restore_data: dict[str, Path] | None = None
    ) -> Release:
        """A new release with release ``to``'s content (default: the previous good one), rolled out
        like any deploy. With ``restore_data`` (volume -> snapshot), the instances using those
        volumes are stopped and the snapshots restored first (see `data.py`)."""
        with deploy_lock(self.home, self.env, wait):
            if restore_data:
                from herdsman.deploy.data import restore_locked
                from herdsman.deploy.volumes import restore

                fills = {v: functools.partial(restore, snap) for v, snap in restore_data.items()}
                await restore_locked(self, fills, restart=False)
            current = self.state.current_release(self.env)
            source = self.rollback_source(to)
            release = self.state.create_release(
                self.env,
                source.content,
                trigger=f"herd rollback to {source.number}",
                revision=source.revision,
                copy_of=source.number,
            )
            await self.executor.rollout(release, current)
            return self.state.release(self.env, release.number)

    def rollback_source(self, to: int | None) -> Release:
        """The release a rollback copies: ``to``, or the previous good one."""
        if to is not None:
            return self.state.release(self.env, to)
        current = self.state.current_release(self.env)
        if current is None:
            raise DeployError("nothing is deployed, so there is nothing to roll back", hint="herd deploy")
        found = self.state.previous_good(self.env, before=current.number)
        if found is None:
            raise DeployError(f"release {current.number} has no earlier good release to go back to")
        return found

    async def resume(self) -> Release | None:
        """After an agent died mid-rollout: finish it by planning again from what actually runs."""
        with deploy_lock(self.home, self.env, wait=60):
            return await self.resume_locked()

    async def resume_locked(self) -> Release | None:
        """`resume` for a caller that already holds the deploy lock."""
        unfinished = self.state.unfinished_rollouts(self.env)
        if not unfinished:
            return None
        last = unfinished[-1]
        for rollout in unfinished:
            self.state.finish_rollout(rollout.id, "interrupted", "the agent stopped during the rollout")
        release = self.state.release(self.env, last.to_release)
        previous = self.state.release(self.env, last.from_release) if last.from_release else None
        self.state.event(self.env, "rollout", f"resuming the rollout to release {release.number}")
        await self.executor.rollout(release, previous)
        return self.state.release(self.env, release.number)

    def set_replicas(self, service: str, count: int | None) -> str:
        """Run ``count`` instances of ``service`` from now on (None: the release's count again).
        Runtime state, not a release: recorded as an event. Returns what was done, in words."""
        if count is None:
            self.state.clear_scale(self.env, service)
            message = f"{service}: back to the release's replica count"
        else:
            self.state.set_scale(self.env, service, count, "fixed")
            message = f"{service}: scaled to {count} (fixed, by herd scale)"
        self.state.event(self.env, "scale", message, service=service, replicas=count)
        return message

    async def converge(self, *, wait: float = 0.0) -> int:
        """Bring what runs to the current release and the runtime replica counts, now (what the agent
        does continuously; for `herd scale` when no agent runs). Returns the number of steps."""
        with deploy_lock(self.home, self.env, wait):
            current = self.state.current_release(self.env)
            if current is None:
                raise DeployError("nothing is deployed yet", hint="herd deploy")
            steps = await self.executor.plan(current)
            for step in steps:
                await self.executor.apply(step, current)
            return len(steps)

    def stop_grace(self, instance: InstanceState) -> float:
        """The `stop_grace` of the release the instance runs (10 s when that is unknown)."""
        from herdsman.deploy.release import service_config

        try:
            entry = self.state.release(self.env, instance.release).services()[instance.service]
        except (HerdError, KeyError):
            return 10.0
        return service_config(entry).stop_grace

    async def down(self) -> int:
        """Stop every instance of the environment; volumes and logs stay."""
        with deploy_lock(self.home, self.env):
            labels = {"herd.stack": self.project.stack.name, "herd.env": self.env}
            instances = await self.driver.list(labels)
            await asyncio.gather(*(self.driver.stop(i.id, self.stop_grace(i)) for i in instances))
            current = self.state.current_release(self.env)
            if current is not None:
                self.state.set_release_status(self.env, current.number, "stopped")
            self.state.event(self.env, "down", f"stopped {len(instances)} instance(s)")
            return len(instances)
