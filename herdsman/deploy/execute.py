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
import functools
import secrets as token
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from herdsman.deploy.instances import instance_spec
from herdsman.deploy.plan import Policy, Running, Step, plan_service
from herdsman.deploy.release import service_config
from herdsman.drivers.base import Driver, InstanceSpec, InstanceState
from herdsman.errors import DeployError
from herdsman.health import HealthTracker, probe
from herdsman.image.oci import ImageStore
from herdsman.state import Release, StateStore


class Pools(Protocol):
    """What the executor needs of the router (implemented by `herdsman.router`'s client)."""

    async def set_pool(self, route: str, backends: list[tuple[str, str, int]]) -> None:
        """Replace the route's pool atomically with (instance id, address, weight) backends."""
        ...

    async def drain(self, route: str, addresses: list[str], timeout: float) -> None:
        """Wait until the backends (already out of the pool) have no request in flight, or timeout."""
        ...


@dataclass
class Target:
    env: str
    stack: str
    home: Path
    images: ImageStore
    secrets: Mapping[str, str]
    configs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # images never change

    def spec(
        self,
        instance_id: str,
        service: str,
        release: int,
        entry: Mapping[str, Any],
        secrets: Mapping[str, str] | None = None,
    ) -> InstanceSpec:
        """What the driver starts for ``instance_id`` of ``release`` (reads the image config)."""
        return instance_spec(
            instance_id=instance_id,
            stack=self.stack,
            env_name=self.env,
            service=service,
            release=release,
            entry=entry,
            image_config=self.configs.get(entry["image"])
            or self.configs.setdefault(entry["image"], self.images.config(entry["image"])),
            home=self.home,
            secrets=self.secrets if secrets is None else secrets,
        )


def route_name(env: str, service: str) -> str:
    return f"{env}/{service}"


def id_maker(service: str, release: int, prefix: str) -> Callable[[], str]:
    """Instance ids that say what they are: web-3-a1f02 (service, release, rollout token, count)."""
    counter = iter(range(1, 1_000_000))
    return lambda: f"{service}-{release}-{prefix}{next(counter)}"


