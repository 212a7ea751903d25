"""The canary's effectful steps: a fresh baseline, weigh (exact request shares) and judge (a verdict
over a pause).

The planner (`plan._canary`) decides the steps. A fresh baseline (`baseline` step) is as many new
instances of the serving release as the canary has, taking the same share of requests, so the
canary (cold) is not compared with instances warmed for hours (caches, JIT, pools); where the
planner or the machine does not allow it (a start that fails: a port, a limit) the canary is
judged against the serving instances, and every verdict says which baseline it used and why.
`verdict.judge` decides pass, fail or hold from numbers; this reads the numbers from the router
(per-backend counters and latency histograms, cumulative, so a window is the difference of two
readings), watches that the canary's instances still run, runs the service's custom checks
(`[[service.NAME.canary.checks]]`, health.py's kinds) against every canary instance when a
step's numbers pass, and records every verdict with its numbers and its baseline as a `canary`
event. A fail raises the DeployError that makes the executor revert: traffic goes back to the
serving release at once, and the fresh baseline retires with the canary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from herdsman.deploy.plan import Step, share_weights
from herdsman.deploy.target import Target, quarantine_record, route_name
from herdsman.deploy.verdict import Rules, Verdict, Window, combine, judge
from herdsman.drivers.base import BASELINE_LABEL, Driver, InstanceState
from herdsman.errors import DeployError, HerdError
from herdsman.health import Ran, probe
from herdsman.spec.models import HealthCheck, Service
from herdsman.state import Release, ServiceRelease, StateStore


class CanaryFailed(DeployError):
    """The canary's verdict was a fail: its instances are named, so they can be kept."""

    def __init__(self, message: str, hint: str, service: str, instances: Sequence[str]) -> None:
        super().__init__(message, hint=hint)
        self.service, self.instances = service, tuple(instances)


WATCH_EVERY = 0.25  # seconds between looks at the canary's instances during a pause


def against(step: Mapping[str, Any]) -> str:
    """Which baseline a weigh or judge step uses, in words: "fresh", or "serving (why)"."""
    if step.get("against", "serving") == "fresh":
        return "fresh"
    return f"serving ({step['why']})" if step.get("why") else "serving"


