"""`[service.NAME.placement]` and the pure placement planner (drivers/placement.py).

The spec: constraints are read at the edge (a typo is a SpecError at its key), a placement the
one-node drivers cannot honour is refused for their environments, and a service with volumes and a
placement that could move it gets a warning. The planner: by hypothesis, over random nodes, labels,
availabilities and placements, it never puts more than `max_per_node` on a node, never breaks a
constraint, never uses a drained or down node, keeps spread groups within one of each other while
each has room, and refuses (with the reasons) only when no node has room.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.deploy.instances import needs_exec
from herdsman.drivers.placement import LEAVING_LABEL, Node, PlacementError, evicted, fits, place
from herdsman.drivers.swarm_nodes import find_node
from herdsman.errors import DriverError, SpecError
from herdsman.spec import parse_stack
from herdsman.spec.placement import Constraint, Placement
from herdsman.spec.rules import stack_warnings


def stack(
    placement: dict[str, Any],
    *,
    driver: str = "swarm",
    volumes: bool = False,
    replicas: int = 4,
    **service: Any,
) -> Any:
    web: dict[str, Any] = {"command": ["app"], "port": 8000, "replicas": replicas, "placement": placement}
    web |= service
    document: dict[str, Any] = {"stack": {"name": "shop"}, "service": {"web": web}}
    if volumes:
        web["volumes"] = {"data": "/data"}
        document["volume"] = {"data": {}}
    document["environment"] = {"production": {"driver": driver}}
    return parse_stack(tomli_w.dumps(document), file="herd.toml")


def spec_error(placement: dict[str, Any], **kwargs: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        stack(placement, **kwargs)
    assert info.value.file == "herd.toml"
    return info.value


# --- the spec ---------------------------------------------------------------------------------------


def test_a_placement_parses_and_constraints_are_normalised() -> None:
    parsed = stack({"constraints": ["node.labels.zone==a", " node.role != manager "], "max_per_node": 2})
    placement = parsed.service["web"].placement
    assert placement.constraints == ("node.labels.zone == a", "node.role != manager")
    assert placement.spread == "node" and placement.max_per_node == 2
    assert stack({"spread": "node.labels.zone"}).service["web"].placement.spread_label == "zone"


@pytest.mark.parametrize(
    ("placement", "key", "words"),
    [
        ({"constraints": ["zone = a"]}, "service.web.placement.constraints", "cannot read the constraint"),
        ({"constraints": ["engine.labels.x == 1"]}, "service.web.placement.constraints", "constraint"),
        ({"spread": "zone"}, "service.web.placement.spread", "cannot spread by"),
        ({"max_per_node": 0}, "service.web.placement.max_per_node", "greater than or equal to 1"),
        ({"spreed": "node"}, "service.web.placement.spreed", ""),
    ],
)
def test_a_bad_placement_is_a_spec_error_at_its_key(placement: dict[str, Any], key: str, words: str) -> None:
    err = spec_error(placement)
    assert any(p.key.startswith(key) and words in p.message for p in err.problems), err.lines()


def test_one_node_drivers_accept_only_a_placement_one_node_fits() -> None:
    stack({"spread": "node", "max_per_node": 4}, driver="process")  # fits this machine
    stack({"constraints": ["node.role == manager", "node.labels.zone != a"]}, driver="docker")
    err = spec_error({"constraints": ["node.labels.zone == a"]}, driver="process")
    (problem,) = err.problems
    assert problem.key == "service.web.placement.constraints[0]"
    assert "process driver, which is one node" in problem.message and "swarm" in problem.hint
    err = spec_error({"max_per_node": 2}, driver="docker")
    (problem,) = err.problems
    assert problem.key == "service.web.placement.max_per_node" and "4 instances" in problem.message


def test_a_service_with_volumes_and_a_placement_that_could_move_it_is_warned_about() -> None:
    moving = stack({"spread": "node.labels.zone"}, volumes=True)
    (warning,) = stack_warnings(moving)
    assert warning.key == "service.web.placement" and "node that holds them" in warning.message
    assert stack_warnings(stack({}, volumes=True)) == []
    assert stack_warnings(stack({"spread": "node.labels.zone"})) == []


def test_a_service_whose_checks_exec_into_it_stays_where_herdsman_can_exec_and_is_warned_about() -> None:
    """No API reaches another Swarm node's containers: a command check there could only fail (and
    quarantine a healthy instance), so such a service is kept on the engine's own node."""
    command = {"type": "command", "command": ["true"]}
    command_check = stack({"spread": "node.labels.zone"}, health=command)
    (warning,) = stack_warnings(command_check)
    assert warning.key == "service.web.placement" and 'checks of type "command"' in warning.message
    assert needs_exec(command_check.service["web"])
    http_check = stack({"spread": "node.labels.zone"}, health={"type": "http"})
    assert stack_warnings(http_check) == [] and not needs_exec(http_check.service["web"])
    canary_check = stack({}, canary={"checks": [command]})
    assert needs_exec(canary_check.service["web"]) and stack_warnings(canary_check) == []


def test_constraints_hold_as_swarm_says() -> None:
    zone_a = Constraint.parse("node.labels.zone == a")
    assert zone_a.holds({"node.labels.zone": "a"}) and not zone_a.holds({})
    assert Constraint.parse("node.labels.zone != a").holds({}), "a missing label differs from every value"


# --- the planner ------------------------------------------------------------------------------------


