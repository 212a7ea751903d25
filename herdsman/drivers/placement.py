"""Choosing the node of each new instance: pure, so its rules are property-tested.

Every herdsman instance on Swarm is a one-replica Swarm service, so Swarm's spread (which balances
the replicas of *one* service) never sees a herdsman service as a whole. herdsman therefore
chooses the node itself and pins the Swarm service there (`node.id == X`, beside the user's own
constraints, which Swarm checks again). The same function drives the swarm driver and the
in-memory model of several nodes that the agent's tests use, so what is tested is what runs.

The rules, for one service:
- a node is eligible when it is `active` and `ready` (not drained, paused or down), satisfies every
  constraint, and holds fewer than `max_per_node` of the service's instances;
- instances go to the spread group (a node, or a value of the spread label) holding the fewest of
  them, then to its node holding the fewest, ties by name, so groups stay within one of each other
  while each has room;
- instances on a node that is not usable are not counted: they are about to be replaced;
- `pinned` (a service with a volume: the node that holds it) leaves only that node.
It lives in `drivers/` (importing only `spec`) so that drivers, deploy and agent can all use it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from herdsman.errors import DriverError
from herdsman.spec.placement import Placement

DEFAULT = Placement()
# A node label that `herd node drain` sets before Swarm is told: herdsman moves the node's instances
# first (each replacement admitted before the old one leaves the pool), then drains it in Swarm,
# which would otherwise stop the tasks at once, before anything replaced them.
LEAVING_LABEL = "herd.leaving"


@dataclass(frozen=True)
class Node:
    """One node as the planner sees it (Swarm's node, or a node of the in-memory model)."""

    id: str
    hostname: str = ""
    role: str = "worker"  # manager | worker
    labels: Mapping[str, str] = field(default_factory=dict)
    availability: str = "active"  # active | pause | drain
    state: str = "ready"  # ready | down | unknown | disconnected
    addr: str = "127.0.0.1"  # where its instances are reached (Swarm: the node's Status.Addr)

    @property
    def usable(self) -> bool:
        return self.availability == "active" and self.state == "ready" and not self.leaving

    @property
    def leaving(self) -> bool:
        """`herd node drain` is moving its instances away."""
        return bool(self.labels.get(LEAVING_LABEL))

    @property
    def why_not_usable(self) -> str:
        """ "node w1 is drain" / "node w1 is down" ("" when usable)."""
        if self.availability != "active":
            return f"node {self.hostname or self.id} ({self.id[:12]}) is {self.availability}"
        if self.state != "ready":
            return f"node {self.hostname or self.id} ({self.id[:12]}) is {self.state}"
        if self.leaving:
            return f"node {self.hostname or self.id} ({self.id[:12]}) is being drained by herd node drain"
        return ""

    def attributes(self) -> dict[str, str]:
        """What a constraint may test."""
        out = {"node.id": self.id, "node.hostname": self.hostname, "node.role": self.role}
        out.update({f"node.labels.{k}": v for k, v in self.labels.items()})
        return out

    def group(self, placement: Placement) -> str:
        label = placement.spread_label
        return self.id if label is None else self.labels.get(label, "")


class PlacementError(DriverError):
    """No node fits a new instance (says why, per reason, and what to change)."""


def fits(node: Node, placement: Placement) -> bool:
    """Usable and satisfying every constraint (capacity aside)."""
    attributes = node.attributes()
    return node.usable and all(c.holds(attributes) for c in placement.parsed())


def place(
    nodes: Sequence[Node],
    placed: Iterable[str],
    placement: Placement | None,
    count: int,
    *,
    service: str = "",
    pinned: str | None = None,
) -> list[str]:
    """The node id of each of ``count`` new instances of one service, given the nodes and the node
    of each of its instances already placed (``placed``: one node id per instance). Raises
    PlacementError when one cannot be placed."""
    placement = placement or DEFAULT
    usable_ids = {n.id for n in nodes if n.usable}
    per_node = Counter(node for node in placed if node in usable_ids)
    candidates = [n for n in nodes if fits(n, placement) and (pinned is None or n.id == pinned)]
    chosen: list[str] = []
    for _ in range(count):
        room = [
            n for n in candidates if placement.max_per_node is None or per_node[n.id] < placement.max_per_node
        ]
        if not room:
            raise PlacementError(
                _why_none(nodes, placement, service, pinned, per_node),
                hint=_hint(placement, pinned),
            )
        per_group: Counter[str] = Counter()
        for n in candidates:  # a group's count: its instances on nodes that still count
            per_group[n.group(placement)] += per_node[n.id]
        best = min(
            room, key=lambda n: (per_group[n.group(placement)], per_node[n.id], n.group(placement), n.id)
        )
        per_node[best.id] += 1
        chosen.append(best.id)
    return chosen


def _why_none(
    nodes: Sequence[Node], placement: Placement, service: str, pinned: str | None, per_node: Counter[str]
) -> str:
    what = (
        f"no node can take another instance of {service!r}"
        if service
        else "no node can take another instance"
    )
    reasons = []
    for node in nodes:
        name = node.hostname or node.id
        if not node.usable:
            reasons.append(node.why_not_usable)
        elif pinned is not None and node.id != pinned:
            reasons.append(f"{name} is not the node the service is kept on (its volumes or command checks)")
        elif not fits(node, placement):
            failed = [str(c) for c in placement.parsed() if not c.holds(node.attributes())]
            reasons.append(f"{name} does not satisfy {', '.join(failed)}")
        else:
            reasons.append(
                f"{name} already runs {per_node[node.id]} (max_per_node = {placement.max_per_node})"
            )
    return f"{what}: " + ("; ".join(reasons) if reasons else "the swarm has no node")


def _hint(placement: Placement, pinned: str | None) -> str:
    if pinned is not None:
        return (
            "a service with volumes or command checks runs on the node of the engine herdsman talks"
            " to: make that node active again"
        )
    if placement.max_per_node is not None:
        return "add nodes that satisfy [service.NAME.placement], raise max_per_node, or lower replicas"
    return "add or activate nodes that satisfy [service.NAME.placement] constraints (docker node update)"


def evicted(nodes: Sequence[Node], node_id: str) -> str:
    """Why an instance on ``node_id`` must move ("" when its node is usable; an unknown node, one
    removed from the swarm, is lost)."""
    for node in nodes:
        if node.id == node_id:
            return node.why_not_usable
    return f"node {node_id[:12]} is gone" if node_id else ""