class Pools(Protocol):
    """What the canary needs of the router: exact weights and the counters."""

    async def set_pool(
        self, route: str, backends: list[tuple[str, str, int]], *, interim: bool = False
    ) -> None: ...

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
        self, pools: Pools, driver: Driver, state: StateStore, env: str, say: Callable[[str], None]
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
        weight, look, which = int(step["weight"]), int(step.get("look", 1)), against(step)
        if self.decision(service, release) == "promote":
            return self.promoted(service, release, weight, {}, which)
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
        self.say(f"{service}: judging the canary at {weight}% for {pause:g}s against a {which} baseline")

        async def now() -> Verdict:
            end_canary, end_baseline = await self.readings(route, canary, baseline)
            return judge(end_canary.minus(start[0]), end_baseline.minus(start[1]), rules, look=look)

        until = began + pause
        while True:
            verdict = await now()
            self.state.set_canary(
                self.env, service, release, weight, "judging", verdict.numbers, verdict.reason, which
            )
            decided = self.decision(service, release)
            if decided == "promote":
                return self.promoted(service, release, weight, verdict.numbers, which)
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
        if verdict.outcome == "pass" and settings.checks:
            verdict = await self.checked(verdict, settings.checks, canary)
        self.record(service, release, weight, verdict, which)
        self.state.set_canary(
            self.env,
            service,
            release,
            weight,
            "passed" if verdict.outcome == "pass" else "failed",
            verdict.numbers,
            verdict.reason,
            which,
        )
        if verdict.outcome == "fail":
            kept = " (kept: herd quarantine)" if config.canary.on_fail == "quarantine" else ""
            raise CanaryFailed(
                f"the canary of {service} failed at {weight}% of requests: {verdict.reason} "
                f"(baseline: {which})",
                "the previous release serves all requests again; `herd events --kind canary` "
                f"has the numbers of every verdict{kept}",
                service,
                canary,
            )
        self.say(f"{service}: canary at {weight}% passed: {verdict.reason} (baseline: {which})")
        return verdict

    async def checked(
        self, verdict: Verdict, checks: Sequence[HealthCheck], canary: Sequence[str]
    ) -> Verdict:
        """`[service.NAME.canary] checks`: each against each canary instance (a command inside it,
        an HTTP or TCP check to its address); the first failing one fails the canary, its output
        (status line, or the command's exit code and last line) the reason."""
        for instance_id in canary:
            state = await self.driver.inspect(instance_id)
            port = state.port if state is not None else None
            for index, check in enumerate(checks):

                def inside(argv: Sequence[str], timeout: float, target: str = instance_id) -> Awaitable[Ran]:
                    return self.driver.exec(target, argv, timeout)

                result = await probe(check, "127.0.0.1", port, inside)
                what = " ".join(check.command) if check.type == "command" else f"{check.type} {check.path}"
                if not result.ok:
                    reason = f"check {index + 1} ({what}) failed on {instance_id}: {result.detail}"
                    return Verdict("fail", reason, verdict.numbers)
                self.say(f"canary check {index + 1} ({what}) passed on {instance_id}: {result.detail}")
        return Verdict("pass", f"{verdict.reason}; {len(checks)} check(s) passed", verdict.numbers)

    def decision(self, service: str, release: int) -> str:
        for row in self.state.canaries(self.env):
            if row["service"] == service and row["release"] == release:
                return str(row["decision"])
        return ""

    def promoted(
        self, service: str, release: int, weight: int, numbers: Mapping[str, float], which: str
    ) -> Verdict:
        verdict = Verdict("pass", "promoted by hand (herd canary promote)", dict(numbers))
        self.record(service, release, weight, verdict, which)
        self.state.set_canary(self.env, service, release, weight, "promoted", numbers, verdict.reason, which)
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

    def record(self, service: str, release: int, weight: int, verdict: Verdict, which: str) -> None:
        self.state.event(
            self.env,
            "canary",
            f"canary at {weight}%: {verdict.outcome}: {verdict.reason} (baseline: {which})",
            service=service,
            release=release,
            weight=weight,
            outcome=verdict.outcome,
            numbers=verdict.numbers,
            baseline=which,
        )


