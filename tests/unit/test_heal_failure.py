"""A heal pass that fails part way (agent/heal.py): the replacements it started and never pooled
are stopped; those already in the pool keep serving (stopping them would fail the requests they
hold). Pure control logic, driven through fakes of the executor, state and driver."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

from herdsman.agent.heal import Healer
from herdsman.errors import DeployError


class Executor:
    def __init__(self, failing_op: str, failing_at: int) -> None:
        self.extra_ops: dict[str, Any] = {}
        self.known: dict[str, Any] = {}
        self.applied: list[dict[str, Any]] = []
        self.failing = (failing_op, failing_at)
        self.seen: Counter[str] = Counter()

    async def apply(self, step: dict[str, Any], release: Any) -> None:
        self.seen[step["op"]] += 1
        if (step["op"], self.seen[step["op"]]) == self.failing:
            raise DeployError(f"instance {step['instances'][0]} crashed before it became healthy")
        self.applied.append(step)


class Driver:
    def __init__(self) -> None:
        self.stopped: list[str] = []

    async def stop(self, instance: str, grace: float) -> None:
        self.stopped.append(instance)


def healer(executor: Executor, driver: Driver, said: list[str] | None = None) -> Healer:
    said = [] if said is None else said
    state = SimpleNamespace(
        event=lambda env, kind, message, **k: said.append(message), set_note=lambda *a: None
    )
    deployment = SimpleNamespace(executor=executor, state=state, driver=driver, env="production")
    backoff = SimpleNamespace(failed=lambda *a: 1.0, note=lambda *a: "", streak={})
    observed = SimpleNamespace(backoff=backoff, later=lambda *a: None, forget=lambda *a: None)

    async def resync() -> None:
        return None

    return Healer(observed, deployment, None, None, resync)  # type: ignore[arg-type]


def rolling(batches: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Each batch: start the new one, admit it, pool it in place of the old one, retire the old."""
    steps: list[dict[str, Any]] = []
    pool = [old for _new, old in batches]
    for new, old in batches:
        pool = [new if i == old else i for i in pool]
        steps += [
            {"op": "start", "service": "web", "instances": [new]},
            {"op": "admit", "service": "web", "instances": [new]},
            {"op": "pool", "service": "web", "instances": list(pool)},
            {"op": "retire", "service": "web", "instances": [old]},
        ]
    return steps


def test_a_failure_in_a_later_batch_stops_only_what_never_served() -> None:
    executor, driver = Executor("admit", 2), Driver()  # the second batch's replacement never gets healthy
    steps = rolling([("web-2-a", "web-1-a"), ("web-2-b", "web-1-b")])
    asyncio.run(healer(executor, driver)._apply("web", steps, release=None))  # type: ignore[arg-type]
    assert driver.stopped == ["web-2-b"], "web-2-a is in the pool and serving: kept"


def test_a_failure_before_any_pool_change_stops_every_replacement() -> None:
    executor, driver = Executor("admit", 1), Driver()
    steps = rolling([("web-2-a", "web-1-a")])
    asyncio.run(healer(executor, driver)._apply("web", steps, release=None))  # type: ignore[arg-type]
    assert driver.stopped == ["web-2-a"]


def test_a_pass_that_succeeds_stops_nothing_and_says_so() -> None:
    executor, driver = Executor("admit", 99), Driver()
    said: list[str] = []
    steps = rolling([("web-2-a", "web-1-a"), ("web-2-b", "web-1-b")])
    asyncio.run(healer(executor, driver, said)._apply("web", steps, release=None))  # type: ignore[arg-type]
    assert driver.stopped == [] and len(executor.applied) == len(steps)
    assert said[-1] == "web: web-2-a, web-2-b healthy and serving", said
