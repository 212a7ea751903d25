"""Healing: applying the fleet's plans for the services where something changed.

Each dirty service is healed in its own task (a slow admission in one service does not hold up
another), through the same executor as a deploy, so a replacement is admitted by its health check
before it takes traffic. The one step of the agent's own is `quarantine`: drain the instance (it is
already out of the pool), keep its record, log and what it wrote, stop it, prune old evidence.
An unhealthy instance's drain starts as soon as it leaves the pool, not when its quarantine step
comes after the replacement's start and admission: the requests it holds will not be answered,
so they are retried elsewhere at once instead of waiting out a slow start (seconds on a busy
Docker engine) and the client's patience with it.
A replacement that fails to become healthy is stopped (its log kept) and counts as a crash, so an
image that keeps crashing is retried with exponential backoff instead of in a tight loop.
"""

from __future__ import annotations

import asyncio
import secrets as token
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from herdsman.agent.fleet import Seen, Want, heal_plan
from herdsman.agent.observed import Observed
from herdsman.deploy.instances import id_base
from herdsman.deploy.plan import Step, retire_removed
from herdsman.deploy.run import Deployment
from herdsman.deploy.target import id_maker, listed, quarantine_record, route_name
from herdsman.errors import DeployError
from herdsman.quarantine import Quarantine
from herdsman.state import Release


