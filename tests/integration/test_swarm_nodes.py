"""Once on a real multi-node swarm: a manager and a worker of their own on this machine
(tests/two_node_swarm.py), labelled zone=a and zone=b. examples/hello with 4 instances spread by
zone runs 2 on each node, each Swarm service pinned to the node herdsman chose; the router reaches
each at its node's address; a task killed on the worker (no pid here, no container on the
manager's engine) is replaced; the worker drained under load has its instances replaced on the
manager with zero failed requests. Everything the cluster started is gone afterwards."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import need
from tests.helpers import (
    Load,
    RunningRegistry,
    free_port,
    hello_copy,
    herd,
    instances,
    stack_id,
    stop_project,
    wait_for,
)
from tests.two_node_swarm import TwoNodeSwarm

pytestmark = pytest.mark.swarm


@pytest.fixture(scope="module")
def cluster() -> Iterator[TwoNodeSwarm]:
    need(os.geteuid() == 0 and shutil.which("dockerd") is not None, "a second swarm needs root and dockerd")
    swarm = TwoNodeSwarm()
    try:
        swarm.start()
        swarm.label(swarm.manager_id, zone="a")
        swarm.label(swarm.worker_id, zone="b")
        yield swarm
    finally:
        swarm.stop()
    assert swarm.leftovers() == [], "the two-node swarm left something behind"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A docker-registry on 127.0.0.1 of this module's own: both nodes pull from it by digest."""
    running = RunningRegistry(tmp_path_factory.mktemp("two-node-registry"))
    yield running.address
    running.stop()


@pytest.fixture
def spread(
    tmp_path: Path, debian_hello: Path, cluster: TwoNodeSwarm, registry: str
) -> Iterator[tuple[Path, int]]:
    """hello on the two-node swarm: 4 instances spread by zone, no volume (a volume would pin the
    service to one node), its counter in /tmp."""
    root = tmp_path / "hello"
    port = hello_copy(root, template=debian_hello)
    toml = root / "herd.toml"
    text = toml.read_text()
    swarm = f'driver = "swarm"\nregistry = "{registry}/herdtest"\ndocker_host = "{cluster.host("manager")}"'
    text = text.replace('driver = "docker"', swarm)
    text = text.replace("replicas = 2", "replicas = 4").replace('DATA_DIR = "/data"', 'DATA_DIR = "/tmp"')
    text = re.sub(r"volumes = \{ counter = \"/data\" \}.*\n", "", text)
    text = re.sub(r"\[service\.web\.migrate\]\s*#?.*\ncommand = .*\n", "", text)
    text = re.sub(r"\[volume\.counter\]\ndescription = .*\n", "", text)
    text = text.replace(
        "[service.web.route]", '[service.web.placement]\nspread = "node.labels.zone"\n\n[service.web.route]'
    )
    toml.write_text(text)
    yield root, port
    stop_project(root)  # the agent, then `herd down`: the router and every service on the two nodes


def placed(cluster: TwoNodeSwarm, root: Path) -> dict[str, str]:
    """Each running instance's node, as Swarm runs it (the task's node)."""
    import docker

    client = docker.DockerClient(base_url=cluster.host("manager"), version="auto")
    try:
        out = {}
        for service in client.services.list(filters={"label": f"herd.stack-id={stack_id(root)}"}):
            try:
                tasks = [t for t in service.tasks() if t["Status"]["State"] == "running"]
            except docker.errors.NotFound:
                continue  # removed since the listing (a drained instance)
            if tasks:
                out[service.attrs["Spec"]["Labels"]["herd.instance"]] = tasks[0]["NodeID"]
        return out
    finally:
        client.close()


def placed_when(
    cluster: TwoNodeSwarm, root: Path, condition: Callable[[dict[str, str]], bool]
) -> dict[str, str]:
    now = placed(cluster, root)
    return now if condition(now) else {}


def diagnosis(cluster: TwoNodeSwarm, root: Path) -> str:
    """What the agent did and what Swarm ran, for a failure's message."""
    events = herd(root, "events", check=False).stdout[-4000:]
    nodes = cluster.docker("manager", "node", "ls", check=False)
    ids = cluster.docker("manager", "service", "ls", "-q", check=False).split()
    tasks = cluster.docker("manager", "service", "ps", "--no-trunc", *ids, check=False) if ids else ""
    return f"events:\n{events}\nnodes:\n{nodes}\ntasks:\n{tasks}"


def constraints_of(cluster: TwoNodeSwarm, root: Path) -> list[list[str]]:
    import docker

    client = docker.DockerClient(base_url=cluster.host("manager"), version="auto")
    try:
        services = client.services.list(filters={"label": f"herd.stack-id={stack_id(root)}"})
        return [s.attrs["Spec"]["TaskTemplate"]["Placement"]["Constraints"] for s in services]
    finally:
        client.close()


