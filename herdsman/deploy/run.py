"""Deploy, roll back and take down a project: bake, record an immutable release, roll it out.

This is the effectful shell around `plan` and `execute`. A deploy lock (an flock on
`.herd/run/deploy-ENV.lock`) keeps two deploys of one environment from interleaving; the kernel
drops it when its holder dies, so a killed deploy never leaves a stale lock behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from herdsman.deploy.environments import choose_driver, declared_driver, deploy_lock, make_driver, settings_of
from herdsman.deploy.execute import Executor, Pools
from herdsman.deploy.instances import is_preview
from herdsman.deploy.preview_target import as_preview, own_routes, refuse_expired
from herdsman.deploy.release import release_content
from herdsman.deploy.target import Target
from herdsman.drivers.base import Driver, InstanceState, private_dir, secret_digest, stack_key
from herdsman.errors import DeployError, HerdError
from herdsman.image.assemble import git_revision
from herdsman.image.bake import bake, image_store
from herdsman.image.progress import NullReporter, Reporter
from herdsman.spec import Project, herd_home
from herdsman.state import Release, StateStore, asker, services_of


def starting_point(state: StateStore, env: str) -> tuple[Release | None, str]:
    """The release `herd up` starts from, and why, in words. The agent keeps the current release:
    deploying changed files is `herd deploy`'s job, so `herd up` after `herd rollback` keeps the
    rollback. After `herd down` (nothing current) the last release that ran is started again; only
    with no release at all are the files deployed, as the first release, and it says so."""
    current = state.current_release(env)
    if current is not None:
        return current, (
            f"release {current.number} is current: the agent keeps it running "
            "(`herd deploy` deploys changed files)"
        )
    stopped = state.previous_good(env, before=2**62)
    if stopped is not None:
        return stopped, f"nothing runs: starting release {stopped.number} again (the last one that ran)"
    number = max((r.number for r in state.releases(env)), default=0) + 1
    return None, f"no release yet: deploying the files as release {number}"


class Deployment:
    """One environment of one project: its state store, driver and router pools.

    `Deployment.open` is the factory the faces use: it starts the router when the stack routes
    anything and hands its pools to the executor. A bare `Deployment(...)` has no router (tests of
    the executor, read-only commands)."""

    def __init__(
        self,
        project: Project,
        env: str | None = None,
        *,
        driver: Driver | None = None,
        driver_name: str | None = None,
        pools: Pools | None = None,
        reporter: Reporter | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.project = project
        self.env = env or project.stack.stack.environment
        self.home = herd_home(project)
        private_dir(self.home / "run")  # locks, sockets, instance records: herdsman's user only
        self.state = StateStore(self.home / "state.db")
        self.by = asker()  # recorded as who asked for each release (the agent sets the API caller's)
        environment = project.stack.environment.get(settings_of(project, self.env))
        self.registry = environment.registry if environment else None
        self.driver_chosen = driver_name is not None  # `herd --driver`: wins over what is recorded
        self.driver_name = choose_driver(project, self.env, driver_name, self.state.driver_of(self.env))
        self.driver = driver or make_driver(self.driver_name, self.home, project, self.env)
        self.reporter = reporter or NullReporter()
        target = Target(
            self.env,
            project.stack.name,
            project.stack_id,
            self.home,
            image_store(project),
            dict(os.environ) if secrets is None else secrets,
        )
        self.executor = Executor(target, self.state, self.driver, pools)

    @classmethod
    def open(
        cls,
        project: Project,
        env: str | None = None,
        *,
        driver_name: str | None = None,
        reporter: Reporter | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> Deployment:
        """A deployment wired to the project's router (started if need be)."""
        from herdsman.router.engines import ensure_router_pools

        deployment = cls(project, env, driver_name=driver_name, reporter=reporter, secrets=secrets)
        deployment.executor.pools = ensure_router_pools(
            project, deployment.env, own_routes(deployment.state, deployment.env)
        )
        return deployment

    @contextlib.contextmanager
    def locked(self, wait: float = 0.0, *, bump: bool = True) -> Iterator[None]:
        """Hold the environment's deploy lock; on the way out (still holding it) say that what runs
        changed, so a running agent lists again before it heals anything (see `generations`)."""
        with deploy_lock(self.home, self.env, wait):
            try:
                yield
            finally:
                if bump:
                    self.state.bump_generation(self.env)

    def reload(self, project: Project) -> None:
        """Take a newer reading of herd.toml (the agent, before a deploy it was asked for)."""
        if project.stack_id != self.project.stack_id:
            raise DeployError(
                f"the stack's name changed ({self.project.stack.name!r} -> {project.stack.name!r}) "
                "while its agent runs",
                hint="`herd down`, then `herd up -d` under the new name",
            )
        self.project = project
        environment = project.stack.environment.get(settings_of(project, self.env))
        self.registry = environment.registry if environment else None

    async def claim_driver(self) -> None:
        """Before a rollout (holding the lock): record the driver this environment runs on, so
        `herd ps`, `logs` and `down` find its instances without `--driver`. Moving a running
        environment to another driver is refused (its instances would be left behind, unseen);
        once nothing runs on the recorded driver, herd.toml's choice applies again."""
        recorded = self.state.driver_of(self.env)
        wanted = self.driver_name if self.driver_chosen else declared_driver(self.project, self.env)
        if recorded is not None and recorded != wanted:
            old = self.driver
            if recorded != self.driver_name:
                old = make_driver(recorded, self.home, self.project, self.env)
            running = await old.list(self.executor.target.selector)
            if running:
                why = "--driver says" if self.driver_chosen else f"{self.project.file.name} says"
                raise DeployError(
                    f"environment {self.env!r} runs on the {recorded} driver ({len(running)} instance(s)), "
                    f"but {why} {wanted}: nothing was changed",
                    hint=f"`herd --driver {recorded} deploy` keeps it there; `herd down` then deploy "
                    f"moves it to {wanted}",
                )
            if wanted != self.driver_name:  # nothing runs where the record said: herd.toml's choice
                self.driver = self.executor.driver = make_driver(wanted, self.home, self.project, self.env)
                self.executor.known = {}
                self.driver_name = wanted
        if recorded != self.driver_name:
            self.state.set_driver(self.env, self.driver_name)

    def check(self, content: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        """What can be checked before a release is recorded (and before any snapshot or migration):
        every secret has a value, every service has something to run, and the driver can run every
        image (the docker driver refuses a `host` one). Raises one DeployError naming every problem."""
        problems = []
        store = self.executor.target.images
        for name, entry in sorted(services_of(content).items()):
            if not store.has_blob(entry.image):
                problems.append(
                    f"service {name!r}: its image {entry.image[:19]} is no longer stored "
                    "(`herd prune` keeps [retention] releases; `herd pull` can fetch it back by digest)"
                )
                continue
            refused = self.driver.refuse_image(entry.image)
            if refused:
                problems.append(f"service {name!r}: {refused}")
                continue
            missing = [s for s in entry.config.secrets if s not in secrets]
            if missing:
                problems.append(f"service {name!r} needs secret(s) {', '.join(missing)}, which are not set")
                continue
            try:
                self.executor.target.spec(f"{name}-0-check", name, 0, entry, secrets)
            except DeployError as exc:
                problems.append(exc.message)
        if problems:
            raise DeployError(
                "nothing was recorded or started: " + "; ".join(problems),
                hint="export each secret in the environment that runs `herd deploy` (values are "
                "never stored); `command` says what a service runs; a `host` image runs only on the "
                "process driver (give the service a full base, e.g. debian:bookworm, for docker)",
            )

    async def deploy(
        self,
        *,
        trigger: str = "herd deploy",
        wait: float = 0.0,
        secrets: Mapping[str, str] | None = None,
        force: bool = False,
    ) -> Release:
        """Bake, record a new release, roll it out. On failure the previous release keeps serving.
        ``secrets`` are the values its instances start with (default: the deployment's).

        When the bake's digests, the resolved config and routes (and the secret values, by digest)
        equal the current release's, nothing is recorded or replaced and the current release is
        returned — unless ``force``."""
        with self.locked(wait):
            refuse_expired(self.state, self.env)  # before a bake: an expired preview takes nothing
            results = await asyncio.to_thread(bake, self.project, None, reporter=self.reporter)
            images = {r.service: r.image.digest for r in results}
            content = release_content(self.project, settings_of(self.project, self.env), images)
            if is_preview(self.env):
                content = as_preview(self.state, self.env, content)
            values = self.executor.target.secrets if secrets is None else secrets
            self.check(content, values)
            content = self._with_secret_digests(content, values)
            await self.claim_driver()  # a move to another driver is refused even when nothing changed
            previous = self.state.current_release(self.env)
            if previous is not None and not force and previous.content == json.loads(json.dumps(content)):
                self.executor.say(
                    f"nothing changed: release {previous.number} is current (same images, config and "
                    "routes); nothing recorded, nothing replaced (--force rolls it anyway)"
                )
                return previous
            if self.registry:
                await asyncio.to_thread(self.push, images)
            release = self.state.create_release(
                self.env, content, trigger=trigger, revision=git_revision(self.project.root), by=self.by
            )
            self.executor.target.release_secrets[release.number] = dict(values)
            with self.settles(release):
                await self.executor.rollout(release, previous, migrate=True)
            self._prune_snapshots()
            return self.state.release(self.env, release.number)

    def _with_secret_digests(self, content: dict[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
        """The content with each declared secret's value as its HMAC under the stack's key (as the
        instance records keep it): `API_KEY=new herd deploy` is a change, though values are never
        stored."""
        names = sorted({s for entry in services_of(content).values() for s in entry.config.secrets})
        if not names:
            return content
        key = stack_key(self.home)
        return {**content, "secret_digests": {n: secret_digest(key, values[n]) for n in names}}

    def push(self, images: dict[str, str]) -> None:
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

    async def start(self) -> Release:
        """What `herd up` does before it keeps things running (see `starting_point`): nothing when a
        release is current, the last stopped release again after `herd down`, and a deploy of the
        files only when there is no release at all."""
        refuse_expired(self.state, self.env)
        release, why = starting_point(self.state, self.env)
        self.state.event(self.env, "agent", why)
        self.executor.say(why)
        if release is None:
            return await self.deploy(trigger="herd up")
        if release.status == "deployed":
            return release
        with self.locked(wait=60):
            await self.executor.rollout(release, None)
        return self.state.release(self.env, release.number)

    async def rollback(
        self,
        to: int | None = None,
        *,
        wait: float = 0.0,
        secrets: Mapping[str, str] | None = None,
    ) -> Release:
        """A new release with release ``to``'s content (default: the previous good one), rolled out
        like any deploy (`data.rollback_with_data` also puts volumes back)."""
        with self.locked(wait):
            return await self.rollback_locked(to, secrets=secrets)

    async def rollback_locked(self, to: int | None, *, secrets: Mapping[str, str] | None = None) -> Release:
        """`rollback` for a caller that holds the deploy lock."""
        refuse_expired(self.state, self.env)
        values = self.executor.target.secrets if secrets is None else secrets
        self.check(self.rollback_source(to).content, values)
        await self.claim_driver()
        current = self.state.current_release(self.env)
        source = self.rollback_source(to)
        release = self.state.create_release(
            self.env,
            source.content,
            trigger=f"herd rollback to {source.number}",
            revision=source.revision,
            copy_of=source.number,
            by=self.by,
        )
        self.executor.target.release_secrets[release.number] = dict(values)
        with self.settles(release):
            await self.executor.rollout(release, current)
        return self.state.release(self.env, release.number)

    @contextlib.contextmanager
    def settles(self, release: Release) -> Iterator[None]:
        """No release stays "pending" after a failed rollout: whatever failed, it is marked failed
        with the reason (`herd releases` shows it). An interrupted one (Ctrl-C, a killed deployer)
        is left to `resume`, which finishes it."""
        try:
            yield
        except Exception as exc:
            if self.state.release(self.env, release.number).status == "pending":
                self.state.set_release_status(self.env, release.number, "failed", str(exc) or repr(exc))
            raise

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
        with self.locked(wait=60):
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
        with self.locked(wait):
            refuse_expired(self.state, self.env)
            current = self.state.current_release(self.env)
            if current is None:
                raise DeployError("nothing is deployed yet", hint="herd deploy")
            await self.claim_driver()
            steps = await self.executor.plan(current)
            for step in steps:
                await self.executor.apply(step, current)
            return len(steps)

    def stop_grace(self, instance: InstanceState) -> float:
        """The `stop_grace` of the release the instance runs (10 s when that is unknown)."""
        try:
            entry = self.state.release(self.env, instance.release).services()[instance.service]
        except (HerdError, KeyError):
            return 10.0
        return entry.config.stop_grace

    async def down(self) -> int:
        """Stop every instance of the environment; volumes and logs stay."""
        with self.locked():
            instances = await self.driver.list(self.executor.target.selector)
            await asyncio.gather(*(self.driver.stop(i.id, self.stop_grace(i)) for i in instances))
            current = self.state.current_release(self.env)
            if current is not None:
                self.state.set_release_status(self.env, current.number, "stopped")
            self.state.clear_driver(self.env)  # nothing runs: the next deploy follows herd.toml again
            self.state.event(self.env, "down", f"stopped {len(instances)} instance(s)")
            return len(instances)
