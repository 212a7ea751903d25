"""The agent's pure reconcile logic (`agent.fleet`) at 10,000 instances, on the in-memory driver:
a pass plans only what changed, crashed instances are replaced, unhealthy ones quarantined in the
promised order, and a crash-looping image backs off exponentially."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from herdsman.agent.fleet import BACKOFF_MAX, Backoff, Fleet, Seen, Want, heal_plan
from herdsman.deploy.plan import Policy, Running, Step, simulate
from herdsman.drivers.base import InstanceSpec, InstanceState
from herdsman.drivers.memory import MemoryDriver

SERVICES = 100
PER_SERVICE = 100  # 10,000 instances in all
WANT = Want(release=1, policy=Policy(replicas=PER_SERVICE))


def seen_of(state: InstanceState, unhealthy: str = "") -> Seen:
    return Seen(state.id, state.service, state.release, state.state == "running", unhealthy)


def spec(service: str, instance: str, release: int = 1) -> InstanceSpec:
    labels = {"herd.stack": "s", "herd.env": "e", "herd.service": service, "herd.release": str(release)}
    return InstanceSpec(id=instance, image="sha256:x", labels=labels, argv=("app",), env={})


async def start_fleet(driver: MemoryDriver) -> Fleet:
    for n in range(SERVICES):
        for i in range(PER_SERVICE):
            await driver.start(spec(f"svc{n}", f"svc{n}-1-{i}"))
    fleet = Fleet()
    fleet.sync(seen_of(s) for s in await driver.list())
    return fleet


async def apply(driver: MemoryDriver, steps: list[Step]) -> None:
    for step in steps:
        for instance in step["instances"]:
            if step["op"] == "start":
                await driver.start(spec(step["service"], instance))
            elif step["op"] == "retire":
                await driver.stop(instance, 0)
            elif step["op"] == "quarantine":
                await driver.stop(instance, 0, keep=Path("/q") / instance)


def test_a_pass_at_10000_instances_plans_only_the_service_that_changed() -> None:
    async def scenario() -> None:
        driver = MemoryDriver()
        fleet = await start_fleet(driver)
        assert len(fleet.take_dirty()) == SERVICES  # the first listing: everything is new
        fleet.sync(seen_of(s) for s in await driver.list())
        assert fleet.take_dirty() == {}, "an unchanged listing dirties nothing"

        for victim in ("svc7-1-3", "svc7-1-50", "svc7-1-99"):
            driver.crash(victim)
            fleet.observe(seen_of(driver.instances[victim]))
        dirty = fleet.take_dirty()
        assert list(dirty) == ["svc7"], "one changed service, one planned"
        assert sum(len(v) for v in dirty.values()) == PER_SERVICE  # a pass looks at 100, not 10,000

        counter = itertools.count(1)
        steps = heal_plan("svc7", dirty["svc7"], WANT, lambda: f"svc7-1-new{next(counter)}")
        retired = [i for s in steps if s["op"] == "retire" for i in s["instances"]]
        started = [i for s in steps if s["op"] == "start" for i in s["instances"]]
        assert sorted(retired) == ["svc7-1-3", "svc7-1-50", "svc7-1-99"]
        assert len(started) == 3
        await apply(driver, steps)
        assert len(driver.instances) == SERVICES * PER_SERVICE
        assert all(s.state == "running" for s in driver.instances.values())

    asyncio.run(scenario())


def test_full_resync_notices_what_vanished_and_what_appeared() -> None:
    fleet = Fleet()
    fleet.sync([Seen("a", "web", 1, True), Seen("b", "web", 1, True), Seen("c", "db", 1, True)])
    fleet.take_dirty()
    fleet.sync([Seen("a", "web", 1, True), Seen("c", "db", 1, True), Seen("d", "worker", 1, True)])
    assert set(fleet.take_dirty()) == {"web", "worker"}


def test_quarantine_pulls_from_the_pool_first_and_stops_last() -> None:
    seen = [Seen("w1", "web", 1, True), Seen("w2", "web", 1, True, unhealthy="failed 3 checks")]
    steps = heal_plan("web", seen, Want(1, Policy(replicas=2)), lambda: "w3")
    ops = [(s["op"], s["instances"]) for s in steps]
    assert ops[0] == ("pool", ["w1"]), "out of the pool before anything else"
    assert ops[-1] == ("quarantine", ["w2"]) and steps[-1]["reason"] == "failed 3 checks"
    assert ("start", ["w3"]) in ops and ("admit", ["w3"]) in ops
    assert ops.index(("admit", ["w3"])) < len(ops) - 1, "stopped only after the replacement is admitted"
    pools = [set(s["instances"]) for s in steps if s["op"] == "pool"]
    assert pools[-1] == {"w1", "w3"} and all("w2" not in p for p in pools)


@given(
    replicas=st.integers(1, 6),
    crashed=st.integers(0, 6),
    sick=st.integers(0, 6),
    surge=st.integers(1, 3),
)
def test_healing_always_ends_with_the_wanted_count_and_no_bad_instance(
    replicas: int, crashed: int, sick: int, surge: int
) -> None:
    crashed, sick = min(crashed, replicas), min(sick, replicas - min(crashed, replicas))
    seen = []
    for i in range(replicas):
        if i < crashed:
            seen.append(Seen(f"i{i}", "web", 1, False))
        elif i < crashed + sick:
            seen.append(Seen(f"i{i}", "web", 1, True, unhealthy="failing"))
        else:
            seen.append(Seen(f"i{i}", "web", 1, True))
    counter = itertools.count()
    policy = Policy(replicas=replicas, max_surge=surge)
    steps = heal_plan("web", seen, Want(1, policy), lambda: f"n{next(counter)}")
    bad = {x.id for x in seen if not x.running or x.unhealthy}
    model = [Running(x.id, 1, x.id not in bad) for x in seen]
    as_retire = [{**step, "op": "retire"} if step["op"] == "quarantine" else step for step in steps]
    trace = simulate(model, as_retire)
    running, serving, _ = trace[-1] if trace else (replicas, replicas, set())
    assert running == replicas and serving == replicas
    assert all(not (bad & pool) for _, _, pool in trace), "a bad instance never gets traffic"
    assert sorted(i for x in steps if x["op"] == "quarantine" for i in x["instances"]) == sorted(
        x.id for x in seen if x.unhealthy
    )


def test_backoff_only_for_replacements_that_keep_failing() -> None:
    backoff = Backoff()
    assert backoff.failed("web", 100.0, "crashed") == 0.0, "the first failure is retried at once"
    assert backoff.failed("web", 100.0, "crashed") == 0.5
    assert backoff.failed("web", 100.0, "crashed") == 1.0
    assert backoff.wait("web", 100.5) == 0.5
    assert "crash loop: 3 failed replacements" in backoff.note("web", 100.0)
    for _ in range(20):
        delay = backoff.failed("web", 100.0, "crashed")
    assert delay == BACKOFF_MAX
    backoff.healthy("web")
    assert backoff.wait("web", 100.0) == 0.0 and backoff.note("web", 100.0) == ""
    assert backoff.failed("web", 100.0, "crashed") == 0.0


def test_drifted_instances_are_replaced_with_surge_then_quarantined() -> None:
    """Drifted instances still answer: they keep serving until their replacements are admitted,
    so even when every instance drifted (one shared image) the pool is never empty."""
    seen = [Seen(f"w{i}", "web", 1, True, drifted="drifted: file system") for i in range(3)]
    counter = itertools.count()
    steps = heal_plan("web", seen, Want(1, Policy(replicas=3)), lambda: f"n{next(counter)}")
    model = [Running(x.id, 1, True) for x in seen]
    as_retire = [{**step, "op": "retire"} if step["op"] == "quarantine" else step for step in steps]
    trace = simulate(model, as_retire)
    assert all(serving >= 3 for _, serving, _ in trace), "never fewer than 3 serving"
    quarantined = [s["instances"][0] for s in steps if s["op"] == "quarantine"]
    assert sorted(quarantined) == ["w0", "w1", "w2"] and not any(s["op"] == "retire" for s in steps)
    assert trace[-1][2] == {"n0", "n1", "n2"}


def test_a_canary_service_heals_its_own_release_without_a_canary() -> None:
    """A drifted or evicted instance of a canary service is replaced by its own release: nothing new
    to judge, so no canary steps and no fresh baseline of a release "-1" (review: the heal planned
    `baseline` of release -1 and failed forever)."""
    canary = Policy(replicas=3, strategy="canary")
    counter = itertools.count()
    seen = [Seen("w0", "web", 1, True, drifted="drifted: labels")]
    seen += [Seen("w1", "web", 1, True, evicted="node drained"), Seen("w2", "web", 1, True)]
    steps = heal_plan("web", seen, Want(1, canary), lambda: f"n{next(counter)}")
    ops = {s["op"] for s in steps}
    assert not ops & {"baseline", "weigh", "judge"}, steps
    assert all(s.get("release", 1) == 1 for s in steps if s["op"] == "start"), steps
    assert [s["instances"] for s in steps if s["op"] == "quarantine"] == [["w0"]]
    assert {i for s in steps if s["op"] == "start" for i in s["instances"]} == {"n0", "n1"}
    # an instance of another release still goes through the canary
    older = [Seen(f"o{i}", "web", 1, True) for i in range(3)]
    assert "judge" in {s["op"] for s in heal_plan("web", older, Want(2, canary), lambda: "x")}