def log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 16384))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class Executor:
    def __init__(self, target: Target, state: StateStore, driver: Driver, pools: Pools | None) -> None:
        self.target = target
        self.state = state
        self.driver = driver
        self.pools = pools
        self.progress: collections.deque[str] = collections.deque(maxlen=500)  # the latest lines
        self.on_progress: Callable[[str], None] | None = None  # e.g. the CLI printing as it goes
        # steps the agent adds (e.g. "quarantine"), applied by the agent's own code
        self.extra_ops: dict[str, Callable[[Step, Release], Awaitable[None]]] = {}

    def say(self, message: str) -> None:
        self.progress.append(message)
        if self.on_progress is not None:
            self.on_progress(message)

    # planning -------------------------------------------------------------------------------------
    async def plan(
        self,
        release: Release,
        *,
        current: list[InstanceState] | None = None,
        services: Collection[str] | None = None,
        absent: Collection[str] = (),
    ) -> list[Step]:
        """Steps from what runs (``current``, default: the driver's list) to ``release``, for every
        service or only ``services``; instances in ``absent`` are planned as if gone (the agent
        quarantines them itself). Replica counts set at run time (`herd scale`) win over the release's."""
        if current is None:
            labels = {"herd.stack": self.target.stack, "herd.env": self.target.env}
            current = await self.driver.list(labels)
        scales = self.state.scales(self.target.env)
        steps: list[Step] = []
        prefix = token.token_hex(2)
        for name, entry in release.services().items():
            if services is not None and name not in services:
                continue
            config = service_config(entry)
            deploy = config.deploy
            if deploy.strategy == "canary" and services is None:
                self.say(f"{name}: the canary strategy is not available yet; rolling out with `rolling`")
            mine = [i for i in current if i.service == name and i.id not in absent]
            running = [Running(i.id, i.release, i.state == "running") for i in mine]
            policy = Policy(
                replicas=scales[name][0] if name in scales else config.replicas,
                strategy="blue-green" if deploy.strategy == "blue-green" else "rolling",
                max_surge=deploy.max_surge,
                max_unavailable=deploy.max_unavailable,
                routed=config.route is not None,
            )
            steps += plan_service(
                name, running, release.number, policy, id_maker(name, release.number, prefix)
            )
        if services is None:
            known = release.services()
            for instance in current:  # services removed from the stack
                if instance.service not in known:
                    steps.append({"op": "retire", "service": instance.service, "instances": [instance.id]})
        return steps

    # running --------------------------------------------------------------------------------------
    async def rollout(self, release: Release, previous: Release | None, *, migrate: bool = False) -> None:
        """Roll ``release`` out; with ``migrate``, its services' migrations run first (see
        `migrate.py`): a failed one restores the data and stops here, before any new instance."""
        migrated = []
        if migrate:
            from herdsman.deploy.migrate import Migrator

            migrator = Migrator(self.target, self.state, self.driver, self.say)
            try:
                migrated = await migrator.run(release)
            except DeployError as failure:
                self.state.set_release_status(self.target.env, release.number, "failed", failure.message)
                raise
        steps = await self.plan(release)
        strategy = ",".join(sorted({service_config(e).deploy.strategy for e in release.services().values()}))
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
        try:
            for seq, step in enumerate(steps):
                self.state.mark_step(record.id, seq, "started")
                await self.apply(step, release)
                self.state.mark_step(record.id, seq, "done")
        except DeployError as failure:
            self.state.mark_step(record.id, seq, "failed", str(failure))
            self.say(f"release {release.number} failed: {failure.message}; reverting")
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
            config = service_config(release.services()[done.service])
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
            labels = {"herd.stack": self.target.stack, "herd.env": self.target.env}
            for instance in await self.driver.list(labels):
                await self.driver.stop(instance.id, 5)
            return
        try:
            for step in await self.plan(previous):
                await self.apply(step, previous)
        except DeployError as exc:
            self.state.event(self.target.env, "rollout", f"revert to release {previous.number} failed: {exc}")

    async def apply(self, step: Step, release: Release) -> None:
        op, service, ids = step["op"], step["service"], list(step["instances"])
        entry = release.services().get(service)
        if op == "start":
            assert entry is not None
            self.say(f"{service}: starting {', '.join(ids)}")
            await asyncio.gather(*(self._start(i, service, release, entry) for i in ids))
        elif op == "admit":
            assert entry is not None
            await asyncio.gather(*(self._admit(i, service, entry) for i in ids))
            self.say(f"{service}: {', '.join(ids)} healthy")
        elif op == "pool":
            await self._pool(service, ids)
        elif op == "retire":
            await self._retire(service, ids, entry)
        elif op in self.extra_ops:
            await self.extra_ops[op](step, release)
        else:
            raise DeployError(f"unknown step {op!r}")

    async def _start(
        self, instance_id: str, service: str, release: Release, entry: Mapping[str, Any]
    ) -> None:
        spec = await asyncio.to_thread(self.target.spec, instance_id, service, release.number, entry)
        await self.driver.start(spec)
        self.state.event(
            self.target.env,
            "instance",
            f"started {instance_id}",
            service=service,
            instance=instance_id,
            release=release.number,
        )

    async def _admit(self, instance_id: str, service: str, entry: Mapping[str, Any]) -> None:
        """Wait until the instance passes its health check. Until its first success it is probed
        quickly (from 20 ms, doubling up to the check's interval), so a replacement that is ready
        in 100 ms takes traffic in about 100 ms, not after a whole interval."""
        config = service_config(entry)
        check = config.health
        deadline = time.monotonic() + (check.deadline if check else 60.0)
        tracker = HealthTracker.for_check(check) if check else None
        pause = 0.01
        settled = False  # no health check: it has run for min_ready
        while True:
            state = await self.driver.inspect(instance_id)
            if state is None or state.state != "running":
                what = "crashed before it became healthy"
                if check is None:
                    what = f"exited before it had run for min_ready ({config.min_ready:g}s, no health check)"
                raise self._failure(instance_id, state, what)
            if check is None or tracker is None:
                if settled or config.min_ready <= 0:
                    return  # no health check: still running after min_ready is healthy
                await asyncio.sleep(config.min_ready)
                settled = True
                continue
            inside = functools.partial(self.driver.exec, instance_id)  # a command check runs in it
            result = await probe(check, "127.0.0.1", state.port, inside)
            if tracker.record(result) or tracker.healthy:
                return
            if time.monotonic() > deadline:
                raise self._failure(
                    instance_id,
                    state,
                    f"was not healthy within {check.deadline:g}s (last check: {result.detail})",
                )
            pause = check.interval if tracker.streak_ok else min(pause * 2, check.interval)
            await asyncio.sleep(pause)

    def _failure(self, instance_id: str, state: InstanceState | None, what: str) -> DeployError:
        detail = f" ({state.detail})" if state is not None and state.detail else ""
        settle = getattr(self.driver, "settle_logs", None)  # a driver whose logs arrive late
        if settle is not None and (state is None or state.state != "running"):
            settle(instance_id)
        tail = log_tail(self.driver.log_file(instance_id))
        message = f"instance {instance_id} {what}{detail}"
        if tail:
            message += f"\n--- last lines of its log ---\n{tail}"
        return DeployError(
            message, hint="the previous release keeps serving; `herd logs` shows the whole log"
        )

    async def _pool(self, service: str, ids: list[str]) -> None:
        if self.pools is None:
            return
        backends = []
        for instance_id in ids:
            state = await self.driver.inspect(instance_id)
            if state is not None and state.state == "running" and state.port:
                backends.append((instance_id, state.address, 1))
        await self.pools.set_pool(route_name(self.target.env, service), backends)

    async def _retire(self, service: str, ids: list[str], entry: Mapping[str, Any] | None) -> None:
        states = [s for s in [await self.driver.inspect(i) for i in ids] if s is not None]
        config = service_config(entry) if entry else None
        if self.pools is not None and config is not None and config.route is not None:
            addresses = [s.address for s in states if s.address]
            await self.pools.drain(
                route_name(self.target.env, service), addresses, config.route.drain_timeout
            )
        grace = config.stop_grace if config is not None else 10.0
        await asyncio.gather(*(self.driver.stop(s.id, grace) for s in states))
        if states:
            self.say(f"{service}: retired {', '.join(s.id for s in states)}")
