"""A Swarm node's availability, changed the way herdsman needs it: `herd node drain` / `activate`.

`docker node update --availability drain` makes Swarm stop the node's tasks at once: with one
task per herdsman instance, pinned to its node, nothing replaces them first, and the router only
retries what they held. `herd node drain` marks the node leaving (a node label, `LEAVING_LABEL`):
the placement planner no longer uses it and the agent moves its instances as it moves an old
release's (a replacement started elsewhere and admitted, the pool switched, then the old one
drained and stopped); once none is left, the node is drained in Swarm too. `activate` undoes both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from herdsman.drivers.placement import LEAVING_LABEL, Node
from herdsman.errors import DriverError


def find_node(nodes: Sequence[Node], ref: str) -> Node:
    """The node ``ref`` names: its id, a prefix of its id, or its hostname (when unique)."""
    exact = [n for n in nodes if ref in (n.id, n.hostname)]
    found = exact or [n for n in nodes if n.id.startswith(ref)]
    if len(found) == 1:
        return found[0]
    listed = ", ".join(f"{n.hostname or '?'} ({n.id[:12]})" for n in nodes) or "none"
    if not found:
        raise DriverError(f"no node {ref!r} in the swarm", hint=f"its nodes: {listed}")
    raise DriverError(f"{ref!r} names {len(found)} nodes", hint=f"give a node id; the nodes: {listed}")


def update_node(client: Any, node_id: str, *, leaving: bool, availability: str | None = None) -> None:
    """Set or clear the leaving label, and (if given) Swarm's availability, in one update."""
    info = client.api.inspect_node(node_id)
    spec = dict(info.get("Spec") or {})
    labels = dict(spec.get("Labels") or {})
    if leaving:
        labels[LEAVING_LABEL] = "1"
    else:
        labels.pop(LEAVING_LABEL, None)
    spec["Labels"] = labels
    if availability is not None:
        spec["Availability"] = availability
    spec.setdefault("Availability", "active")
    spec.setdefault("Role", "worker")
    client.api.update_node(node_id, info["Version"]["Index"], spec)
