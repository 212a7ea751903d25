"""The Docker engines the swarm driver talks to: the manager (a clear error when it is not one),
the local volumes on the manager's own node, and, where a node's label says how to reach it, that
node's own engine (its container events: see swarm_events.py).

The manager is the one engine herdsman needs. Swarm's API (1.41) has no task events, and a worker's
container events stay on the worker's engine, so a node labelled `herd.engine=ADDRESS` (`docker
node update --label-add herd.engine=unix:///run/...sock NODE`, or `tcp://HOST:PORT` behind TLS)
lets herdsman subscribe to them too; without it, remote tasks are polled.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from herdsman.drivers.engine_files import local_volume_path
from herdsman.errors import DriverError

ENGINE_LABEL = "herd.engine"  # a node label: where herdsman reaches that node's own engine


def connect(docker_host: str | None) -> Any:
    """A client of the engine at ``docker_host`` (default: DOCKER_HOST), which must be a manager."""
    import docker

    try:
        if docker_host:
            client = docker.DockerClient(base_url=docker_host, version="auto", timeout=60)
        else:
            client = docker.from_env(version="auto", timeout=60)
        swarm = (client.info().get("Swarm") or {}) if client.ping() else {}
    except Exception as exc:
        raise DriverError(
            f"the Docker engine {docker_host or os.environ.get('DOCKER_HOST', '(default)')} is not "
            f"answering: {exc}",
            hint="set `docker_host` in [environment.NAME] (scripts/system-deps starts one on "
            "unix:///run/herd-swarm/docker.sock)",
        ) from None
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        raise DriverError(
            f"the Docker engine {docker_host or '(default)'} is not a Swarm manager",
            hint="`docker swarm init --advertise-addr 127.0.0.1` on that engine (herdsman never "
            "switches an engine into swarm mode by itself)",
        )
    return client


def node_engine(address: str) -> Any:
    """A client of a node's own engine (its `herd.engine` label), for its events only."""
    import docker

    return docker.DockerClient(base_url=address, version="auto", timeout=60)


def ensure_volume(client: Any, stack: str, name: str, volume: str) -> str:
    """The local volume ``volume`` (herd volume ``name`` of the stack ``stack``), created if need be."""
    import docker.errors

    try:
        client.volumes.get(volume)
    except docker.errors.NotFound:
        client.volumes.create(volume, labels={"herd.stack-id": stack, "herd.volume": name})
    return volume


def volume_dir(client: Any, name: str, volume_name: str) -> Path:
    """The local volume's data on this machine (the engine's node; snapshots copy it)."""
    volume = client.volumes.get(volume_name)
    return local_volume_path(
        volume, name, "snapshots and backups of swarm volumes need the node's engine to be local"
    )


def remove_volume(client: Any, name: str, volume_name: str) -> None:
    import docker.errors

    try:
        client.volumes.get(volume_name).remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        raise DriverError(f"cannot remove volume {name}: {exc}") from exc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
