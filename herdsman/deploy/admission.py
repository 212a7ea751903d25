"""Admitting a new instance: it takes traffic only once it passes its health check.

Until its first success it is probed quickly (from 10 ms, each wait half as long again as the last,
up to the check's interval), so a replacement that is ready in 100 ms takes traffic within about
150 ms, not after a whole interval. Not doubling: with waits of 10, 20, 40, 80 ms an instance ready
at 75 ms was admitted at 150 ms, and a burst's admissions, twice as slow as they need be, read as
congestion to its pace.
Whether it still runs is asked of the driver at most every LOOK_EVERY (on Docker each look is an
API round trip). An instance that crashes or stays unhealthy fails the rollout with its last log
lines (a mixin of `execute.Executor`, which has these fields).
"""

from __future__ import annotations

import asyncio
import functools
import time

from herdsman.deploy.target import log_tail
from herdsman.drivers.base import Driver, InstanceState
from herdsman.errors import DeployError
from herdsman.health import HealthTracker, probe
from herdsman.state import ServiceRelease

GROWTH = 1.5  # each wait for the first success this much longer than the last
LOOK_EVERY = 0.25  # seconds between asking the driver whether an instance being admitted still runs


class AdmissionSteps:
    driver: Driver
    known: dict[str, InstanceState]  # what the rollout knows of each instance (start, listing)

    async def _admit(self, instance_id: str, service: str, entry: ServiceRelease) -> None:
        """Wait until the instance passes its health check, probing it quickly until its first
        success (see the module docstring)."""
        config = entry.config
        check = config.health
        deadline = time.monotonic() + (check.deadline if check else 60.0)
        tracker = HealthTracker.for_check(check) if check else None
        pause = 0.01
        state, looked = self.known.get(instance_id), 0.0
        settled = False  # no health check: it has run for min_ready
        while True:
            # whether it still runs is asked of the driver at most every LOOK_EVERY (on Docker each
            # look is an API round trip); an answering probe says so already
            if state is None or check is None or time.monotonic() - looked >= LOOK_EVERY:
                state, looked = await self._look(instance_id), time.monotonic()
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
            result = await probe(check, state.host, state.port, inside)
            if tracker.record(result) or tracker.healthy:
                return
            if time.monotonic() > deadline:
                state = await self._look(instance_id)
                if state is None or state.state != "running":
                    raise self._failure(instance_id, state, "crashed before it became healthy")
                raise self._failure(
                    instance_id,
                    state,
                    f"was not healthy within {check.deadline:g}s (last check: {result.detail})",
                )
            pause = check.interval if tracker.streak_ok else min(pause * GROWTH, check.interval)
            await asyncio.sleep(pause)

    def _failure(self, instance_id: str, state: InstanceState | None, what: str) -> DeployError:
        detail = f" ({state.detail})" if state is not None and state.detail else ""
        if state is None or state.state != "running":
            self.driver.settle_logs(instance_id)  # a driver whose logs arrive late
        tail = log_tail(self.driver.log_file(instance_id))
        message = f"instance {instance_id} {what}{detail}"
        if tail:
            message += f"\n--- last lines of its log ---\n{tail}"
        return DeployError(
            message, hint="the previous release keeps serving; `herd logs` shows the whole log"
        )

    async def _look(self, instance_id: str) -> InstanceState | None:
        """Ask the driver about an instance, and remember the answer."""
        state = await self.driver.inspect(instance_id)
        if state is None:
            self.known.pop(instance_id, None)
        else:
            self.known[instance_id] = state
        return state

    async def _state(self, instance_id: str) -> InstanceState | None:
        """What is known of an instance (its start, the last listing), else the driver's answer."""
        return self.known.get(instance_id) or await self._look(instance_id)