class Healer:
    def __init__(
        self,
        observed: Observed,
        deployment: Deployment,
        quarantine: Quarantine,
        home: Path,
        resync: Callable[[], Awaitable[Any]],
    ) -> None:
        self.observed = observed
        self.deployment = deployment
        self.quarantine = quarantine
        self.home = home
        self.resync = resync  # a full listing, after a heal changed what runs
        self.counted: set[str] = set()  # exited instances already counted as crashes
        self.draining: dict[str, asyncio.Task[None]] = {}  # unhealthy instance -> its drain, begun early
        deployment.executor.extra_ops["quarantine"] = self._quarantine

    @property
    def env(self) -> str:
        return self.deployment.env

    async def heal(self, release: Release, dirty: dict[str, list[Seen]], wants: dict[str, Want]) -> None:
        now = time.monotonic()
        jobs = []
        for service, seen in dirty.items():
            want = wants.get(service)
            if want is None:  # a service no longer in the release: retire what is left of it
                ids = [s.id for s in seen]
                if ids:
                    jobs.append(self._apply(service, retire_removed(service, ids), release))
                continue
            self._count_crashes(service, seen)
            wait = self.observed.backoff.wait(service, now)
            if wait > 0:
                self.observed.later(service, wait)
                continue
            new_id = id_maker(
                id_base(self.env, service), release.number, token.token_hex(2)
            )  # a preview's: its own
            steps = heal_plan(service, seen, want, new_id)
            if steps:
                jobs.append(self._apply(service, steps, release))
        await asyncio.gather(*jobs)

    def _count_crashes(self, service: str, seen: list[Seen]) -> None:
        """Say (once) that an instance exited; it is replaced in this pass."""
        for s in seen:
            if s.running or s.id in self.counted:
                continue
            self.counted.add(s.id)
            self.observed.counts.restarts[service] += 1
            lived = max(0.0, time.time() - s.started) if s.started else 0.0
            self.deployment.state.event(
                self.env,
                "heal",
                f"{s.id} {s.detail or 'exited'} after {lived:.1f}s; replacing it now",
                service=service,
                instance=s.id,
                release=s.release,
            )

    async def _apply(self, service: str, steps: list[Step], release: Release) -> None:
        executor = self.deployment.executor
        started: list[str] = []
        grown: list[str] = []
        unpooled: list[str] = []  # started, not yet in the pool: stopped if the pass fails
        # (a burst stops its own failures; those in the pool serve, and are kept: stopped, they
        # would fail the requests they hold; the next pass plans from what runs)
        try:
            for step in steps:
                if step["op"] in ("start", "grow"):
                    (started if step["op"] == "start" else grown).extend(step["instances"])
                    if step["op"] == "start":
                        unpooled.extend(step["instances"])
                    self.deployment.state.event(
                        self.env,
                        "heal",
                        f"{service}: starting {listed(step['instances'])}",
                        service=service,
                    )
                await executor.apply(step, release)
                if step["op"] == "pool":
                    serving = set(step["instances"])
                    unpooled = [i for i in unpooled if i not in serving]
                    self._drain_hung_now(steps, release)
                if step["op"] == "retire":
                    for instance in step["instances"]:
                        self._forget(service, instance)
        except DeployError as failure:
            for instance in unpooled:  # a replacement that did not make it: stop it, keep its log
                await self.deployment.driver.stop(instance, 5)
                self._forget(service, instance)
            backoff = self.observed.backoff
            delay = backoff.failed(service, time.monotonic(), failure.message.splitlines()[0])
            self.deployment.state.set_note(self.env, service, backoff.note(service, time.monotonic()))
            then = "trying again now" if delay == 0 else f"next attempt in {delay:.1f}s"
            self.deployment.state.event(
                self.env, "heal", f"{service}: {failure.message}\n{then}", service=service
            )
            self.observed.later(service, delay)
            return
        finally:
            await self.resync()
        if started or grown:
            if service in self.observed.backoff.streak:
                self.observed.backoff.healthy(service)
                self.deployment.state.set_note(self.env, service, "")
            self.deployment.state.event(
                self.env, "heal", f"{service}: {listed(started + grown)} healthy and serving", service=service
            )

    def _forget(self, service: str, instance: str) -> None:
        self.deployment.executor.known.pop(instance, None)
        self.observed.forget(service, instance)
        self.counted.discard(instance)

    # the agent's own step -------------------------------------------------------------------------
    def _drain_hung_now(self, steps: list[Step], release: Release) -> None:
        """The unhealthy instances to quarantine have just left the pool: begin their drains."""
        for step in steps:
            if step["op"] == "quarantine" and step.get("unhealthy"):
                instance_id = step["instances"][0]
                if instance_id not in self.draining:
                    self.draining[instance_id] = asyncio.create_task(self._drain(step, release))

    async def _drain(self, step: Step, release: Release) -> None:
        """Drain the instance out of its route; an unhealthy one's unanswered requests go elsewhere now."""
        service, instance_id = step["service"], step["instances"][0]
        entry = release.services().get(service)
        config = entry.config if entry is not None else None
        pools = self.deployment.executor.pools
        if pools is None or config is None or config.route is None:
            return
        state = self.deployment.executor.known.get(instance_id) or await self.deployment.driver.inspect(
            instance_id
        )
        if state is None or not state.address:
            return
        hung = bool(step.get("unhealthy"))  # failing its checks: what it holds will not be answered
        await pools.drain(
            route_name(self.env, service), [state.address], config.route.drain_timeout, hung=hung
        )

    async def _quarantine(self, step: Step, release: Release) -> None:
        service, instance_id, reason = step["service"], step["instances"][0], str(step.get("reason", ""))
        driver = self.deployment.driver
        early = self.draining.pop(instance_id, None)
        state = await driver.inspect(instance_id)
        if state is None:
            if early is not None:
                early.cancel()
            return
        entry = release.services().get(service)
        config = entry.config if entry is not None else None
        await (early if early is not None else self._drain(step, release))
        info = quarantine_record(
            state,
            reason,
            command=config.command if config else (),
            health=[
                {"ok": r.ok, "detail": r.detail, "seconds": round(r.seconds, 4)}
                for r in self.observed.watcher.results.get(instance_id, [])
            ],
        )
        place = self.quarantine.record(instance_id, info, driver.log_file(instance_id))
        staged = self.home / "run" / "drift" / instance_id
        if staged.is_dir():  # what drifted, copied when it was found
            shutil.rmtree(place / "drift", ignore_errors=True)
            shutil.move(staged, place / "drift")
        await driver.stop(instance_id, config.stop_grace if config else 10.0, keep=place / "tmp")
        self._forget(service, instance_id)
        self.observed.counts.quarantines[service] += 1
        kept_env = state.labels.get("herd.env", self.env)
        pruned = self.quarantine.prune(service, config.quarantine_keep if config else 3, kept_env)
        self.deployment.state.event(
            self.env,
            "quarantine",
            f"quarantined {instance_id}: {reason}; evidence kept in {place}"
            + (f" (purged older: {', '.join(pruned)})" if pruned else ""),
            service=service,
            instance=instance_id,
            release=state.release,
        )
