"""A burst: many new instances of one service, started at an adaptive pace, each joining the pool
as soon as it is healthy.

The planner emits one `grow` step for a batch of at least `plan.BURST` new instances beside no
old ones (a scale-out, a first deploy). Started as one `start` step, a thousand instances would be
a thousand processes forked at once and a pool that changes only when the slowest is admitted;
here at most `Pace.slots` are starting (launched, not yet admitted) at a time, the window widening
while admissions keep up and halving when they slow down or the host's run queue climbs (see
`pace.py`), and the router's pool grows with every admission: the whole pool (the instances that
served before plus the admitted ones) is set again, at most every `FLUSH_EVERY` seconds, so the
router takes a handful of pool changes a second, not one per instance. A pool change costs both
sides in proportion to the pool (the whole pool is sent, and the router rebuilds its rotation), so
past `FLUSH_SIZE` backends the pause grows with the pool: at 1,000 a change every 0.25 s.

A failure stops the burst from launching more: the starts in flight finish, whatever was admitted
stays in the pool (it is healthy and serving), what failed is stopped (its log kept), and the
step raises the first failure, as a `start` + `admit` would. Planning again (a heal, a resumed
rollout, a revert) takes it from what then runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from herdsman.deploy.pace import Pace, in_proportion
from herdsman.deploy.target import Target, listed
from herdsman.drivers.base import Driver
from herdsman.errors import DeployError, HerdError
from herdsman.state import Release, ServiceRelease, StateStore

FLUSH_EVERY = 0.1  # seconds between two pool changes of one burst (small pools)
FLUSH_SIZE = 400  # pools larger than this wait longer, in proportion


def flush_pause(pool_size: int) -> float:
    """Seconds between two pool changes of a burst whose pool has ``pool_size`` backends."""
    return in_proportion(FLUSH_EVERY, pool_size, FLUSH_SIZE)


def runnable_per_core() -> float:
    """Tasks runnable now per CPU (``/proc/loadavg``'s fourth field, less the reader itself);
    0.0 where there is no /proc."""
    try:
        with open("/proc/loadavg") as handle:
            running = int(handle.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0, running - 1) / (os.cpu_count() or 1)


class PoolGrower:
    """Sets the pool to ``base`` plus the admitted instances, coalescing admissions that come
    while a change is on its way (one pool change carries them all)."""

    def __init__(self, steps: BurstSteps, service: str, base: list[str], routed: bool) -> None:
        self.steps, self.service, self.base, self.routed = steps, service, base, routed
        self.admitted: list[str] = []
        self.wanted = asyncio.Event()
        self.closing = False
        self.changes = 0
        self.task = asyncio.create_task(self._run())

    def add(self, instance: str) -> None:
        self.admitted.append(instance)
        self.wanted.set()

    async def _run(self) -> None:
        while True:
            await self.wanted.wait()
            self.wanted.clear()
            if self.routed:
                # every change but the last is interim: the router may save it with the next
                await self.steps._pool(self.service, self.base + self.admitted, interim=not self.closing)
                self.changes += 1
            if self.closing:
                if not self.wanted.is_set():  # nothing was admitted while that change was on its way
                    return
                continue
            await asyncio.sleep(flush_pause(len(self.base) + len(self.admitted)))

    async def finish(self) -> None:
        """The last change (every admitted instance is in the pool when this returns)."""
        self.closing = True
        self.wanted.set()
        await self.task

    def cancel(self) -> None:
        self.task.cancel()


class BurstSteps:
    """The executor's `grow` step (a mixin of `execute.Executor`, which has these fields)."""

    driver: Driver
    state: StateStore
    target: Target

    def say(self, line: str) -> None:
        raise NotImplementedError

    async def _pool(
        self, service: str, ids: list[str], weights: dict[str, int] | None = None, *, interim: bool = False
    ) -> None:
        raise NotImplementedError

    async def _start(self, instance_id: str, service: str, release: Release, entry: ServiceRelease) -> None:
        raise NotImplementedError

    async def _admit(self, instance_id: str, service: str, entry: ServiceRelease) -> None:
        raise NotImplementedError

    async def _grow(self, step: dict[str, Any], release: Release, entry: ServiceRelease) -> None:
        service, ids = str(step["service"]), [str(i) for i in step["instances"]]
        joining = set(ids)
        pool = step.get("pool")
        base = [str(i) for i in pool if i not in joining] if pool is not None else []
        pace = Pace()
        pace.begin(runnable_per_core())
        grower = PoolGrower(self, service, base, pool is not None)
        waiting = list(reversed(ids))
        starting: dict[asyncio.Task[None], tuple[str, int, float]] = {}
        failures: list[tuple[str, BaseException]] = []
        began = time.monotonic()
        self.say(f"{service}: starting {listed(ids)} ({pace.slots} at a time to begin with)")
        try:
            while starting or (waiting and not failures):
                while waiting and not failures and len(starting) < pace.slots:
                    instance = waiting.pop()
                    task = asyncio.create_task(self._one(instance, service, release, entry))
                    starting[task] = (instance, pace.launch(), time.monotonic())
                done, _ = await asyncio.wait(starting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    instance, ticket, launched = starting.pop(task)
                    failure = task.exception()
                    if failure is None:
                        grower.add(instance)
                        pace.admitted(ticket, time.monotonic() - launched, runnable_per_core())
                    else:
                        failures.append((instance, failure))
                        pace.failed(ticket)
            await grower.finish()
        finally:
            grower.cancel()
            for task in starting:
                task.cancel()
        seconds = time.monotonic() - began
        widest = max(pace.history or [pace.slots])
        summary = (
            f"{service}: burst of {len(ids)}: {len(grower.admitted)} of {len(ids)} healthy and in the "
            f"pool in {seconds:.1f}s (at most {widest} starting at a time, {pace.cuts} "
            f"slow-down(s){_causes(pace)}, {grower.changes} pool change(s))"
        )
        self.say(summary)
        self.state.event(
            self.target.env,
            "instance",
            summary,
            service=service,
            release=release.number,
            started=len(ids),
            admitted=len(grower.admitted),
            seconds=round(seconds, 3),
            widest=widest,
            cuts=pace.cuts,
        )
        if failures:
            await self._failed(service, ids, failures)

    async def _one(self, instance: str, service: str, release: Release, entry: ServiceRelease) -> None:
        await self._start(instance, service, release, entry)
        await self._admit(instance, service, entry)

    async def _failed(self, service: str, ids: list[str], failures: list[tuple[str, BaseException]]) -> None:
        """Stop what failed (not in the pool: its log stays) and raise the first failure."""
        for instance, _ in failures:
            with contextlib.suppress(HerdError):
                await self.driver.stop(instance, 5)
        instance, first = failures[0]
        if not isinstance(first, HerdError):
            raise first
        more = f" ({len(failures)} of {len(ids)} failed)" if len(failures) > 1 else ""
        raise DeployError(first.message + more, hint=first.hint)


def _causes(pace: Pace) -> str:
    """Why the pace slowed down, as " (run queue: N, slow admissions: M)"."""
    names = {"slow": "slow admissions", "busy": "run queue", "failed": "failures"}
    parts = [f"{names[k]}: {n}" for k, n in sorted(pace.reasons.items())]
    return f" ({', '.join(parts)})" if parts else ""