class CanarySteps:
    """The executor's canary steps (a mixin of `execute.Executor`, which has these fields): weigh,
    judge, and keeping a failed canary's instances when its service says `on_fail = "quarantine"`."""

    pools: Pools | None
    driver: Driver
    state: StateStore
    target: Target
    quarantining: dict[str, str]  # instance id -> why it is kept when it retires
    no_fresh: dict[str, str]  # service -> why its fresh baseline could not start
    known: dict[str, InstanceState]  # what is known of each instance (execute.Executor)

    def say(self, line: str) -> None:
        raise NotImplementedError

    async def _start(
        self,
        instance_id: str,
        service: str,
        release: Release,
        entry: ServiceRelease,
        labels: dict[str, str] | None = None,
    ) -> None:
        raise NotImplementedError

    async def _admit(self, instance_id: str, service: str, entry: ServiceRelease) -> None:
        raise NotImplementedError

    async def _pool(self, service: str, ids: list[str], weights: dict[str, int] | None = None) -> None:
        raise NotImplementedError

    def _quarantine(self, state: InstanceState) -> Path | None:
        """Where a retiring instance is kept, if it is to be (see `_keep_failed_canary`)."""
        reason = self.quarantining.pop(state.id, None)
        if reason is None:
            return None
        from herdsman.quarantine import Quarantine

        info = quarantine_record(state, reason)
        place = Quarantine(self.target.home).record(state.id, info, self.driver.log_file(state.id))
        self.state.event(
            self.target.env,
            "quarantine",
            f"quarantined {state.id}: {reason}; evidence kept in {place}",
            service=state.service,
            instance=state.id,
            release=state.release,
        )
        return place / "tmp"

    async def _fresh_baseline(self, step: Step) -> None:
        """Start and admit a canary's fresh baseline: new instances of the serving release, labelled
        so that a new agent knows them. If they cannot (a port taken, a limit of the machine, a
        failing health check), they are stopped and the canary is judged against the serving
        instances instead, with that reason on every verdict."""
        service, ids, number = step["service"], list(step["instances"]), int(step["release"])
        self.no_fresh.pop(service, None)
        release = self.state.release(self.target.env, number)
        entry = release.services().get(service)
        if entry is None:
            self.no_fresh[service] = f"release {number} has no service {service!r}"
            return
        self.say(f"{service}: starting a fresh baseline of release {number}: {', '.join(ids)}")
        try:
            labels = {BASELINE_LABEL: "fresh"}

            def start(i: str) -> Awaitable[None]:
                return self._start(i, service, release, entry, labels)

            def admit(i: str) -> Awaitable[None]:
                return self._admit(i, service, entry)

            # every start (then every admission) ends before the outcome counts: none starts later
            for phase in (start, admit):
                outcomes = await asyncio.gather(*(phase(i) for i in ids), return_exceptions=True)
                failed = [o for o in outcomes if isinstance(o, BaseException)]
                if failed:
                    raise failed[0]
        except HerdError as exc:
            why = f"the fresh baseline could not start: {exc.message.splitlines()[0]}"
            self.no_fresh[service] = why
            for instance_id in ids:
                if await self.driver.inspect(instance_id) is not None:
                    await self.driver.stop(instance_id, entry.config.stop_grace)
                self.known.pop(instance_id, None)
            self.state.event(self.target.env, "canary", f"{service}: {why}", service=service)
            self.say(f"{service}: {why}; the canary is judged against the serving instances")
            return
        self.say(f"{service}: fresh baseline {', '.join(ids)} healthy")

    def _sides(self, step: Step) -> Step:
        """The step as it runs: a fresh baseline that could not start leaves the serving instances
        as the baseline, with the reason."""
        why = self.no_fresh.get(step["service"])
        if step.get("against") != "fresh" or why is None:
            return step
        return {**step, "baseline": list(step["serving"]), "serving": [], "against": "serving", "why": why}

    async def _weigh(self, step: Step) -> None:
        """The pool is the canary, the baseline and the other serving instances: against a fresh
        baseline the canary and it take exactly ``weight``% of requests each and the serving
        instances the rest; against the serving ones, the canary ``weight``% and they the rest."""
        step = self._sides(step)
        service, canary, weight = step["service"], list(step["instances"]), int(step["weight"])
        baseline, serving = list(step["baseline"]), list(step.get("serving", ()))
        fresh = step.get("against") == "fresh"
        shares = share_weights(
            [
                (len(canary), weight),
                (len(baseline), weight if fresh else 100 - weight),
                (len(serving), 100 - 2 * weight if fresh else 0),
            ]
        )
        weights = {
            **dict.fromkeys(serving, shares[2]),
            **dict.fromkeys(baseline, shares[1]),
            **dict.fromkeys(canary, shares[0]),
        }
        await self._pool(service, [i for i in canary + baseline + serving if weights[i]], weights)
        self.say(
            f"{service}: the canary ({', '.join(canary)}) takes {weight}% of requests, "
            f"judged against a {against(step)} baseline"
        )

    async def _judge(self, step: Step, entry: ServiceRelease, release: Release) -> None:
        if self.pools is None:
            raise DeployError("a canary needs the router, and this deployment has none")
        route = route_name(self.target.env, step["service"])
        judge = CanaryJudge(self.pools, self.driver, self.state, self.target.env, self.say)
        await judge.judge(self._sides(step), route, entry.config, release.number)

    def _keep_failed_canary(self, failure: DeployError, release: Release) -> None:
        """A canary failed and its service says `on_fail = "quarantine"`: the revert keeps its
        instances (out of the pool, stopped, their record, log and /tmp in .herd/quarantine)."""
        if not isinstance(failure, CanaryFailed):
            return
        entry = release.services().get(failure.service)
        if entry is not None and entry.config.canary.on_fail == "quarantine":
            for instance_id in failure.instances:
                self.quarantining[instance_id] = (
                    f"failed canary of release {release.number}: {failure.message}"
                )