def test_spread_over_two_nodes_then_the_worker_drained_under_load(
    spread: tuple[Path, int], cluster: TwoNodeSwarm
) -> None:
    root, port = spread
    api = free_port()
    herd(root, "up", "-d", "--api", f"127.0.0.1:{api}", timeout=600)
    where = wait_for(lambda: placed_when(cluster, root, lambda p: len(p) == 4), 300, every=0.5)
    assert Counter(where.values()) == {cluster.manager_id: 2, cluster.worker_id: 2}, "2 per zone"
    ps = herd(root, "ps").stdout
    assert ps.splitlines()[0].split()[-1] == "node", ps  # `herd ps` says where each runs
    assert ps.count(cluster.worker_id) == 2 and ps.count(cluster.manager_id) == 2, ps
    with httpx.Client(base_url=f"http://127.0.0.1:{api}/ui") as browser:  # and so does the dashboard
        token = (root / ".herd" / "agent-production.token").read_text().strip()
        browser.post("/login", data={"token": token})
        page = browser.get("/").text
    for node in (cluster.manager_id, cluster.worker_id):
        assert page.count(f'title="node {node}"') == 2, page[-2000:]
    for constraints in constraints_of(cluster, root):  # each service pinned where herdsman chose
        assert len([c for c in constraints if c.startswith("node.id")]) == 1

    # a task killed on the worker: no pid on this engine, no container on the manager's engine
    (victim, *_) = [i for i, n in where.items() if n == cluster.worker_id]
    container = cluster.docker("worker", "ps", "-q", "--filter", f"label=herd.instance={victim}")
    with Load(f"http://127.0.0.1:{port}/") as load:
        time.sleep(1)
        cluster.docker("worker", "kill", container)
        wait_for(lambda: victim not in (p := placed(cluster, root)) and len(p) == 4, 180, every=0.5)
    assert load.failures == [], load.failures[:5]
    before = placed(cluster, root)
    # the replacement goes to the zone with fewer (the worker's) unless the worker was not `ready`
    # at that moment (a loaded machine can miss a heartbeat): both nodes still run some either way
    assert set(before.values()) == {cluster.manager_id, cluster.worker_id}, diagnosis(cluster, root)

    # `herd node drain`, not Swarm's own (which stops the worker's tasks before anything replaced
    # them): each replacement runs and is admitted before the instance it replaces is stopped, so
    # fewer than 4 never run at any moment
    counts: list[int] = []
    draining = threading.Event()

    def count_running() -> None:
        while not draining.is_set():
            counts.append(len(placed(cluster, root)))
            time.sleep(0.2)

    sampler = threading.Thread(target=count_running)
    with Load(f"http://127.0.0.1:{port}/") as load:
        time.sleep(1)
        sampler.start()
        try:
            drained = herd(root, "node", "drain", cluster.worker_id[:8], timeout=600)
        finally:
            draining.set()
            sampler.join(timeout=30)
        manager_only = {cluster.manager_id}
        after = wait_for(
            lambda: placed_when(cluster, root, lambda p: len(p) == 4 and set(p.values()) == manager_only),
            120,
            every=0.5,
        )
        time.sleep(1)
    assert load.failures == [], load.failures[:5]
    assert len(load.served) > 100
    assert counts and min(counts) >= 4, (counts, diagnosis(cluster, root))
    on_worker = sum(1 for n in before.values() if n == cluster.worker_id)
    assert f"drained: {on_worker} instance(s) moved" in drained.stdout, drained.stdout
    nodes = herd(root, "node", "ls").stdout
    worker_line = next(line for line in nodes.splitlines() if line.startswith(cluster.worker_id[:12]))
    assert " drain " in worker_line and worker_line.split()[-1] == "0", nodes
    assert {i for i, n in before.items() if n == cluster.manager_id} <= set(after), "the manager's stayed"
    running = [i for i in instances(root) if i["state"] == "running"]
    assert {i["id"] for i in running} == set(after), "herd ps agrees with Swarm"

    # back into service, two more instances (they go to the worker's empty zone), then Swarm's own
    # drain: it stops the worker's tasks at once; the router retries what they refused elsewhere
    herd(root, "node", "activate", cluster.worker_id[:8])
    herd(root, "scale", "web=6")
    wait_for(
        lambda: placed_when(
            cluster, root, lambda p: len(p) == 6 and list(p.values()).count(cluster.worker_id) == 2
        ),
        300,
        every=0.5,
    )
    with Load(f"http://127.0.0.1:{port}/") as load:
        time.sleep(1)
        cluster.docker("manager", "node", "update", "--availability", "drain", cluster.worker_id)
        wait_for(
            lambda: placed_when(cluster, root, lambda p: len(p) == 6 and set(p.values()) == manager_only),
            300,
            every=0.5,
        )
        time.sleep(1)
    assert load.failures == [], load.failures[:5]


def served_by(port: int, requests: int) -> Counter[str]:
    """Which instances answered ``requests`` GETs through the route."""
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=30) as client:
        for _ in range(requests):
            body = client.get(f"http://127.0.0.1:{port}/").text
            seen[body.split("<code>")[1].split("</code>")[0]] += 1
    return seen


