"""`herd node ls | drain | activate`: the nodes of a multi-node driver (Swarm), and taking one out
of service without a failed request (see `drivers/swarm_nodes.py` for why not Swarm's own drain).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herdsman.errors import HerdError
from herdsman.facade.stack import agent_running, environment_of
from herdsman.spec import Project

if TYPE_CHECKING:
    from herdsman.drivers.placement import Node


@dataclass(frozen=True)
class NodeRow:
    id: str
    hostname: str
    role: str
    availability: str
    state: str
    leaving: bool
    addr: str
    instances: int  # of this environment


@dataclass(frozen=True)
class Drained:
    node: str  # "hostname (id12)"
    moved: list[str]  # this environment's instances that were on it
    others: int  # instances of other environments or stacks Swarm then stopped


@contextmanager
def _swarm(project: Project, env: str | None, driver_name: str | None) -> Iterator[tuple[Any, Any]]:
    """The environment's driver (which must know nodes) and its instance selector."""
    from herdsman.deploy.run import Deployment

    deployment = Deployment(project, env, driver_name=driver_name)
    try:
        driver = deployment.driver
        if not hasattr(driver, "nodes_now") or not hasattr(driver, "client"):
            raise HerdError(
                f"environment {deployment.env!r} runs on the {deployment.driver_name} driver: one node",
                hint='nodes are Swarm\'s: driver = "swarm" in [environment.NAME]',
            )
        yield driver, deployment.executor.target.selector
    finally:
        deployment.state.close()


def _name(node: Node) -> str:
    return f"{node.hostname or '?'} ({node.id[:12]})"


def nodes(project: Project, env: str | None = None, *, driver_name: str | None = None) -> list[NodeRow]:
    """The swarm's nodes, with how many instances of the environment each runs."""
    with _swarm(project, env, driver_name) as (driver, selector):
        found = driver.nodes_now()
        running = [i for i in driver.list_now(selector) if i.state == "running"]
        return [
            NodeRow(
                n.id,
                n.hostname,
                n.role,
                n.availability,
                n.state,
                n.leaving,
                n.addr,
                sum(1 for i in running if i.node == n.id),
            )
            for n in found
        ]


def drain_node(
    project: Project,
    ref: str,
    env: str | None = None,
    *,
    driver_name: str | None = None,
    timeout: float = 600.0,
    on_progress: Callable[[str], None] = lambda _: None,
) -> Drained:
    """Move the environment's instances off node ``ref`` (each replacement admitted elsewhere before
    the old one leaves the pool: the agent does it), then drain the node in Swarm."""
    from herdsman.drivers.swarm_nodes import find_node, update_node

    name = environment_of(project, env)
    if agent_running(project, env) is None:
        raise HerdError(
            f"no agent runs for environment {name!r}: it is the agent that moves the instances",
            hint="`herd up -d` starts it; then `herd node drain` again",
        )
    with _swarm(project, env, driver_name) as (driver, selector):
        node = find_node(driver.nodes_now(), ref)

        def left() -> list[str]:
            return sorted(
                i.id for i in driver.list_now(selector) if i.state == "running" and i.node == node.id
            )

        moved = left()
        update_node(driver.client, node.id, leaving=True)
        on_progress(f"node {_name(node)} is leaving: {len(moved)} instance(s) of {name} to move")
        deadline, said = time.monotonic() + timeout, len(moved)
        while remaining := left():
            if time.monotonic() > deadline:
                raise HerdError(
                    f"{len(remaining)} instance(s) still on node {_name(node)} after {timeout:g}s: "
                    + ", ".join(remaining),
                    hint="`herd events` says why (no other node fits?); the node stays leaving; "
                    "`herd node activate` takes it back",
                )
            if len(remaining) != said:
                said = len(remaining)
                on_progress(f"{said} instance(s) still on {_name(node)}")
            time.sleep(0.5)
        others = sum(1 for i in driver.list_now() if i.state == "running" and i.node == node.id)
        update_node(driver.client, node.id, leaving=False, availability="drain")
        return Drained(_name(node), moved, others)


def activate_node(
    project: Project, ref: str, env: str | None = None, *, driver_name: str | None = None
) -> str:
    """Take node ``ref`` back into service (Swarm's availability active, not leaving)."""
    from herdsman.drivers.swarm_nodes import find_node, update_node

    with _swarm(project, env, driver_name) as (driver, _selector):
        node = find_node(driver.nodes_now(), ref)
        update_node(driver.client, node.id, leaving=False, availability="active")
        return _name(node)
