"""Previews: short-lived environments made from the same bytes as production (`herd preview`).

`create` records the preview with its expiry in the state store *before* anything of it starts
(so an interrupted create still expires), then rolls out a release of its own in the environment
`preview-NAME`: a production release's exact content (or the working tree, baked with the same
cache), with its own routes and replica count (deploy/preview_spec.py). Its instances,
volumes (`preview-NAME.VOLUME`: empty, or a copy of production's taken now) and logs
(`.herd/logs/@preview-NAME`) are its own; production's are read (a volume copied), never written.

`keep` marks a preview kept (for a time, or until removed): expiry passes it by, `remove` still
takes it; once the keep ends it goes at the next expiry round if its time to live is up.
`remove` takes everything of it away, in an order a kill at any moment can resume: marked
"removing", instances stopped, routes dropped, volumes, logs and snapshots deleted, and only then
the record. `expire` removes every preview past its expiry: the agent calls it on each round of
its loop, and every `herd preview` command calls it first when no agent runs, so cleanup never
waits for someone to remember it. Releases stay in the history (they are immutable).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from herdsman.deploy.environments import declared_driver, make_driver
from herdsman.deploy.instances import log_root, volume_key
from herdsman.deploy.preview_spec import (
    expired,
    host_routes,
    kept,
    no_such,
    port_routes,
    preview_content,
    preview_env,
)
from herdsman.deploy.release import release_content
from herdsman.deploy.run import Deployment
from herdsman.deploy.volumes import copy_tree, empty
from herdsman.errors import DeployError
from herdsman.image.assemble import git_revision
from herdsman.image.bake import bake
from herdsman.image.progress import Reporter
from herdsman.spec import Project, herd_home
from herdsman.state import StateStore, services_of


@dataclass(frozen=True)
class Preview:
    name: str
    env: str
    source: str  # what it was made from, in words
    created: float
    expires: float
    routes: Mapping[str, Mapping[str, Any]]  # service -> its own route: listen, host (None: any)
    state: str  # creating, ready, removing
    release: int | None  # its current release (in its own environment)
    kept: bool = False  # kept past its expiry now (`herd preview keep`)
    kept_until: float | None = None  # when the keep ends (None: while kept, never)


def stamp(when: float) -> str:
    """A moment, as a person reads it in a message (local time)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def free_address() -> str:
    """A free 127.0.0.1 port (the router binds it right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class Previews:
    """The previews of one project (one state store); `close` when done."""

    def __init__(
        self,
        project: Project,
        *,
        say: Callable[[str], None] | None = None,
        secrets: Mapping[str, str] | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.project = project
        self.home = herd_home(project)
        self.state = StateStore(self.home / "state.db")
        self.production = project.stack.stack.environment
        self.say = say or (lambda _message: None)
        self.secrets = secrets
        self.reporter = reporter

    def close(self) -> None:
        self.state.close()

    def all(self) -> list[Preview]:
        out = []
        now = time.time()
        for row in self.state.previews():
            current = self.state.current_release(row["env"])
            out.append(
                Preview(
                    row["name"],
                    row["env"],
                    row["source"],
                    row["created"],
                    row["expires"],
                    row["routes"],
                    row["state"],
                    current.number if current else None,
                    kept(row, now),
                    row["kept_until"],
                )
            )
        return out

    def deployment(self, env: str) -> Deployment:
        """A deployment of preview ``env`` on the driver production runs on (its settings too)."""
        name = (
            self.state.driver_of(env)
            or self.state.driver_of(self.production)
            or declared_driver(self.project, self.production)
        )
        driver = make_driver(name, self.home, self.project, env)
        deployment = Deployment(
            self.project, env, driver=driver, driver_name=name, reporter=self.reporter, secrets=self.secrets
        )
        deployment.executor.listeners.append(self.say)
        return deployment

    # making one -------------------------------------------------------------------------------------
    async def create(
        self,
        name: str,
        *,
        release: int | None = None,
        from_files: bool = False,
        ttl: float | None = None,
        replicas: int = 1,
        copy_volumes: bool = False,
        host: bool = False,
        keep: bool = False,
    ) -> Preview:
        """Start preview ``name``; ``keep``: kept past its expiry until `herd preview rm` (or
        `herd preview keep NAME --off`)."""
        env = preview_env(name)
        await self.expire()
        limits = self.project.stack.preview
        if self.state.preview(name) is not None:
            raise DeployError(f"preview {name!r} exists", hint=f"`herd preview rm {name}` first")
        if len(self.state.previews()) >= limits.max:
            raise DeployError(
                f"{len(self.state.previews())} preview(s) exist: [preview] max = {limits.max}",
                hint="`herd preview rm NAME` one of them (`herd preview ls`), or raise [preview] max",
            )
        content, source, revision = await self._content(release, from_files)
        addresses = host_routes(content, name) if host else port_routes(content, free_address)
        content = preview_content(content, env, addresses, dict.fromkeys(content["services"], replicas))
        expires = time.time() + (ttl or limits.ttl)
        if not self.state.add_preview(name, env, source, expires, addresses):
            raise DeployError(f"preview {name!r} exists", hint=f"`herd preview rm {name}` first")
        self.state.event(self.production, "preview", f"preview {name} created from {source}")
        try:
            await self._start(env, content, source, revision, copy_volumes)
        except BaseException as exc:
            if isinstance(exc, Exception):  # a killed create is left to expire
                with contextlib.suppress(Exception):
                    await self.remove(name, f"its creation failed: {exc}")
            raise
        self.state.set_preview_state(name, "ready")
        if keep:  # once it serves: a create killed midway still expires
            self.state.keep_preview(name, True, None)
        return next(p for p in self.all() if p.name == name)

    async def _content(self, release: int | None, from_files: bool) -> tuple[dict[str, Any], str, str]:
        """What the preview runs: (release content, where it comes from in words, revision)."""
        if from_files:
            results = await asyncio.to_thread(bake, self.project, None, reporter=self.reporter)
            images = {r.service: r.image.digest for r in results}
            revision = git_revision(self.project.root)
            content = release_content(self.project, self.production, images)
            return content, f"the working tree{f' ({revision[:12]})' if revision else ''}", revision
        if release is None:
            current = self.state.current_release(self.production)
            if current is None:
                raise DeployError(
                    f"nothing is deployed in {self.production} to make a preview from",
                    hint="`herd deploy` first, or `herd preview create NAME --from-files`",
                )
            release = current.number
        source = self.state.release(self.production, release)
        return dict(source.content), f"release {source.number} of {self.production}", source.revision

    async def _start(
        self, env: str, content: dict[str, Any], source: str, revision: str, copy_volumes: bool
    ) -> None:
        from herdsman.router.engines import ensure_router_pools

        deployment = self.deployment(env)
        try:
            deployment.executor.pools = await asyncio.to_thread(ensure_router_pools, self.project, env, [])
            with deployment.locked():
                values = deployment.executor.target.secrets
                deployment.check(content, values)
                await deployment.claim_driver()
                if deployment.registry:  # an environment that runs images from its registry
                    images = {n: e.image for n, e in services_of(content).items()}
                    await asyncio.to_thread(deployment.push, images)
                if copy_volumes:
                    await asyncio.to_thread(self._copy_volumes, deployment, content)
                made = deployment.state.create_release(
                    env,
                    content,
                    trigger=f"herd preview create ({source})",
                    revision=revision,
                    by=deployment.by,
                )
                deployment.executor.target.release_secrets[made.number] = dict(values)
                with deployment.settles(made):
                    await deployment.executor.rollout(made, None, migrate=True)
        finally:
            deployment.state.close()

    def _copy_volumes(self, deployment: Deployment, content: dict[str, Any]) -> None:
        """Each volume the preview mounts starts as a copy of production's, taken now (production's
        is only read; a file that vanishes meanwhile is skipped, as in a snapshot)."""
        stack = self.project.stack_id
        for volume in sorted({v for e in services_of(content).values() for v in e.config.volumes}):
            source = deployment.driver.volume_dir(stack, volume)
            target = deployment.driver.volume_dir(stack, volume_key(deployment.env, volume))
            empty(target)
            copy_tree(source, target)
            self.say(
                f"volume {volume}: copied from {self.production} into {volume_key(deployment.env, volume)}"
            )

    async def keep(self, name: str, until: float | None, *, off: bool = False) -> Preview:
        """Keep preview ``name`` past its expiry until ``until`` (None: until it is removed), or
        (``off``) no longer: then it goes at the next expiry round once its time to live is up."""
        row = self.state.preview(name)
        if row is None or row["state"] == "removing":
            raise no_such(name, [p["name"] for p in self.state.previews() if p["state"] != "removing"])
        self.state.keep_preview(name, not off, until)
        when = "no longer kept" if off else "kept " + (f"until {stamp(until)}" if until else "until removed")
        self.state.event(self.production, "preview", f"preview {name} {when}")
        self.state.event(row["env"], "preview", f"preview {name} {when}")
        self.say(f"preview {name}: {when}")
        return next(p for p in self.all() if p.name == name)

    # taking one away --------------------------------------------------------------------------------
    async def remove(self, name: str, why: str = "herd preview rm") -> list[str]:
        """Remove preview ``name`` and everything of it; returns what was removed, in words."""
        from herdsman.router.engines import release_router

        env = preview_env(name)
        if self.state.preview(name) is None:
            raise no_such(name, [p["name"] for p in self.state.previews()])
        self.state.set_preview_state(name, "removing")
        deployment = self.deployment(env)
        removed: list[str] = []
        try:
            with deployment.locked(wait=60):
                selector = deployment.executor.target.selector
                leftovers = {**selector, "herd.env": f"{env}-migrate"}  # an interrupted migration's
                found = await deployment.driver.list(selector) + await deployment.driver.list(leftovers)
                await asyncio.gather(*(deployment.driver.stop(i.id, deployment.stop_grace(i)) for i in found))
                removed.append(f"{len(found)} instance(s)")
                await asyncio.to_thread(release_router, self.project, env)
                current = self.state.current_release(env)
                if current is not None:
                    self.state.set_release_status(env, current.number, "stopped")
                self.state.clear_driver(env)
                removed += await asyncio.to_thread(self._remove_data, deployment, env)
        finally:
            deployment.state.close()
        self.state.drop_preview(name)
        message = f"preview {name} removed ({why}): {', '.join(removed)}"
        self.state.event(self.production, "preview", message)
        self.state.event(env, "preview", message)
        self.say(message)
        return removed

    def _remove_data(self, deployment: Deployment, env: str) -> list[str]:
        """The preview's own volumes, logs and snapshots (never a name production can have)."""
        removed = []
        volumes = set(self.project.stack.volume)
        for release in self.state.releases(env):
            volumes |= {v for e in release.services().values() for v in e.config.volumes}
        for volume in sorted(volumes):
            deployment.driver.remove_volume(self.project.stack_id, volume_key(env, volume))
            removed.append(f"volume {volume_key(env, volume)}")
        logs = log_root(self.home, env)
        if logs.exists():
            shutil.rmtree(logs)
            removed.append(f"logs {logs.relative_to(self.home)}")
        for snapshot in sorted((self.home / "snapshots").glob(f"*/{env}.*")):
            shutil.rmtree(snapshot)
            with contextlib.suppress(OSError):
                snapshot.parent.rmdir()
            removed.append(f"snapshot {snapshot.relative_to(self.home)}")
        return removed

    async def expire(self) -> list[str]:
        """Remove every preview past its expiry (and finish any removal a kill interrupted);
        returns their names."""
        now = time.time()
        gone = []
        for row in self.state.previews():
            if expired(row, now) or row["state"] == "removing":
                await self.remove(row["name"], "expired" if expired(row, now) else "an interrupted removal")
                gone.append(str(row["name"]))
        return gone
