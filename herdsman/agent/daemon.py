"""The agent process: resume an interrupted rollout, start the current release, keep it running.

The agent may die at any moment (DESIGN.md principle 3): instances and the router are separate
processes and keep serving. A new agent takes the per-environment agent lock, finishes any rollout
its predecessor left half done (by planning again from what actually runs), adopts the running
instances by their labels, and then reconciles: an instance that exits is noticed at once (a pidfd)
and replaced, one that fails its liveness checks is quarantined (see `heal.py`), and a full
listing every few seconds catches anything else. Only services where something changed are planned.

The agent is the one owner of what runs while it is up. A deploy or rollback asked of it (through its
API: `herd deploy` does so whenever an agent runs) runs here, under the same `owner` lock as a heal,
so the two never interleave; instances a rollout retires are never heal candidates, because after
any change made by a holder of the deploy lock (here or in another process: the state store's
generation moved) the agent lists again before it plans anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from herdsman.agent.api import make_app
from herdsman.agent.autoscale import Sample, ServiceLoad, decide, sample_of
from herdsman.agent.drift import DriftChecker
from herdsman.agent.fleet import Seen, Want
from herdsman.agent.heal import Healer
from herdsman.agent.metrics import RouterTotals, Snapshot, render
from herdsman.agent.observed import Observed
from herdsman.agent.pidfile import agent_lock
from herdsman.agent.previews import PreviewExpiry
from herdsman.agent.pruning import ScheduledPrune
from herdsman.agent.schemas import Finding, Instance, Status
from herdsman.agent.server import ensure_token, serve, socket_path
from herdsman.agent.views import findings_of, instances_of, status_of
from herdsman.agent.watch import Watcher
from herdsman.deploy import data
from herdsman.deploy.canary import BASELINE_LABEL
from herdsman.deploy.pidlock import lock_holder
from herdsman.deploy.plan import effective_policy
from herdsman.deploy.run import Deployment
from herdsman.drivers.base import InstanceState
from herdsman.errors import HerdError
from herdsman.image.bake import image_store
from herdsman.image.oci import ImageStore
from herdsman.image.progress import Reporter
from herdsman.quarantine import Quarantine
from herdsman.spec import Project, herd_home, load_project
from herdsman.state import Release, StateStore, asker

SYNC_EVERY = 3.0  # seconds between full listings of what runs
SAMPLE_EVERY = 0.5  # seconds between samples of the router's counters, for autoscaling
BLOCKING_THREADS = 32  # threads for blocking work (asyncio.to_thread): starts, stops, SQLite


class Agent:
    def __init__(
        self,
        project: Project,
        env: str | None = None,
        *,
        driver_name: str | None = None,
        reporter: Reporter | None = None,
        interval: float = SYNC_EVERY,
        api: str | None = None,
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
        self.drift = DriftChecker(self.observed, self.deployment, self.home, self.stopping)
        self._poked = False
        self._wanted: dict[str, Want] = {}
        self.api = api  # also serve the API on this loopback address
        self.router_totals = RouterTotals()
        self.owner = asyncio.Lock()  # held by a heal pass and by a deploy or rollback asked of the agent
        self.known_generation = -1  # the state store's generation when the fleet was last listed
        self.operations: set[asyncio.Task[None]] = set()  # deploys asked through the API, running
        self.expiry = PreviewExpiry(
            lambda: self.deployment.project, self.deployment.state, self.env, self.stopping
        )
        self.pruning = ScheduledPrune(
            lambda: self.deployment.project, self.deployment.state, self.env, self.owner, self.stopping
        )
        self._events: Any = None  # the driver's event subscription (swarm), and for which driver
        self._events_of: object = None

    @property
    def state(self) -> StateStore:  # for the healer and the API
        return self.deployment.state

    async def run(self, *, deploy: bool = True, ready: asyncio.Event | None = None) -> None:
        with agent_lock(self.home, self.env):
            state = self.deployment.state
            state.event(self.env, "agent", f"agent started (pid {os.getpid()})")
            loop = asyncio.get_running_loop()
            # blocking work waits more than it computes (a stop waits for its process to end): a
            # retire of a thousand must not queue behind asyncio's default of cores + 4 threads
            loop.set_default_executor(ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="herd"))
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._stop)
            with contextlib.suppress(NotImplementedError, RuntimeError):  # `herd scale`: look again now
                loop.add_signal_handler(signal.SIGUSR1, self.poke)
            try:
                await self.deployment.resume()
                if deploy:  # the current release, or the files when there is none (it says which)
                    await self.deployment.start()
                await self.sync()
                if ready is not None:
                    ready.set()
                scaler = asyncio.create_task(self._sample())
                checker = asyncio.create_task(self.drift.loop())
                pruner = asyncio.create_task(self.pruning.loop())
                expiry = asyncio.create_task(self.expiry.loop())
                token = ensure_token(self.home, self.env)
                app = make_app(self, token)
                from herdsman.agent.dashboard import make_dashboard  # jinja2 only when an agent serves

                app.mount("/ui", make_dashboard(self, token))  # the web dashboard: same listener, same token
                serving, server = await serve(app, socket_path(self.home, self.env), self.api)
                try:
                    await self._loop()
                finally:
                    scaler.cancel()
                    checker.cancel()
                    pruner.cancel()
                    expiry.cancel()
                    server.should_exit = True
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(serving, 5)
            finally:
                self.watcher.close()
                self._close_events()
            state.event(self.env, "agent", "agent stopped; instances and router keep running")

    def poke(self) -> None:
        """Something outside changed (e.g. a replica count): list and plan again now."""
        self._poked = True
        self.wake.set()

    def _stop(self) -> None:
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

    async def _sample(self) -> None:
        """Sample the router's counters: totals for /metrics, and the wanted count of autoscaled
        services."""
        loads: dict[str, ServiceLoad] = {}
        while not self.stopping.is_set():
            await asyncio.sleep(SAMPLE_EVERY)
            try:
                await self._sample_once(loads)
            except Exception as exc:  # reported; the next sample tries again
                self.deployment.state.event(self.env, "scale", f"autoscaling failed: {exc!r}")
                await asyncio.sleep(5)

    async def _sample_once(self, loads: dict[str, ServiceLoad]) -> None:
        stats_of = getattr(self.deployment.executor.pools, "stats", None)
        if stats_of is None:
            return
        try:
            stats = await stats_of()
        except HerdError:
            return
        self.router_totals.update(self.env, stats, self._release_of)
        release = self.deployment.state.current_release(self.env)
        if release is None:
            return
        configs = {n: e.config for n, e in release.services().items()}
        rules = {n: c.scale for n, c in configs.items() if c.scale is not None and c.route is not None}
        holder = lock_holder(self.home / "run" / f"deploy-{self.env}.lock")
        rolling = self.operations or (holder is not None and holder != os.getpid())  # here or elsewhere
        if not rules or rolling:
            loads.clear()  # never during a rollout; start afresh after it
            return
        scales = self.deployment.state.scales(self.env)
        now = time.monotonic()
        for name, rule in rules.items():
            route = stats.get(f"{self.env}/{name}")
            if route is None or scales.get(name, (0, ""))[1] == "fixed":
                continue
            load = loads.setdefault(name, ServiceLoad())
            load.samples.append(sample_of(route, now))
            current = effective_policy(configs[name], scales.get(name)).replicas
            new = decide(rule, load, current, now)
            if new is not None and new != current:
                self._scaled(name, current, new, load.samples[-1])

    def _release_of(self, instance: str) -> str:
        seen = self.fleet.get(instance)
        return str(seen.release) if seen is not None else instance.split("-")[-2] if "-" in instance else ""

    def _scaled(self, service: str, before: int, after: int, sample: Sample) -> None:
        self.counts.scalings[service] += 1
        self.deployment.state.set_scale(self.env, service, after, "auto")
        way = "out" if after > before else "in"
        self.deployment.state.event(
            self.env,
            "scale",
            f"{service}: scaled {way} from {before} to {after} ({sample.inflight} request(s) in flight)",
            service=service,
            replicas=after,
        )
        self.fleet.touch(service)
        self.wake.set()

    def scale(self, service: str, replicas: int | None) -> None:
        """`herd scale` through the API: a fixed count, or None for the release's count."""
        release = self.deployment.state.current_release(self.env)
        if release is None or service not in release.services():
            raise HerdError(f"no service {service!r} in the current release of {self.env}")
        self.deployment.set_replicas(service, replicas)
        self.poke()

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

    def images(self) -> ImageStore:
        """The project's image store (the dashboard compares releases' layers)."""
        return image_store(self.deployment.project)

    def log_file(self, instance_id: str) -> Path | None:
        """Where the driver writes a running instance's log (None when it keeps none)."""
        return self.deployment.driver.log_file(instance_id)

    async def status(self) -> Status:
        release = self.deployment.state.current_release(self.env)
        wants = self.wants(release) if release is not None else {}
        return status_of(self.env, self.deployment.state, self.fleet, release, wants)

    async def instances(self) -> list[Instance]:
        return instances_of(
            await self.deployment.driver.list(self.deployment.executor.target.selector), self.watcher
        )

    async def verify(self) -> list[Finding]:
        """`herd verify` now, acting on each finding as its service's `drift` says."""
        return findings_of(await self.drift.check())

    def metrics(self) -> bytes:
        instances: dict[tuple[str, str], int] = {}
        for service, seen in self.fleet.services.items():
            for item in seen.values():
                key = (service, "unhealthy" if item.unhealthy else "running" if item.running else "exited")
                instances[key] = instances.get(key, 0) + 1
        release = self.deployment.state.current_release(self.env)
        wanted = {n: w.policy.replicas for n, w in self.wants(release).items()} if release else {}
        deploys = [
            (int(e["release"] or 0), float(e["data"]["seconds"]))
            for e in self.deployment.state.events(self.env, last=1000)
            if e["kind"] == "rollout" and "seconds" in e["data"]
        ]
        snapshot = Snapshot(self.env, self.router_totals, self.counts, instances, wanted, deploys)
        return render(snapshot)

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

    # operations asked of the agent ------------------------------------------------------------------
    async def deploy(
        self,
        secrets: Mapping[str, str],
        *,
        rollback_to: int | None = None,
        rollback: bool = False,
        restore_data: bool = False,
        force: bool = False,
        say: Callable[[str], None] | None = None,
        by: str = "",
    ) -> Release:
        """`herd deploy` (or, with ``rollback``, `herd rollback [rollback_to]`) run by the agent: the
        files are read again, ``secrets`` (the values the deployer handed over, held in memory only)
        override those the agent holds, and the agent lists what runs before it heals again. The
        release records ``by`` (the caller's user@host) as who asked, else the agent's own."""
        async with self.owner:
            deployment = self.deployment
            try:
                deployment.by = by or asker()
                project = await asyncio.to_thread(load_project, deployment.project.file)
                deployment.reload(project)
                current = deployment.state.current_release(self.env)
                target = deployment.executor.target
                values = {**target.secrets_of(current.number if current else 0), **secrets}
                with deployment.executor.listening(say):
                    if rollback:
                        return await data.rollback(
                            deployment, rollback_to, restore_data=restore_data, wait=30, secrets=values
                        )
                    return await deployment.deploy(
                        trigger="herd deploy", wait=30, secrets=values, force=force
                    )
            finally:
                deployment.by = asker()
                await self.sync()
                self.wake.set()
