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

Keeping an environment running (listing, watching, healing, quarantine) is agent/keeper.py's
`Keeper`, which the agent extends with its API, autoscaling, drift checks, scheduled prunes and
previews' expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from herdsman.agent.api import make_app
from herdsman.agent.autoscale import Sample, ServiceLoad, decide, sample_of
from herdsman.agent.drift import DriftChecker
from herdsman.agent.keeper import SYNC_EVERY, Keeper
from herdsman.agent.metrics import RouterTotals, Snapshot, render
from herdsman.agent.pidfile import agent_lock
from herdsman.agent.previews import PreviewExpiry
from herdsman.agent.pruning import ScheduledPrune
from herdsman.agent.schemas import Finding, Instance, Status
from herdsman.agent.server import ensure_token, serve, socket_path
from herdsman.agent.views import findings_of, instances_of, status_of
from herdsman.deploy import data
from herdsman.deploy.pace import in_proportion
from herdsman.deploy.pidlock import lock_holder
from herdsman.deploy.plan import effective_policy
from herdsman.errors import HerdError
from herdsman.image.bake import image_store
from herdsman.image.oci import ImageStore
from herdsman.image.progress import Reporter
from herdsman.spec import Project, load_project
from herdsman.state import Release, asker

SAMPLE_EVERY = 0.5  # seconds between samples of the router's counters, for autoscaling
SAMPLE_SIZE = 500  # past this many backends, samples are further apart in proportion (O(n) each)
BLOCKING_THREADS = 32  # threads for blocking work (asyncio.to_thread): starts, stops, SQLite


def sample_pause(backends: int) -> float:
    """Seconds between two samples of the router's counters when it has ``backends`` backends:
    a sample costs the router and the agent in proportion to them (430 KB of JSON at 1,000)."""
    return in_proportion(SAMPLE_EVERY, backends, SAMPLE_SIZE)


class Agent(Keeper):
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
        super().__init__(project, env, driver_name=driver_name, reporter=reporter, interval=interval)
        self.drift = DriftChecker(self.observed, self.deployment, self.home, self.stopping)
        self.api = api  # also serve the API on this loopback address
        self.router_totals = RouterTotals()
        self.operations: set[asyncio.Task[None]] = set()  # deploys asked through the API, running
        self.expiry = PreviewExpiry(
            lambda: self.deployment.project, self.deployment.state, self.env, self.stopping
        )
        self.pruning = ScheduledPrune(
            lambda: self.deployment.project, self.deployment.state, self.env, self.owner, self.stopping
        )

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
                    loop.add_signal_handler(sig, self.stop)
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
                    await self.expiry.close()  # previews' keepers stop; their instances keep serving
                    server.should_exit = True
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(serving, 5)
            finally:
                self.watcher.close()
                self._close_events()
            state.event(self.env, "agent", "agent stopped; instances and router keep running")

    async def _sample(self) -> None:
        """Sample the router's counters: totals for /metrics, and the wanted count of autoscaled
        services."""
        loads: dict[str, ServiceLoad] = {}
        while not self.stopping.is_set():
            await asyncio.sleep(sample_pause(self.router_totals.backends))
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
        """`herd quarantine add`: a preview's instance by its preview's keeper, else production's."""
        keeper = self.expiry.keeper_of(instance_id)
        if keeper is not None:
            return keeper.quarantine_instance(instance_id, reason)
        return super().quarantine_instance(instance_id, reason)

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
