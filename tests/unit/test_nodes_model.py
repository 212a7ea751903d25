"""A node drained or lost, on the in-memory model of several nodes (MemoryDriver(nodes=...)) driven
by the same planner as the swarm driver and the agent's own `heal_plan`: its instances are replaced
on other nodes and admitted before they leave the pool, then retired; placement rules hold after
every step (hypothesis: random clusters, placements and drains)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.agent.fleet import Fleet, Seen, Want, heal_plan
from herdsman.deploy.plan import Policy, Running, Step, simulate
from herdsman.drivers.base import InstanceSpec, InstanceState
from herdsman.drivers.memory import MemoryDriver
from herdsman.drivers.placement import Node, PlacementError, fits
from herdsman.spec.placement import Placement

LABELS = {
    "herd.stack": "s",
    "herd.stack-id": "s-1",
    "herd.env": "e",
    "herd.service": "web",
    "herd.release": "1",
}


def spec(instance: str, placement: Placement) -> InstanceSpec:
    return InstanceSpec(
        id=instance,
        image="sha256:x",
        labels={**LABELS, "herd.instance": instance},
        argv=("app",),
        env={},
        placement=placement,
    )


def seen_of(state: InstanceState) -> Seen:
    return Seen(state.id, state.service, state.release, state.state == "running", evicted=state.evicted)


class Cluster:
    """The model, the fleet and a record of every step applied, as the agent's healer applies them."""

    def __init__(self, nodes: list[Node], placement: Placement, replicas: int) -> None:
        self.driver = MemoryDriver(nodes)
        self.placement = placement
        self.want = Want(release=1, policy=Policy(replicas=replicas))
        self.fleet = Fleet()
        self.ids = (f"web-{n}" for n in itertools.count())
        self.applied: list[Step] = []
        self.pool: set[str] = set()

    async def start(self) -> None:
        for _ in range(self.want.policy.replicas):
            await self.driver.start(spec(next(self.ids), self.placement))
        self.pool = set(self.driver.instances)

    async def heal(self) -> list[Step]:
        current = await self.driver.list()
        self.fleet.sync(seen_of(s) for s in current)
        dirty = self.fleet.take_dirty()
        steps = heal_plan("web", dirty.get("web", []), self.want, lambda: next(self.ids)) if dirty else []
        for step in steps:
            if step["op"] == "start":
                for instance in step["instances"]:
                    await self.driver.start(spec(instance, self.placement))
            elif step["op"] == "pool":
                self.pool = set(step["instances"])
            elif step["op"] == "retire":
                for instance in step["instances"]:
                    await self.driver.stop(instance, 0)
            self.applied.append(step)
            self.check()
        return steps

    def check(self) -> None:
        """Placement rules hold for what runs on usable nodes, after every step."""
        nodes = {n.id: n for n in self.driver.nodes}
        live = [s for s in self.driver.instances.values() if nodes[s.node].usable]
        per_node = Counter(s.node for s in live)
        if self.placement.max_per_node is not None:
            assert max(per_node.values(), default=0) <= self.placement.max_per_node
        assert all(fits(nodes[s.node], self.placement) for s in live)
        if self.placement.max_per_node is None:  # spread within one over the groups that may take some
            groups = {n.group(self.placement) for n in nodes.values() if fits(n, self.placement)}
            per_group = Counter(nodes[s.node].group(self.placement) for s in live)
            counts = [per_group.get(g, 0) for g in groups]
            assert not counts or max(counts) - min(counts) <= 1, per_group


def three_nodes() -> list[Node]:
    return [
        Node("m1", "m1", "manager", {"zone": "a"}),
        Node("m2", "m2", "manager", {"zone": "a"}),
        Node("w1", "w1", "worker", {"zone": "b"}),
    ]


@pytest.mark.parametrize("how", ["drain", "down"])
def test_a_drained_or_lost_node_is_emptied_replacements_first(how: str) -> None:
    async def scenario() -> None:
        placement = Placement(spread="node.labels.zone", max_per_node=2)
        cluster = Cluster(three_nodes(), placement, replicas=4)
        await cluster.start()
        before = {s.id: s.node for s in cluster.driver.instances.values()}
        assert Counter(before.values()) == {"w1": 2, "m1": 1, "m2": 1}, "spread over the zones"
        assert await cluster.heal() == [], "nothing to do while every node is active"

        if how == "drain":
            cluster.driver.set_node("w1", availability="drain")
        else:
            cluster.driver.set_node("w1", state="down")
        leaving = {i for i, n in before.items() if n == "w1"}
        listed = await cluster.driver.list()
        assert {s.id for s in listed if s.evicted} == leaving
        assert all(f"is {how}" in s.evicted for s in listed if s.evicted)

        steps = await cluster.heal()
        trace = simulate([Running(i, 1) for i in before], steps)
        assert all(serving >= 4 for _, serving, _ in trace), "never fewer than 4 in the pool"
        for instance in leaving:  # it leaves the pool only after a replacement was admitted
            out = next(n for n, s in enumerate(steps) if s["op"] == "pool" and instance not in s["instances"])
            assert any(s["op"] == "admit" for s in steps[:out])
        assert [s for s in steps if s["op"] == "quarantine"] == [], "evicted is retired, not quarantined"
        after = Counter(s.node for s in cluster.driver.instances.values())
        assert after == {"m1": 2, "m2": 2}, "replaced on the other nodes, within max_per_node"
        assert cluster.pool == set(cluster.driver.instances)
        assert await cluster.heal() == [], "and then it is settled"

    asyncio.run(scenario())


def test_nowhere_to_go_is_an_error_that_names_the_nodes() -> None:
    async def scenario() -> None:
        cluster = Cluster(three_nodes(), Placement(max_per_node=1), replicas=3)
        await cluster.start()
        cluster.driver.set_node("w1", availability="drain")
        with pytest.raises(PlacementError, match=r"w1 .* is drain"):
            await cluster.heal()
        assert len(cluster.driver.instances) == 3, "what runs keeps running"

    asyncio.run(scenario())


@settings(max_examples=100, deadline=None)
@given(
    zones=st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=5),
    drained=st.data(),
    replicas=st.integers(1, 6),
    spread=st.sampled_from(["node", "node.labels.zone"]),
    capped=st.booleans(),
)
def test_random_drains_keep_the_rules_and_the_pool(
    zones: list[str], drained: st.DataObject, replicas: int, spread: str, capped: bool
) -> None:
    nodes = [Node(f"n{i}", f"n{i}", "worker", {"zone": z}) for i, z in enumerate(zones)]
    placement = Placement(spread=spread, max_per_node=replicas if capped else None)

    async def scenario() -> None:
        cluster = Cluster(nodes, placement, replicas=replicas)
        await cluster.start()
        cluster.check()
        for node in drained.draw(
            st.lists(st.sampled_from([n.id for n in nodes[1:]]), max_size=3, unique=True)
        ):
            cluster.driver.set_node(node, availability="drain")
            before = [Running(i, 1) for i in cluster.driver.instances]
            steps = await cluster.heal()
            assert all(serving >= replicas for _, serving, _ in simulate(before, steps))
            usable = {n.id for n in cluster.driver.nodes if n.usable}
            assert all(s.node in usable for s in cluster.driver.instances.values())
            assert len(cluster.driver.instances) == replicas

    asyncio.run(scenario())
