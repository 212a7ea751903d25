"""The swarm driver's pure builders: Swarm names within Swarm's limits, the command wrapped only
for secrets, limits in Swarm's units, and what a service and its task say about an instance."""

from __future__ import annotations

from herdsman.drivers import swarm_spec as build
from herdsman.drivers.base import InstanceSpec

LABELS = {"herd.stack-id": "hello-0123456789", "herd.env": "production", "herd.instance": "web-1-ab12-0"}


def service(labels: dict[str, str] | None = None) -> dict[str, object]:
    labels = {**LABELS, "herd.release": "1", "herd.port": "41000", "herd.log": "/x.log", **(labels or {})}
    return {"ID": "svc", "CreatedAt": "2026-12-02T20:00:01.5Z", "Spec": {"Name": "n", "Labels": labels}}


def task(state: str, index: int = 1, **status: object) -> dict[str, object]:
    return {"ID": f"t{index}", "Version": {"Index": index}, "Status": {"State": state, **status}}


def test_names_fit_swarm_limits_and_stay_unique() -> None:
    assert build.service_name(LABELS, "web-1-ab12-0") == "herd-hello-0123456789-production-web-1-ab12-0"
    long_a = build.service_name({**LABELS, "herd.stack-id": "x" * 80}, "web-1-a")
    long_b = build.service_name({**LABELS, "herd.stack-id": "x" * 80}, "web-1-b")
    assert len(long_a) <= 63 and len(long_b) <= 63 and long_a != long_b
    assert len(build.secret_name("s" * 70, "web-1-a", "API_KEY")) <= 64
    assert build.volume_name("hello-0123456789", "counter") == "herd-hello-0123456789-counter"


def test_only_an_instance_with_secrets_starts_through_the_wrapper() -> None:
    plain = InstanceSpec(id="i", image="sha256:x", labels={}, argv=("python3", "app.py"), env={"A": "1"})
    secret = InstanceSpec(
        id="i",
        image="sha256:x",
        labels={},
        argv=("python3", "app.py"),
        env={"A": "1", "K": "v"},
        secrets=("K",),
    )
    assert build.command(plain) == ["python3", "app.py"]
    assert build.command(secret)[: len(build.SECRET_WRAPPER)] == list(build.SECRET_WRAPPER)
    assert build.command(secret)[len(build.SECRET_WRAPPER) :] == ["python3", "app.py"]
    assert build.split_env(secret, 5000) == ({"A": "1", "PORT": "5000"}, {"K": "v"})


def test_limits_in_swarm_units() -> None:
    spec = InstanceSpec(id="i", image="", labels={}, argv=("x",), env={}, memory="256m", cpus=0.5)
    assert build.limits(spec) == {"cpu_limit": 500_000_000, "mem_limit": 256 * 1024**2}
    assert build.parse_bytes("1g") == 1024**3 and build.parse_bytes("512") == 512


def test_a_running_task_is_a_running_instance_with_its_port_and_pid() -> None:
    state = build.instance_state(
        service(), task("running", ContainerStatus={"PID": 4242, "ContainerID": "c"})
    )
    assert (state.id, state.state, state.port, state.pid, state.release) == (
        "web-1-ab12-0",
        "running",
        41000,
        4242,
        1,
    )
    assert "herd.port" not in state.labels and "herd.log" not in state.labels
    assert state.extra["container"] == "c" and state.started > 0


def test_a_task_on_its_way_counts_as_running_and_an_ended_one_as_exited() -> None:
    assert build.instance_state(service(), task("preparing")).state == "running"
    assert build.instance_state(service(), None).state == "running"
    failed = task("failed", Err="task: non-zero exit (137)", ContainerStatus={"ExitCode": 137})
    state = build.instance_state(service(), failed)
    assert (state.state, state.exit_code) == ("exited", 137)
    assert state.detail == "task failed with code 137: task: non-zero exit (137)"


def test_the_newest_task_tells() -> None:
    tasks = [task("failed", 5), task("running", 9), task("shutdown", 7)]
    assert build.latest_task(tasks) == tasks[1]
    # a task replaced by a `service update`, its end reported after its successor started
    replaced = {**task("shutdown", 9), "CreatedAt": "2026-12-03T10:55:10.5Z"}
    successor = {**task("running", 7), "CreatedAt": "2026-12-03T10:55:11.25Z"}
    assert build.latest_task([replaced, successor]) == successor
    assert build.latest_task([]) is None


def api_node(
    node_id: str, availability: str = "active", state: str = "ready", **more: object
) -> dict[str, object]:
    return {
        "ID": node_id,
        "Description": {"Hostname": f"host-{node_id}"},
        "Spec": {"Role": "worker", "Availability": availability, "Labels": {"zone": "b"}},
        "Status": {"State": state, "Addr": "127.0.0.1"},
        **more,
    }


def test_a_node_as_the_planner_sees_it() -> None:
    node = build.node_of(api_node("w1", "drain"))
    assert (node.id, node.hostname, node.role, node.labels, node.addr) == (
        "w1",
        "host-w1",
        "worker",
        {"zone": "b"},
        "127.0.0.1",
    )
    assert not node.usable and node.why_not_usable.endswith("is drain")
    manager = api_node("m1", ManagerStatus={"Addr": "127.0.0.1:2477"})
    manager["Status"] = {"State": "ready", "Addr": "0.0.0.0"}
    assert build.node_of(manager).addr == "127.0.0.1", "a manager's 0.0.0.0: its ManagerStatus address"


def test_the_service_is_pinned_to_the_chosen_node_beside_the_users_constraints() -> None:
    from herdsman.spec.placement import Placement

    placement = Placement(constraints=("node.labels.zone == b",))
    assert build.constraints(placement, "w1") == ["node.labels.zone == b", "node.id == w1"]
    assert build.constraints(None, "m1") == ["node.id == m1"]


def test_a_task_on_another_node_has_its_nodes_address_no_pid_and_moves_when_the_node_drains() -> None:
    nodes = [build.node_of(api_node("m1")), build.node_of(api_node("w1", "drain"))]
    running = task("running", ContainerStatus={"PID": 4242, "ContainerID": "c"})
    running["NodeID"] = "w1"
    state = build.instance_state(service({"herd.node": "w1"}), running, nodes, local="m1")
    assert (state.node, state.host, state.address) == ("w1", "127.0.0.1", "127.0.0.1:41000")
    assert state.pid is None, "a pid of another node's machine means nothing here"
    assert state.evicted.endswith("is drain") and "herd.node" not in state.labels
    here = dict(running, NodeID="m1")
    state = build.instance_state(service({"herd.node": "m1"}), here, nodes, local="m1")
    assert state.pid == 4242 and state.evicted == ""
    waiting = build.instance_state(service({"herd.node": "w1"}), None, nodes, local="m1")
    assert waiting.node == "w1", "not yet assigned: the node herdsman chose"