def test_tasks_on_the_worker_drift_are_noticed_and_are_quarantined_with_their_evidence(
    spread: tuple[Path, int], cluster: TwoNodeSwarm, registry: str
) -> None:
    """What the manager alone can say about a task on another node: `herd verify` checks its
    service's and task's specs (and says the file system was not checked), a `service update`
    behind herdsman's back is drift; the worker's own engine (labelled `herd.engine`) tells of a
    task killed there with the poll switched off; a quarantined worker task leaves the pool but
    is kept, its logs readable, its record naming the node, until it is purged."""
    import docker

    from herdsman.drivers import swarm_events
    from herdsman.drivers.swarm import SwarmDriver
    from herdsman.drivers.swarm_engine import ENGINE_LABEL
    from herdsman.image.oci import ImageStore

    root, port = spread
    # the worker back into service (the test before this one leaves it drained by Swarm)
    cluster.docker("manager", "node", "update", "--availability", "active", cluster.worker_id)
    herd(root, "deploy", timeout=600)
    where = wait_for(lambda: placed_when(cluster, root, lambda p: len(p) == 4), 300, every=0.5)
    drifting, killed = sorted(i for i, n in where.items() if n == cluster.worker_id)
    clean = herd(root, "verify")
    assert "every running instance matches its image and release (except what is said above)" in clean.stdout
    assert f"{drifting} file system: not checked: the task runs on node {cluster.worker_id}" in clean.stdout

    # the worker's own engine tells of a task killed there, with the poll of the manager switched off
    cluster.label(cluster.worker_id, **{ENGINE_LABEL: cluster.host("worker")})
    driver = SwarmDriver(
        root / ".herd", ImageStore(root / ".herd" / "images"), registry=f"{registry}/herdtest",
        docker_host=cluster.host("manager"),
    )  # fmt: skip
    ended: list[str] = []
    polls = (swarm_events.REMOTE_EVERY, swarm_events.SUBSCRIBED_EVERY)
    swarm_events.REMOTE_EVERY = swarm_events.SUBSCRIBED_EVERY = 3600.0
    events = driver.watch_events(stack_id(root), ended.append, lambda: None)
    try:
        wait_for(lambda: cluster.worker_id in events._live, 60, every=0.1)
        container = cluster.docker("worker", "ps", "-q", "--filter", f"label=herd.instance={killed}")
        cluster.docker("worker", "kill", container)
        wait_for(lambda: killed in ended, 60, every=0.1)
    finally:
        events.close()
        swarm_events.REMOTE_EVERY, swarm_events.SUBSCRIBED_EVERY = polls
        driver.client.close()
    assert ended == [killed]

    # a service changed behind herdsman's back, on the manager: drift, with a container check's words
    name = cluster.docker("manager", "service", "ls", "-q", "--filter", f"label=herd.instance={drifting}")
    cluster.docker("manager", "service", "update", "--detach", "--env-add", "DEBUG=1", name)
    wait_for(lambda: placed_when(cluster, root, lambda p: drifting in p), 120, every=0.5)
    found = herd(root, "verify", check=False)
    assert found.returncode == 1, found.stdout
    assert f"{drifting} drifted (reported): environment: DEBUG: added '1'" in found.stdout, found.stdout

    # quarantined by hand once an agent runs (which also heals the killed one)
    herd(root, "up", "-d", "--no-deploy", timeout=600)
    wait_for(lambda: len(placed(cluster, root)) == 4, 300, every=0.5)  # the killed one replaced
    try:  # it serves before (once the agent that adopted it has its pool)
        wait_for(lambda: served_by(port, 20)[drifting] > 0, 120, every=0.5)
    except AssertionError:
        raise AssertionError(f"{drifting} never served\n{diagnosis(cluster, root)}") from None
    herd(root, "quarantine", "add", drifting)
    record_file = root / ".herd" / "quarantine" / drifting / "instance.json"
    wait_for(record_file.is_file, 300, every=0.5)
    wait_for(lambda: drifting not in {i["id"] for i in instances(root)}, 120, every=0.5)
    record = json.loads(record_file.read_text())
    assert record["node"] == cluster.worker_id
    assert '"GET / HTTP/1.1" 200' in (record_file.parent / "log").read_text()
    inspected = herd(root, "inspect", drifting).stdout
    assert f"node       {cluster.worker_id}" in inspected and "--- last" in inspected, inspected
    assert "/tmp was not copied: the task runs on node" in inspected
    logs = herd(root, "logs", drifting).stdout
    assert logs and all(f" {drifting} " in line for line in logs.splitlines()), logs[-2000:]
    assert '"GET / HTTP/1.1" 200' in logs
    assert served_by(port, 40)[drifting] == 0, "out of the pool"
    client = docker.DockerClient(base_url=cluster.host("manager"), version="auto")
    try:  # kept: its service, and its task still running on the worker
        (kept,) = client.services.list(filters={"label": f"herd.instance={drifting}"})
        assert "herd.quarantined" in kept.attrs["Spec"]["Labels"]
        assert [t["NodeID"] for t in kept.tasks() if t["Status"]["State"] == "running"] == [cluster.worker_id]
        herd(root, "quarantine", "purge", drifting)
        herd(root, "ps")  # a listing removes what no record keeps any more
        wait_for(lambda: not client.services.list(filters={"label": f"herd.instance={drifting}"}), 60)
    finally:
        client.close()
