"""The canary's two effectful steps: weigh (exact request shares) and judge (a verdict over a pause).

The planner (`plan._canary`) decides the steps; `verdict.judge` decides pass, fail or hold from
numbers; this reads the numbers from the router (per-backend counters and latency histograms,
cumulative, so a window is the difference of two readings), watches that the canary's instances
still run, and records every verdict with its numbers as a `canary` event. A fail raises the
DeployError that makes the executor revert: traffic goes back to the baseline at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from herdsman.deploy.verdict import Rules, Verdict, Window, combine, judge
from herdsman.drivers.base import Driver
from herdsman.errors import DeployError
from herdsman.spec.models import Service
from herdsman.state import StateStore

WATCH_EVERY = 0.25  # seconds between looks at the canary's instances during a pause


class Stats(Protocol):
    async def stats(self) -> dict[str, Any]: ...


def window_of(route: Mapping[str, Any], ids: Sequence[str]) -> Window:
    """The cumulative counters of ``ids``' backends on one route of the router's stats, as one side."""
    bounds = tuple(float(b) for b in route.get("latency_bounds_ms", ()))
    sides = []
    for backend in route.get("backends", []):
        if backend.get("instance") in ids:
            hist = [0] * (len(bounds) + 1)
            for index, count in (backend.get("latency_hist") or {}).items():
                hist[int(index)] = int(count)
            errors = int(backend.get("errors", 0)) + int(backend.get("responses_5xx", 0))
            sides.append(Window(int(backend.get("requests", 0)), errors, tuple(hist), bounds))
    return combine(sides, bounds)


class CanaryJudge:
    def __init__(
        self, pools: Stats, driver: Driver, state: StateStore, env: str, say: Callable[[str], None]
    ) -> None:
        self.pools, self.driver, self.state, self.env, self.say = pools, driver, state, env, say

    async def readings(
        self, route: str, canary: Sequence[str], baseline: Sequence[str]
    ) -> tuple[Window, Window]:
        stats = (await self.pools.stats()).get(route) or {}
        return window_of(stats, canary), window_of(stats, baseline)

    async def judge(self, step: Mapping[str, Any], route: str, config: Service, release: int) -> Verdict:
        """Wait `canary_pause`, then judge the window since the step began; while the verdict holds
        for lack of traffic, keep waiting up to `max_wait`. Raises DeployError on a fail."""
        service, canary, baseline = step["service"], list(step["instances"]), list(step["baseline"])
        weight, look = int(step["weight"]), int(step.get("look", 1))
        rules_config = config.canary
        rules = Rules(
            rules_config.max_error_increase, rules_config.max_latency_ratio, rules_config.min_requests
        )
        start_canary, start_baseline = await self.readings(route, canary, baseline)
        began = time.monotonic()
        pause = config.deploy.canary_pause
        self.say(f"{service}: judging the canary at {weight}% for {pause:g}s")
        await self.watch(canary, began + pause)
        while True:
            end_canary, end_baseline = await self.readings(route, canary, baseline)
            verdict = judge(
                end_canary.minus(start_canary), end_baseline.minus(start_baseline), rules, look=look
            )
            waited = time.monotonic() - began
            if verdict.outcome == "hold" and waited - pause < rules_config.max_wait:
                await self.watch(canary, time.monotonic() + max(1.0, min(pause, 5.0)))
                continue
            if verdict.outcome == "hold":  # waited max_wait: too little traffic
                outcome = rules_config.too_little_traffic
                verdict = Verdict(
                    outcome,
                    f"{verdict.reason}, after {waited:.0f}s (too_little_traffic = {outcome!r})",
                    verdict.numbers,
                )
            self.record(service, release, weight, verdict)
            if verdict.outcome == "fail":
                raise DeployError(
                    f"the canary of {service} failed at {weight}% of requests: {verdict.reason}",
                    hint="the previous release serves all requests again; `herd events --kind canary` "
                    "has the numbers of every verdict",
                )
            self.say(f"{service}: canary at {weight}% passed: {verdict.reason}")
            return verdict

    async def watch(self, canary: Sequence[str], until: float) -> None:
        """Sleep until ``until``, failing at once if a canary instance stops running."""
        while True:
            for instance_id in canary:
                state = await self.driver.inspect(instance_id)
                if state is None or state.state != "running":
                    detail = f" ({state.detail})" if state is not None and state.detail else ""
                    raise DeployError(
                        f"canary instance {instance_id} stopped running{detail}",
                        hint="its log is kept: herd logs --release N",
                    )
            left = until - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(WATCH_EVERY, left))

    def record(self, service: str, release: int, weight: int, verdict: Verdict) -> None:
        self.state.event(
            self.env,
            "canary",
            f"canary at {weight}%: {verdict.outcome}: {verdict.reason}",
            service=service,
            release=release,
            weight=weight,
            outcome=verdict.outcome,
            numbers=verdict.numbers,
        )
