"""Applying a rollout: steps from the planner, through the driver and the router, written ahead.

Each step is recorded `started` before it is applied and `done` after (see `state.store`). If an
instance does not become healthy in time, or crashes, the rollout is reverted by planning again
towards the release that was serving — the same mechanism as any deploy, so the old release keeps
serving and bad instances never reach the pool. Their logs are kept; the error says why, with the
failing instance's last log lines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import secrets as token
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Any, Protocol

from herdsman.deploy.admission import AdmissionSteps
from herdsman.deploy.burst import BurstSteps
from herdsman.deploy.canary import CanarySteps
from herdsman.deploy.instances import id_base
from herdsman.deploy.plan import Running, Step, effective_policy, plan_release
from herdsman.deploy.target import Target, id_maker, listed, route_name
from herdsman.drivers.base import BASELINE_LABEL, Driver, InstanceState
from herdsman.errors import DeployError, HerdError
from herdsman.state import Release, ServiceRelease, StateStore


class Pools(Protocol):
    """What the executor needs of the router (implemented by `herdsman.router`'s client)."""

    async def set_routes(self, env: str, routes: list[dict[str, Any]]) -> None:
        """Make the routes of ``env`` exactly ``routes`` (pools of routes that stay are kept)."""
        ...

    async def set_pool(
        self, route: str, backends: list[tuple[str, str, int]], *, interim: bool = False
    ) -> None:
        """Replace the route's pool atomically with (instance id, address, weight) backends."""
        ...

    async def drain(self, route: str, addresses: list[str], timeout: float, *, hung: bool = False) -> None:
        """Wait until the backends (already out of the pool) have no request in flight, or timeout;
        ``hung`` backends' requests that wait for a first byte are ended (retried) at once."""
        ...

    async def stats(self) -> dict[str, Any]:
        """Per route: its backends' cumulative counters and latency histograms (a canary's verdict)."""
        ...


class Executor(AdmissionSteps, CanarySteps, BurstSteps):
    pools: Pools | None  # the whole router protocol (the canary steps need only part of it)

    def __init__(self, target: Target, state: StateStore, driver: Driver, pools: Pools | None) -> None:
        self.target = target
        self.state = state
        self.driver = driver
        self.pools = pools
        self.progress: collections.deque[str] = collections.deque(maxlen=500)  # the latest lines
        self.listeners: list[Callable[[str], None]] = []  # e.g. the CLI printing as it goes
        # what start and the last listing said of each instance: a rollout does not ask again
        self.known: dict[str, InstanceState] = {}
        # instances to keep in quarantine when they retire (a failed canary's), with why
        self.quarantining: dict[str, str] = {}
        # services whose canary's fresh baseline could not start, with why (deploy/canary.py)
        self.no_fresh: dict[str, str] = {}
        # steps the agent adds (e.g. "quarantine"), applied by the agent's own code
        self.extra_ops: dict[str, Callable[[Step, Release], Awaitable[None]]] = {}

    def saw(self, listing: list[InstanceState]) -> None:
        """A full listing of what runs: what is known of each instance starts from it."""
        self.known = {i.id: i for i in listing}

    def say(self, message: str) -> None:
        self.progress.append(message)
        for listener in list(self.listeners):
            listener(message)

    @contextlib.contextmanager
    def listening(self, listener: Callable[[str], None] | None) -> Iterator[None]:
        """Send each progress line to ``listener`` too, while the block runs."""
        if listener is None:
            yield
            return
        self.listeners.append(listener)
        try:
            yield
        finally:
            self.listeners.remove(listener)

    # planning -------------------------------------------------------------------------------------
    async def plan(
        self,
        release: Release,
        *,
        current: list[InstanceState] | None = None,
        services: Collection[str] | None = None,
        absent: Collection[str] = (),
        reverting: bool = False,
    ) -> list[Step]:
        """Steps from what runs (``current``, default: the driver's list) to ``release``, for every
        service or only ``services``; instances in ``absent`` are planned as if gone (the agent
        quarantines them itself). Replica counts set at run time (`herd scale`) win over the release's.
        ``reverting``: back to the release that served, at once (a canary strategy is not judged
        against the release that just failed: its instances leave the pool in the first step)."""
        if current is None:
            current = await self.driver.list(self.target.selector)
        self.saw(current)
        scales = self.state.scales(self.target.env)
        configs = {name: entry.config for name, entry in release.services().items()}
        running: dict[str, list[Running]] = {}
        for i in current:
            if i.id not in absent:
                fresh = i.labels.get(BASELINE_LABEL) == "fresh"
                running.setdefault(i.service, []).append(
                    Running(i.id, i.release, i.state == "running", baseline=fresh)
                )
        policies = {name: effective_policy(config, scales.get(name)) for name, config in configs.items()}
        if reverting:
            policies = {
                name: dataclasses.replace(p, strategy="rolling") if p.strategy == "canary" else p
                for name, p in policies.items()
            }
        prefix = token.token_hex(2)
        return plan_release(
            running,
            release.number,
            policies,
            lambda name: id_maker(id_base(self.target.env, name), release.number, prefix),
            services,
            lambda name, serving: id_maker(id_base(self.target.env, name), serving, prefix + "b"),
        )

    # running --------------------------------------------------------------------------------------
    async def rollout(self, release: Release, previous: Release | None, *, migrate: bool = False) -> None:
        """Roll ``release`` out; with ``migrate``, its services' migrations run first (see
        `migrate.py`): a failed one restores the data and stops here, before any new instance."""
        migrated = []
        self.no_fresh.clear()  # a fresh baseline that could not start is this rollout's news only
        if migrate:
            from herdsman.deploy.migrate import Migrator

            migrator = Migrator(self.target, self.state, self.driver, self.say)
            try:
                migrated = await migrator.run(release)
            except Exception as exc:
                failure = as_deploy_error(exc)
                self.state.set_release_status(self.target.env, release.number, "failed", failure.message)
                raise failure from exc
        steps = await self.plan(release)
        strategy = ",".join(sorted({e.config.deploy.strategy for e in release.services().values()}))
        record = self.state.start_rollout(
            self.target.env,
            previous.number if previous else None,
            release.number,
            strategy or "rolling",
            steps,
        )
        self.state.event(
            self.target.env,
            "rollout",
            f"rollout {record.id} to release {release.number} started",
            release=release.number,
            steps=len(steps),
        )
        started = time.monotonic()
        seq = 0
        try:
            await self.set_routes(release)
            for seq, step in enumerate(steps):
                self.state.mark_step(record.id, seq, "started")
                await self.apply(step, release)
                self.state.mark_step(record.id, seq, "done")
        except Exception as exc:
            failure = as_deploy_error(exc)
            self.state.mark_step(record.id, seq, "failed", str(failure))
            self.say(f"release {release.number} failed: {failure.message}; reverting")
            self._keep_failed_canary(failure, release)
            await self.revert(previous)
            failure = self._data_after_failure(failure, release, migrated)
            self.state.finish_rollout(record.id, "reverted", failure.message)
            self.state.set_release_status(self.target.env, release.number, "failed", failure.message)
            self.state.event(
                self.target.env,
                "rollout",
                f"release {release.number} failed and was reverted",
                release=release.number,
                reason=failure.message,
            )
            raise failure from None
        self.state.finish_rollout(record.id, "done")
        if previous is not None and previous.number != release.number:
            self.state.set_release_status(self.target.env, previous.number, "superseded")
        self.state.set_release_status(self.target.env, release.number, "deployed")
        self.state.event(
            self.target.env,
            "rollout",
            f"release {release.number} deployed",
            release=release.number,
            seconds=round(time.monotonic() - started, 3),
        )

    def _data_after_failure(self, failure: DeployError, release: Release, migrated: list[Any]) -> DeployError:
        """A migration ran, then the release failed: keep the migrated data (and say so plainly), or
        restore it where the service asks for `rollback_data`."""
        if not migrated:
            return failure
        from herdsman.deploy.migrate import Migrator

        notes = []
        for done in migrated:
            config = release.services()[done.service].config
            if config.migrate is not None and config.migrate.rollback_data:
                Migrator(self.target, self.state, self.driver, self.say).restore(done.snapshots)
                notes.append(
                    f"{done.service}: its data was restored from the snapshot (rollback_data = true)"
                )
            else:
                notes.append(
                    f"{done.service}: its migration succeeded and the data STAYS MIGRATED; the previous "
                    "release now runs on it and must tolerate the new schema (set rollback_data = true "
                    "to restore the snapshot instead)"
                )
        return DeployError(failure.message + "\n" + "\n".join(notes), hint=failure.hint)

    async def revert(self, previous: Release | None) -> None:
        """Plan and apply the way back to ``previous`` (or to nothing). Failures here are reported
        as events, not raised: the original failure is what the user must see."""
        if previous is None:
            for instance in await self.driver.list(self.target.selector):
                await self.driver.stop(instance.id, 5)
            return
        try:
            await self.set_routes(previous)
            for step in await self.plan(previous, reverting=True):
                await self.apply(step, previous)
        except DeployError as exc:
            self.state.event(self.target.env, "rollout", f"revert to release {previous.number} failed: {exc}")

    async def set_routes(self, release: Release) -> None:
        """The routes (listen address, host, drain timeout) of the release being rolled out: a
        rollback to a release whose route differs listens where that release said."""
        if self.pools is None:
            return
        from herdsman.router.client import routes_of

        configs = {name: entry.config for name, entry in release.services().items()}
        await self.pools.set_routes(self.target.env, routes_of(self.target.env, configs))

    async def apply(self, step: Step, release: Release) -> None:
        op, service, ids = step["op"], step["service"], list(step["instances"])
        entry = release.services().get(service)
        if op == "start":
            assert entry is not None
            self.say(f"{service}: starting {listed(ids)}")
            await asyncio.gather(*(self._start(i, service, release, entry) for i in ids))
        elif op == "admit":
            assert entry is not None
            await asyncio.gather(*(self._admit(i, service, entry) for i in ids))
            self.say(f"{service}: {listed(ids)} healthy")
        elif op == "grow":
            assert entry is not None
            await self._grow(step, release, entry)
        elif op == "pool":
            await self._pool(service, ids)
        elif op == "baseline":
            await self._fresh_baseline(step)
        elif op == "weigh":
            await self._weigh(step)
        elif op == "judge":
            assert entry is not None
            await self._judge(step, entry, release)
        elif op == "retire":
            await self._retire(service, ids, entry)
        elif op in self.extra_ops:
            await self.extra_ops[op](step, release)
        else:
            raise DeployError(f"unknown step {op!r}")

    async def _start(
        self,
        instance_id: str,
        service: str,
        release: Release,
        entry: ServiceRelease,
        labels: dict[str, str] | None = None,
    ) -> None:
        spec = await asyncio.to_thread(self.target.spec, instance_id, service, release.number, entry)
        if labels:
            spec = dataclasses.replace(spec, labels={**spec.labels, **labels})
        self.known[instance_id] = await self.driver.start(spec)
        self.state.event(
            self.target.env,
            "instance",
            f"started {instance_id}",
            service=service,
            instance=instance_id,
            release=release.number,
        )

    async def _pool(
        self, service: str, ids: list[str], weights: dict[str, int] | None = None, *, interim: bool = False
    ) -> None:
        """Set the pool of ``service`` to the running ones of ``ids``; ``interim``: a change another
        will follow within a moment (a burst's), which the router may save with the next one."""
        if self.pools is None:
            return
        backends = []
        for instance_id in ids:
            state = await self._state(instance_id)
            if state is not None and state.state == "running" and state.port:
                backends.append((instance_id, state.address, (weights or {}).get(instance_id, 1)))
        await self.pools.set_pool(route_name(self.target.env, service), backends, interim=interim)

    async def _retire(self, service: str, ids: list[str], entry: ServiceRelease | None) -> None:
        states = [s for s in [await self._state(i) for i in ids] if s is not None]
        config = entry.config if entry else None
        if self.pools is not None and config is not None and config.route is not None:
            addresses = [s.address for s in states if s.address]
            await self.pools.drain(
                route_name(self.target.env, service), addresses, config.route.drain_timeout
            )
        grace = config.stop_grace if config is not None else 10.0
        await asyncio.gather(*(self.driver.stop(s.id, grace, keep=self._quarantine(s)) for s in states))
        for s in states:
            self.known.pop(s.id, None)
            self.state.event(
                self.target.env,
                "instance",
                f"retired {s.id}",
                service=service,
                instance=s.id,
                release=s.release,
            )
        if states:
            self.say(f"{service}: retired {listed([s.id for s in states])}")


def as_deploy_error(exc: Exception) -> DeployError:
    """Any failure of a rollout as the DeployError it is reported as: a driver's error keeps its
    message and hint, anything else (an OSError of the machine, a bug) says what it was."""
    if isinstance(exc, DeployError):
        return exc
    if isinstance(exc, HerdError):
        return DeployError(exc.message, hint=exc.hint)
    return DeployError(f"{type(exc).__name__}: {exc}", hint="`herd events` and the agent's log say more")