def nodes(*specs: tuple[str, str, str]) -> list[Node]:
    return [Node(id=i, hostname=i, labels={"zone": z} if z else {}, availability=a) for i, z, a in specs]


def test_instances_spread_over_a_label_then_over_nodes() -> None:
    cluster = nodes(("m1", "a", "active"), ("m2", "a", "active"), ("w1", "b", "active"))
    chosen = place(cluster, [], Placement(spread="node.labels.zone"), 4)
    assert Counter(n.labels["zone"] for c in chosen for n in cluster if n.id == c) == {"a": 2, "b": 2}
    assert Counter(chosen) == {"w1": 2, "m1": 1, "m2": 1}


def test_drained_nodes_and_their_instances_do_not_count() -> None:
    cluster = nodes(("m1", "a", "active"), ("w1", "b", "drain"))
    assert place(cluster, ["w1", "w1", "m1"], Placement(), 2) == ["m1", "m1"]
    assert evicted(cluster, "w1").endswith("is drain") and evicted(cluster, "m1") == ""
    assert "gone" in evicted(cluster, "w9")


def test_a_node_herd_node_drain_marks_leaving_takes_nothing_and_its_instances_move() -> None:
    """`herd node drain` labels the node leaving before Swarm is told: the planner stops using it
    and its instances count as evicted (moved by the agent, replacements first)."""
    leaving = Node("w1", "w1", labels={"zone": "b", LEAVING_LABEL: "1"})
    cluster = [Node("m1", "m1", labels={"zone": "a"}), leaving]
    assert not leaving.usable and leaving.availability == "active"
    assert place(cluster, ["w1", "m1"], Placement(spread="node.labels.zone"), 2) == ["m1", "m1"]
    assert evicted(cluster, "w1").endswith("is being drained by herd node drain")
    assert find_node(cluster, "w") is leaving and find_node(cluster, "m1").id == "m1"
    with pytest.raises(DriverError, match="no node 'x9'"):
        find_node(cluster, "x9")


def test_no_room_is_an_error_with_every_reason() -> None:
    cluster = nodes(("m1", "a", "active"), ("w1", "b", "drain"), ("w2", "c", "active"))
    placement = Placement(constraints=("node.labels.zone != c",), max_per_node=1)
    with pytest.raises(PlacementError) as info:
        place(cluster, ["m1"], placement, 1, service="web")
    message = str(info.value)
    assert "no node can take another instance of 'web'" in message
    assert "m1 already runs 1 (max_per_node = 1)" in message
    assert "w1 (w1) is drain" in message and "w2 does not satisfy node.labels.zone != c" in message
    assert info.value.hint


def test_a_service_with_volumes_stays_on_the_node_that_holds_them() -> None:
    cluster = nodes(("m1", "a", "active"), ("w1", "b", "active"))
    assert place(cluster, ["m1"], Placement(), 3, pinned="m1") == ["m1", "m1", "m1"]
    with pytest.raises(PlacementError, match="is not the node the service is kept on"):
        place(nodes(("m1", "a", "drain"), ("w1", "b", "active")), [], None, 1, pinned="m1")


ZONES = st.sampled_from(["a", "b", "c", ""])
NODE = st.tuples(ZONES, st.sampled_from(["active", "active", "active", "drain", "pause"]), st.booleans())


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Node], list[str], Placement, int]:
    specs = draw(st.lists(NODE, min_size=1, max_size=7))
    cluster = [
        Node(id=f"n{i}", labels={"zone": z} if z else {}, availability=a, state="ready" if up else "down")
        for i, (z, a, up) in enumerate(specs)
    ]
    placed = draw(st.lists(st.sampled_from([n.id for n in cluster]), max_size=6))
    constraints = draw(
        st.lists(st.sampled_from(["node.labels.zone != c", "node.labels.zone == a"]), max_size=1)
    )
    placement = Placement(
        constraints=tuple(constraints),
        spread=draw(st.sampled_from(["node", "node.labels.zone"])),
        max_per_node=draw(st.none() | st.integers(1, 3)),
    )
    return cluster, placed, placement, draw(st.integers(1, 8))


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_placement_invariants(scenario: tuple[list[Node], list[str], Placement, int]) -> None:
    cluster, placed, placement, count = scenario
    usable = {n.id for n in cluster if n.usable}
    try:
        chosen = place(cluster, placed, placement, count)
    except PlacementError:
        # refused only when, one instance after another, some instance had no room anywhere
        fitting = [n for n in cluster if fits(n, placement)]
        held = Counter(p for p in placed if p in usable)
        room = sum(
            (placement.max_per_node - held[n.id]) if placement.max_per_node else count for n in fitting
        )
        assert room < count
        return
    assert len(chosen) == count
    by_id = {n.id: n for n in cluster}
    for node_id in chosen:
        assert fits(by_id[node_id], placement), "constraints hold, on active and ready nodes only"
    total = Counter(p for p in placed if p in usable) + Counter(chosen)
    if placement.max_per_node is not None:
        assert all(total[n] <= placement.max_per_node for n in chosen), "never more than max_per_node"
    if not placed and placement.max_per_node is None:
        groups = Counter(by_id[c].group(placement) for c in chosen)
        eligible = {n.group(placement) for n in cluster if fits(n, placement)}
        counts = [groups.get(g, 0) for g in eligible]
        assert max(counts) - min(counts) <= 1, "spread within one"
