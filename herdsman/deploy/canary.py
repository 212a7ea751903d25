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
        for lack of traffic, keep waiting up to `max_wait`. Raises DeployError on a fail. The live
        numbers go to the state store as it waits (`herd canary status`), and an operator's
        `herd canary promote` or `abort` is obeyed within a fraction of a second."""
        service, canary, baseline = step["service"], list(step["instances"]), list(step["baseline"])
        weight, look = int(step["weight"]), int(step.get("look", 1))
        if self.decision(service, release) == "promote":
            return self.promoted(service, release, weight, {})
        settings = config.canary
        rules = Rules(
            max_error_increase=settings.max_error_increase,
            max_latency_ratio=settings.max_latency_ratio,
            min_latency_increase_ms=settings.min_latency_increase * 1000,
            min_requests=settings.min_requests,
        )
        start = await self.readings(route, canary, baseline)
        began = time.monotonic()
        pause = config.deploy.canary_pause
        self.say(f"{service}: judging the canary at {weight}% for {pause:g}s")

        async def now() -> Verdict:
            end_canary, end_baseline = await self.readings(route, canary, baseline)
            return judge(end_canary.minus(start[0]), end_baseline.minus(start[1]), rules, look=look)

        until = began + pause
        while True:
            verdict = await now()
            self.state.set_canary(
                self.env, service, release, weight, "judging", verdict.numbers, verdict.reason
            )
            decided = self.decision(service, release)
            if decided == "promote":
                return self.promoted(service, release, weight, verdict.numbers)
            if decided == "abort":
                verdict = Verdict("fail", "aborted by hand (herd canary abort)", verdict.numbers)
                break
            if time.monotonic() >= until:
                waited = time.monotonic() - began
                if verdict.outcome != "hold":
                    break
                if waited - pause >= settings.max_wait:  # waited max_wait: too little traffic
                    outcome = settings.too_little_traffic
                    reason = f"{verdict.reason}, after {waited:.0f}s (too_little_traffic = {outcome!r})"
                    verdict = Verdict(outcome, reason, verdict.numbers)
                    break
                until = time.monotonic() + max(1.0, min(pause, 5.0))
            try:
                await self.watch(canary, min(until, time.monotonic() + 1.0))
            except DeployError as stopped:  # a canary instance stopped: the verdict is that
                verdict = Verdict("fail", stopped.message, verdict.numbers)
                break
        self.record(service, release, weight, verdict)
        self.state.set_canary(
            self.env,
            service,
            release,
            weight,
            "passed" if verdict.outcome == "pass" else "failed",
            verdict.numbers,
            verdict.reason,
        )
        if verdict.outcome == "fail":
            raise DeployError(
                f"the canary of {service} failed at {weight}% of requests: {verdict.reason}",
                hint="the previous release serves all requests again; `herd events --kind canary` "
                "has the numbers of every verdict",
            )
        self.say(f"{service}: canary at {weight}% passed: {verdict.reason}")
        return verdict

    def decision(self, service: str, release: int) -> str:
        for row in self.state.canaries(self.env):
            if row["service"] == service and row["release"] == release:
                return str(row["decision"])
        return ""

    def promoted(self, service: str, release: int, weight: int, numbers: Mapping[str, float]) -> Verdict:
        verdict = Verdict("pass", "promoted by hand (herd canary promote)", dict(numbers))
        self.record(service, release, weight, verdict)
        self.state.set_canary(self.env, service, release, weight, "promoted", numbers, verdict.reason)
        self.say(f"{service}: canary at {weight}% promoted by hand")
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
