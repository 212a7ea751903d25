"""The docker driver on a real engine: containers are hardened by default, limits and capabilities
come from herd.toml, state is rebuilt from labels by a fresh driver, a host image is refused clearly,
and logs outlive their container."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from herdsman.deploy.environments import make_driver
from herdsman.spec import load_project
from tests.helpers import container_of, hello_copy, herd, instances, stack_id, stack_name, stop_project

pytestmark = pytest.mark.docker

LIMITS = """
[service.web.limits]
memory = "128m"
cpus = 0.5
"""


@pytest.fixture
def project(tmp_path: Path, debian_hello: Path) -> Iterator[Path]:
    root = tmp_path / "hello"
    hello_copy(root, template=debian_hello)
    toml = root / "herd.toml"
    text = toml.read_text().replace("replicas = 2", 'replicas = 2\ncap_add = ["NET_BIND_SERVICE"]')
    toml.write_text(text + LIMITS)
    yield root
    stop_project(root)


def container(instance: str) -> dict[str, Any]:
    """`docker inspect` of the instance's container."""
    out = subprocess.run(["docker", "inspect", container_of(instance)], capture_output=True)
    return dict(json.loads(out.stdout)[0])


def test_containers_are_hardened_by_default(project: Path) -> None:
    herd(project, "deploy")
    running = instances(project)
    assert len(running) == 2
    for item in running:
        attrs = container(item["id"])
        host = attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["NetworkMode"] == "host"
        assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["NET_BIND_SERVICE"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert "/tmp" in host["Tmpfs"]
        assert host["Memory"] == 128 * 1024 * 1024 and host["NanoCpus"] == 500_000_000
        assert host["RestartPolicy"]["Name"] in ("", "no"), "the agent heals, not the engine"
        labels = attrs["Config"]["Labels"]
        assert labels["herd.instance"] == item["id"] and labels["herd.release"] == "1"
        assert labels["herd.stack"] == stack_name(project) and labels["herd.image"].startswith("sha256:")
        assert [m["Name"] for m in attrs["Mounts"]] == [f"herd-{stack_id(project)}-counter"]
    write = subprocess.run(
        ["docker", "exec", container_of(running[0]["id"]), "sh", "-c", "echo x > /etc/x"], capture_output=True
    )
    assert write.returncode != 0 and b"Read-only file system" in write.stderr


def test_a_fresh_driver_rebuilds_state_from_labels_and_logs_outlive_containers(project: Path) -> None:
    herd(project, "deploy")
    project_ = load_project(project / "herd.toml")
    driver = make_driver("docker", project / ".herd", project_)
    listed = asyncio.run(driver.list({"herd.stack-id": stack_id(project), "herd.env": "production"}))
    assert sorted(s.id for s in listed) == sorted(i["id"] for i in instances(project))
    assert all(s.state == "running" and s.port and s.pid for s in listed)
    log = driver.log_file(listed[0].id)
    herd(project, "down")
    assert asyncio.run(driver.inspect(listed[0].id)) is None, "stopped containers are removed"
    assert log is not None and "hello listening" in log.read_text()
    assert "hello listening" in herd(project, "logs", "--release", "1").stdout


def test_a_host_image_is_refused_clearly(tmp_path: Path, debian_hello: Path) -> None:
    root = tmp_path / "host-hello"
    hello_copy(root)
    toml = root / "herd.toml"
    toml.write_text(toml.read_text() + '\n[environment.production]\ndriver = "docker"\n')
    try:
        result = herd(root, "deploy", check=False)
        assert result.returncode == 1
        assert "cannot run in a container" in result.stderr and "debian:bookworm" in result.stderr
    finally:
        stop_project(root)


def test_the_driver_option_overrides_the_environment(project: Path) -> None:
    toml = project / "herd.toml"
    toml.write_text(toml.read_text().replace('[environment.production]\ndriver = "docker"\n', ""))
    assert 'driver = "docker"' not in toml.read_text()
    herd_ = [sys.executable, "-m", "herdsman", "--driver", "docker", "-f", str(toml)]
    subprocess.run([*herd_, "deploy"], check=True, capture_output=True)
    ps = subprocess.run([*herd_, "ps"], check=True, capture_output=True, text=True).stdout
    ids = [line.split()[0] for line in ps.splitlines()[1:] if " running " in line]
    assert len(ids) == 2 and all(container_of(i) for i in ids)
    subprocess.run([*herd_, "down"], check=True, capture_output=True)
    toml.write_text(toml.read_text() + '\n[environment.production]\ndriver = "docker"\n')  # for the cleanup


def test_exec_runs_in_the_container_and_is_killed_at_its_timeout(project: Path) -> None:
    """`exec` (what a command health check uses) sees the container's environment, read-only
    root and private /tmp; a command past its timeout is killed, children included."""
    herd(project, "deploy")
    one, two = (i["id"] for i in instances(project))
    driver = make_driver("docker", project / ".herd", load_project(project / "herd.toml"))

    async def scenario() -> None:
        ran = await driver.exec(one, ["sh", "-c", 'echo "$HERD_INSTANCE $(pwd)"; echo beat > /tmp/hb'], 10)
        assert ran.exit_code == 0 and ran.output.split() == [one, "/app"], ran
        assert (await driver.exec(two, ["test", "-e", "/tmp/hb"], 10)).exit_code == 1, "/tmp is private"
        assert (await driver.exec(one, ["sh", "-c", "echo x > /app/x"], 10)).exit_code != 0
        mark = f"{29 + os.getpid() % 1000 / 1000:.3f}"  # a sleep no one else runs
        hung = await driver.exec(one, ["sh", "-c", f"sleep {mark} & sleep {mark}; echo never"], 1)
        assert hung.timed_out and hung.exit_code is None
        await asyncio.sleep(0.5)  # SIGKILL is sent; the kernel may take a moment to end them
        wanted = f"sleep\0{mark}\0".encode()
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p) == wanted]
        assert left == [], "the command and its children were killed (the engine's processes are ours to see)"

    asyncio.run(scenario())


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
