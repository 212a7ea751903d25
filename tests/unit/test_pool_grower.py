"""The burst's pool changes (deploy/burst.py `PoolGrower`): admissions that come while a change is
on its way are carried by the next one, and when the burst finishes every admitted instance is in
the last pool set, even one admitted while the previous change was still on its way (a burst of
999 once ended with its last instance running, healthy and out of the pool)."""

from __future__ import annotations

import asyncio

from herdsman.deploy.burst import BurstSteps, PoolGrower


class Recorder(BurstSteps):
    """Records each pool set; a change takes ``delay`` seconds, as a router round trip does."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.pools: list[list[str]] = []

    async def _pool(
        self, service: str, ids: list[str], weights: dict[str, int] | None = None, *, interim: bool = False
    ) -> None:
        snapshot = list(ids)
        await asyncio.sleep(self.delay)
        self.pools.append(snapshot)


def test_the_last_admission_during_a_change_is_in_the_final_pool() -> None:
    async def run() -> Recorder:
        steps = Recorder(delay=0.05)
        grower = PoolGrower(steps, "web", ["old"], routed=True)
        grower.add("a")
        await asyncio.sleep(0.01)  # the change carrying "a" is on its way
        grower.add("b")
        await grower.finish()
        return steps

    steps = asyncio.run(run())
    assert steps.pools[-1] == ["old", "a", "b"]


def test_admissions_are_coalesced_into_few_changes() -> None:
    async def run() -> Recorder:
        steps = Recorder(delay=0.02)
        grower = PoolGrower(steps, "web", [], routed=True)
        for n in range(200):
            grower.add(f"i{n}")
            if n % 10 == 0:
                await asyncio.sleep(0.005)
        await grower.finish()
        return steps

    steps = asyncio.run(run())
    assert steps.pools[-1] == [f"i{n}" for n in range(200)]
    assert len(steps.pools) < 40  # at most one change per FLUSH_EVERY, not one per admission
    assert all(len(a) <= len(b) for a, b in zip(steps.pools, steps.pools[1:], strict=False))


def test_an_unrouted_service_sets_no_pool() -> None:
    async def run() -> Recorder:
        steps = Recorder(delay=0.0)
        grower = PoolGrower(steps, "worker", [], routed=False)
        grower.add("a")
        await grower.finish()
        return steps

    assert asyncio.run(run()).pools == []


def test_large_pools_change_less_often() -> None:
    from herdsman.deploy.burst import FLUSH_EVERY, flush_pause

    assert flush_pause(1) == flush_pause(400) == FLUSH_EVERY
    assert flush_pause(1000) == 2.5 * FLUSH_EVERY
    assert all(flush_pause(n) <= flush_pause(n + 1) for n in range(0, 5000, 7))
