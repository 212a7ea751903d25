"""Keeping one environment running: what the agent does for production and for each preview.

A keeper lists what runs (a full listing every few seconds, and at once after any change made by
a holder of the deploy lock: the state store's generation moved), watches each instance (an exit
is noticed at once, through a pidfd or the driver's events; liveness checks), and heals: only the
services where something changed are planned (agent/fleet.py), and applied through the same
executor as a deploy (agent/heal.py), so a replacement is admitted by its health check before it
takes traffic; an instance that fails its liveness checks, or one a user names, is quarantined.
The agent (agent/daemon.py) is the keeper of its environment plus the API, autoscaling, drift
checks, scheduled prunes and previews; each live preview gets a keeper of its own
(agent/previews.py), with its own pool and route.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any

from herdsman.agent.fleet import Seen, Want
from herdsman.agent.heal import Healer
from herdsman.agent.observed import Observed
from herdsman.agent.watch import Watcher
from herdsman.deploy.plan import effective_policy
from herdsman.deploy.run import Deployment
from herdsman.drivers.base import BASELINE_LABEL, InstanceState
from herdsman.errors import HerdError
from herdsman.image.progress import Reporter
from herdsman.quarantine import Quarantine
from herdsman.spec import Project, herd_home
from herdsman.state import Release, StateStore

SYNC_EVERY = 3.0  # seconds between full listings of what runs


class Keeper:
    """Keeps one environment running: lists what runs, watches it, heals and quarantines."""

    def __init__(
        self,
        project: Project,
        env: str | None = None,
        *,
        driver_name: str | None = None,
        reporter: Reporter | None = None,
        interval: float = SYNC_EVERY,
    ) -> None:
        self.deployment = Deployment.open(project, env, driver_name=driver_name, reporter=reporter)
        self.env = self.deployment.env
        self.home = herd_home(project)
        self.interval = interval
        self.stopping = asyncio.Event()
        # through the deployment: a deploy may move the environment to herd.toml's driver
        self.watcher = Watcher(self._changed, lambda *args: self.deployment.driver.exec(*args))
        self.observed = Observed(self.watcher)  # what the healer, drift checker and API share
        self.fleet, self.backoff, self.drifted = (
            self.observed.fleet,
            self.observed.backoff,
            self.observed.drifted,
        )
        self.counts, self.wake = self.observed.counts, self.observed.wake
        self.quarantine = Quarantine(self.home)
        self.healer = Healer(self.observed, self.deployment, self.quarantine, self.home, self.sync)
        self._poked = False
        self._wanted: dict[str, Want] = {}
        self.owner = asyncio.Lock()  # held by a heal pass and by a deploy or rollback asked of the agent
        self.known_generation = -1  # the state store's generation when the fleet was last listed
        self._events: Any = None  # the driver's event subscription (swarm), and for which driver
        self._events_of: object = None

    @property
    def state(self) -> StateStore:  # for the healer and the API
        return self.deployment.state

    async def keep(self) -> None:
        """List what runs, then keep it running until `stop` (a preview's keeper: the agent's own
        loop is `Agent.run`, which also serves the API and starts the other periodic work)."""
        try:
            await self.sync()
            await self._loop()
        finally:
            self.watcher.close()
            self._close_events()

    def poke(self) -> None:
        """Something outside changed (e.g. a replica count): list and plan again now."""
        self._poked = True
        self.wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    async def _loop(self) -> None:
        last_sync = time.monotonic()
        self._watch_events()
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.wake.wait(), max(0.0, last_sync + self.interval - time.monotonic())
                )
            self.wake.clear()
            if self.stopping.is_set():
                break
            self._watch_events()
            if self._poked or time.monotonic() - last_sync >= self.interval:
                self._poked = False
                await self.sync()
                last_sync = time.monotonic()
            await self.reconcile()

    # observing ------------------------------------------------------------------------------------
    def _watch_events(self) -> None:
        """Subscribe to the driver's events where it has them (swarm: a task on another node has no
        pid to watch here; a node drained or lost). The subscription follows the driver a deploy
        may have moved the environment to."""
        driver = self.deployment.driver
        if driver is self._events_of:
            return
        self._close_events()
        self._events_of = driver
        watch = getattr(driver, "watch_events", None)
        if watch is None:
            return
        loop = asyncio.get_running_loop()
        stack_id = self.deployment.executor.target.selector["herd.stack-id"]
        self._events = watch(
            stack_id,
            lambda instance: loop.call_soon_threadsafe(self.watcher.exited, instance),
            lambda: loop.call_soon_threadsafe(self.poke),
        )

    def _close_events(self) -> None:
        events, self._events, self._events_of = self._events, None, None
        if events is not None:
            events.close()

    def _changed(self, instance_id: str, kind: str) -> None:
        """From the watcher: an instance exited or became unhealthy. Plan its service now."""
        seen = self.fleet.get(instance_id)
        if seen is not None:
            if kind == "exited":
                seen = dataclasses.replace(seen, running=False, detail="exited")
            else:
                seen = dataclasses.replace(
                    seen, unhealthy=self.watcher.unhealthy.get(instance_id, "unhealthy")
                )
            self.fleet.observe(seen)
        self.wake.set()

    async def sync(self) -> list[InstanceState]:
        """A full listing: adopt what runs, watch it, and note what changed."""
        generation = self.deployment.state.generation(self.env)
        states = await self.deployment.driver.list(self.deployment.executor.target.selector)
        self.deployment.executor.saw(states)
        release = self.deployment.state.current_release(self.env)
        checks = {}
        if release is not None:
            checks = {n: e.config.health for n, e in release.services().items()}
        for state in states:
            if state.state == "running":
                if not self.watcher.watch_exit(state):
                    state = await self.deployment.driver.inspect(state.id) or state
                check = checks.get(state.service)
                if check is not None and state.state == "running":
                    self.watcher.watch_health(state, check)
        listed = {s.id for s in states}
        for gone in self.watcher.watching() - listed:
            self.watcher.forget(gone)
        self.fleet.sync(self._seen(s) for s in states)
        if release is not None:  # a changed replica count (or release) makes its service dirty
            wanted = self.wants(release)
            for name, want in wanted.items():
                if self._wanted.get(name) != want:
                    self.fleet.touch(name)
            self._wanted = wanted
        self.known_generation = generation
        return states

    def _seen(self, state: InstanceState) -> Seen:
        return Seen(
            state.id,
            state.service,
            state.release,
            state.state == "running",
            self.watcher.unhealthy.get(state.id, ""),
            self.drifted.get(state.id, ""),
            state.started,
            state.detail,
            state.evicted,
            state.labels.get(BASELINE_LABEL) == "fresh",
        )

    def quarantine_instance(self, instance_id: str, reason: str) -> str:
        """`herd quarantine add` through the API: a running instance is replaced (surge first: it
        still answers until its replacement is admitted), then taken out of the pool, stopped and
        kept, as a drifted one is (its record, log and what it wrote in .herd/quarantine)."""
        seen = self.fleet.get(instance_id)
        if seen is None or not seen.running:
            raise HerdError(
                f"no running instance {instance_id!r} in environment {self.env!r}",
                hint="`herd ps` lists the running instances",
            )
        self.drifted[instance_id] = reason  # the fleet plans its quarantine like a drifted one's
        self.fleet.observe(dataclasses.replace(seen, drifted=reason))
        self.state.event(
            self.env,
            "quarantine",
            f"{instance_id}: quarantine asked ({reason}); replacing it first",
            service=seen.service,
            instance=instance_id,
            release=seen.release,
        )
        self.wake.set()
        return seen.service

    # acting ---------------------------------------------------------------------------------------
    def wants(self, release: Release) -> dict[str, Want]:
        scales = self.deployment.state.scales(self.env)
        return {
            name: Want(release.number, effective_policy(entry.config, scales.get(name)))
            for name, entry in release.services().items()
        }

    async def reconcile(self) -> None:
        """One pass over the services where something changed, against the release that is current
        once the deploy lock is held, and from a listing no older than the last change to what runs."""
        if not self.fleet.dirty or self.owner.locked():
            return  # an operation holds the owner lock: it lists again and wakes the loop when done
        async with self.owner:
            await self._reconcile()

    async def _reconcile(self) -> None:
        dirty: dict[str, list[Seen]] = {}
        current = None
        try:
            with self.deployment.locked(bump=False):
                if self.deployment.state.unfinished_rollouts(self.env):
                    await self.deployment.resume_locked()
                    await self.sync()
                    return
                if self.deployment.state.generation(self.env) != self.known_generation:
                    await self.sync()  # a deploy, restore or down changed what runs: look first
                current = self.deployment.state.current_release(self.env)
                if current is None:
                    return
                dirty = self.fleet.take_dirty()
                await self.healer.heal(current, dirty, self.wants(current))
        except HerdError as exc:  # a failed pass is reported and tried again; the agent lives on
            for service in dirty or self.fleet.dirty:
                self.fleet.touch(service)
            if exc.retryable:  # e.g. a deploy holds the lock: try again when the error says
                asyncio.get_running_loop().call_later(exc.delay or 0.2, self.wake.set)
            else:
                what = f"release {current.number}" if current is not None else "the current release"
                self.deployment.state.event(self.env, "heal", f"could not restore {what}: {exc.message}")
                asyncio.get_running_loop().call_later(1.0, self.wake.set)
