"""What is particular to the swarm driver, on the real single-node swarm of scripts/system-deps:
each instance is a hardened Swarm service of one replica that Swarm never restarts, pulled from the
environment's registry by digest, labelled on the service and its container so that a fresh driver
rebuilds the state from labels alone, with secrets as Swarm secrets only; a killed task is seen as
exited, and heard of at once from the events API; `herd down` leaves no service, secret or
container behind. (Several nodes: test_swarm_nodes.py.)

(The deploy, rollback, heal, quarantine, drift and data tests run on swarm too: `-k swarm`.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from herdsman.errors import DriverError
from tests.helpers import app_pid, hello_copy, herd, instances, stack_id, stop_project, wait_for

pytestmark = pytest.mark.swarm
SECRET_VALUE = "s3cret-Value-42"


@pytest.fixture
def engine(swarm_engine: str) -> Any:
    import docker

    client = docker.DockerClient(base_url=swarm_engine, version="auto")
    yield client
    client.close()


@pytest.fixture
def hello(tmp_path: Path, swarm_hello: Path) -> Iterator[tuple[Path, int]]:
    """hello on swarm, with a secret API_KEY; stopped and cleaned up afterwards."""
    root = tmp_path / "hello"
    port = hello_copy(root, template=swarm_hello)
    toml = root / "herd.toml"
    toml.write_text(toml.read_text().replace("[service.web]\n", '[service.web]\nsecrets = ["API_KEY"]\n', 1))
    yield root, port
    stop_project(root)


def services_of(engine: Any, root: Path) -> list[Any]:
    return list(engine.services.list(filters={"label": f"herd.stack-id={stack_id(root)}"}))


def test_each_instance_is_a_hardened_service_of_one_replica_pulled_by_digest(
    hello: tuple[Path, int], engine: Any, swarm_registry: str
) -> None:
    root, port = hello
    out = herd(root, "deploy", env={"API_KEY": SECRET_VALUE}, timeout=300).stdout
    digest = out.split(f"{swarm_registry}/herdtest/web@")[1].split()[0]
    assert "hello" in httpx.get(f"http://127.0.0.1:{port}/").text.lower()

    running = {i["id"] for i in instances(root) if i["state"] == "running"}
    services = services_of(engine, root)
    assert len(services) == len(running) == 2, "one service per instance"
    for service in services:
        spec = service.attrs["Spec"]
        task = spec["TaskTemplate"]
        container = task["ContainerSpec"]
        assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
        assert task["RestartPolicy"]["Condition"] == "none", "herdsman heals, not Swarm"
        assert container["Image"] == f"{swarm_registry}/herdtest/web@{digest}", "by digest, never a tag"
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
        (network,) = [engine.networks.get(n["Target"]).attrs for n in task["Networks"]]
        assert (network["Name"], network["Driver"]) == ("host", "host"), "host networking"
        # hardening, visible in the service spec
        assert container["ReadOnly"] is True and container["Init"] is True
        assert container["CapabilityDrop"] == ["ALL"]
        mounts = {m["Target"]: m for m in container["Mounts"]}
        assert mounts["/tmp"]["Type"] == "tmpfs"
        assert mounts["/data"]["Source"] == f"herd-{stack_id(root)}-counter"
        # every herd.* label on the service and on its containers; state from labels alone
        assert spec["Labels"] == container["Labels"]
        assert spec["Labels"]["herd.instance"] in running
        assert spec["Labels"]["herd.image"] == digest
        # secrets: a Swarm secret of the instance, in no label and no environment
        assert [s["File"]["Name"] for s in container["Secrets"]] == ["herd-env-API_KEY"]
        assert SECRET_VALUE not in json.dumps(service.attrs)
        assert not any(e.startswith("API_KEY=") for e in container.get("Env", []))

    for instance in running:
        (found,) = engine.containers.list(filters={"label": f"herd.instance={instance}"})
        assert found.attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert found.attrs["HostConfig"]["NetworkMode"] == "host"
        assert SECRET_VALUE not in json.dumps(found.attrs)
        pid = app_pid(root, instance)
        status = Path(f"/proc/{pid}/status").read_text()
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), "the swarm engine sets no-new-privileges"
        assert re.search(r"^CapEff:\s+0+$", status, re.M), "every capability dropped"
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"API_KEY={SECRET_VALUE}".encode() in environ, "the app still gets its secret as a variable"

    # a fresh driver, knowing nothing, rebuilds the instances from the services' labels
    from herdsman.deploy.environments import make_driver
    from herdsman.spec import load_project

    driver = make_driver("swarm", root / ".herd", load_project(root / "herd.toml"))
    listed = asyncio.run(driver.list({"herd.stack-id": stack_id(root)}))
    assert {i.id for i in listed} == running
    assert all(i.state == "running" and i.port and i.release == 1 and i.service == "web" for i in listed)
    assert all(i.labels["herd.image"] == digest for i in listed)
    assert "every running instance matches" in herd(root, "verify", env={"API_KEY": SECRET_VALUE}).stdout

    herd(root, "down")
    label = f"herd.stack-id={stack_id(root)}"
    assert services_of(engine, root) == []
    assert engine.secrets.list(filters={"label": label}) == []
    wait_for(lambda: engine.containers.list(all=True, filters={"label": label}) == [], 30)


def test_a_killed_task_is_seen_as_exited_and_never_restarted_by_swarm(
    hello: tuple[Path, int], engine: Any
) -> None:
    root, _port = hello
    herd(root, "deploy", env={"API_KEY": SECRET_VALUE}, timeout=300)
    victim = sorted(i["id"] for i in instances(root))[0]
    from herdsman.deploy.environments import make_driver
    from herdsman.spec import load_project

    driver = make_driver("swarm", root / ".herd", load_project(root / "herd.toml"))
    before = asyncio.run(driver.inspect(victim))
    assert before is not None and before.state == "running" and before.pid
    assert (before.node, before.host) == (driver.local_node, "127.0.0.1"), "its node's address"
    heard: list[str] = []
    events = driver.watch_events(stack_id(root), heard.append, lambda: None)
    try:
        os.kill(app_pid(root, victim), signal.SIGKILL)
        wait_for(lambda: victim in heard, 30)  # from the events API, as on a node with no pid here
    finally:
        events.close()
    assert heard == [victim], "reported once"

    def exited() -> Any:
        state = asyncio.run(driver.inspect(victim))
        return state if state is not None and state.state == "exited" else None

    state = wait_for(exited, 30)
    assert state.exit_code == 137 and "task failed" in state.detail, state.detail
    (service,) = [
        s for s in services_of(engine, root) if s.attrs["Spec"]["Labels"]["herd.instance"] == victim
    ]
    assert len(service.tasks()) == 1, "Swarm started no second task: restarts are herdsman's"
    assert "exited" in herd(root, "ps").stdout


def test_the_swarm_driver_needs_a_registry(swarm_hello: Path, swarm_engine: str) -> None:
    from herdsman.drivers.base import InstanceSpec
    from herdsman.drivers.swarm import SwarmDriver
    from herdsman.image.bake import image_store
    from herdsman.spec import load_project

    project = load_project(swarm_hello / "herd.toml")
    store = image_store(project)
    (digest,) = [m["digest"] for m in json.loads((store.root / "index.json").read_text())["manifests"]][:1]
    spec = InstanceSpec(id="web-1-x", image=digest, labels={"herd.service": "web"}, argv=("true",), env={})
    driver = SwarmDriver(swarm_hello / ".herd", store, docker_host=swarm_engine)
    with pytest.raises(DriverError) as caught:
        driver.image_reference(spec)
    assert "registry" in caught.value.message and "[environment.NAME]" in str(caught.value.hint)
