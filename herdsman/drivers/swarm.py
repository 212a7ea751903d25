"""The `swarm` driver: each instance a Docker Swarm service of one replica, through the docker SDK.

Swarm places and runs; herdsman keeps deciding what runs and when traffic moves. Measured on a
single-node swarm (issue 15), Swarm's own rolling `service update` dropped requests where herdsman
driving a new service per instance, health-admitted, then the pool switched, dropped none. So an
instance is a service (`replicas=1`, restart condition `none`: herdsman heals, not Swarm) on host
networking and its own 127.0.0.1 port, and a rollout never uses `service update`.

Every `herd.*` label is on the service and on its containers, so actual state is rebuilt from
labels alone. Images come from the environment's registry by digest (`deploy` pushes them there),
never by a tag. Hardening is the docker driver's. Secrets are Swarm secrets, exported into the
app's environment by a small sh wrapper (`swarm_spec.SECRET_WRAPPER`), never in a label or the
service's or container's environment. Output is collected as the docker driver does (`docker logs
-f` beside the task's container), so logs outlive the service. Exec reaches the task's container
through the same engine (a single-node swarm, or the manager the task runs on); drift, quarantine
evidence and logs of a task on another node come through the manager (swarm_evidence.py); the
engine's connection and its node's volumes are swarm_engine.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from herdsman.drivers import swarm_engine as engine
from herdsman.drivers import swarm_evidence as evidence
from herdsman.drivers import swarm_spec as build
from herdsman.drivers.base import (
    HOST_IMAGE_REFUSED,
    BlockingDriver,
    Drifts,
    ExecResult,
    InstanceSpec,
    InstanceState,
    States,
    is_host_image,
    secret_digest,
    stack_key,
)
from herdsman.drivers.container_evidence import keep_container
from herdsman.drivers.docker_exec import exec_in
from herdsman.drivers.placement import Node, place
from herdsman.drivers.swarm_events import SwarmEvents
from herdsman.errors import DriverError
from herdsman.image.oci import ImageStore
from herdsman.logs import write_labels
from herdsman.spec.models import Environment

START_TIMEOUT = 120.0  # seconds for a task to pull its image and run


class SwarmDriver(BlockingDriver):
    name = "swarm"

    def __init__(
        self,
        home: Path,
        store: ImageStore,
        *,
        registry: str | None = None,
        docker_host: str | None = None,
        client: Any = None,
    ) -> None:
        self.home = home
        self.store = store
        self.registry = registry
        self.docker_host = docker_host
        self.logs = home / "logs"
        self.client = client or engine.connect(docker_host)
        self.docker_cli = shutil.which("docker")
        self._followers: dict[str, subprocess.Popen[bytes]] = {}
        self._placing = threading.Lock()  # one placement at a time: each sees the ones before
        self.local_node = str((self.client.info().get("Swarm") or {}).get("NodeID") or "")

    @classmethod
    def from_environment(cls, home: Path, store: ImageStore, environment: Environment | None) -> SwarmDriver:
        """`[environment.NAME] registry` (where the engine pulls from, by digest) and `docker_host`."""
        return cls(
            home,
            store,
            registry=environment.registry if environment else None,
            docker_host=(environment.docker_host if environment else None) or os.environ.get("DOCKER_HOST"),
        )

    # protocol ---------------------------------------------------------------------------------
    async def inspect(self, instance_id: str) -> InstanceState | None:
        return await asyncio.to_thread(self._inspect, instance_id)

    def log_file(self, instance_id: str) -> Path | None:
        service = self._service(instance_id)
        if service is not None:
            return Path(((service.get("Spec") or {}).get("Labels") or {}).get(build.LOG_LABEL, ""))
        found = sorted(self.logs.glob(f"*/{instance_id}.log"))
        return found[0] if found else None

    def volume_dir(self, stack: str, name: str) -> Path:
        return engine.volume_dir(self.client, name, self._volume(stack, name))

    def remove_volume(self, stack: str, name: str) -> None:
        engine.remove_volume(self.client, name, build.volume_name(stack, name))

    def _volume(self, stack: str, name: str) -> str:
        """The local volume ``name`` of the stack whose id is ``stack`` (created if need be)."""
        return engine.ensure_volume(self.client, stack, name, build.volume_name(stack, name))

    def refuse_image(self, image: str) -> str | None:
        """A `host` image (only an app, to run on this machine's OS) cannot run in a container."""
        if self.store.has_blob(image) and is_host_image(self.store.manifest(image)):
            return HOST_IMAGE_REFUSED
        return None

    # starting ---------------------------------------------------------------------------------
    def image_reference(self, spec: InstanceSpec) -> str:
        manifest = self.store.manifest(spec.image)
        if is_host_image(manifest):
            raise DriverError(
                HOST_IMAGE_REFUSED,
                hint='give the service a full base for the swarm driver, e.g. base = "debian:bookworm"',
            )
        if not self.registry:
            raise DriverError(
                "the swarm driver runs images from the environment's registry, and it has none",
                hint='set registry = "HOST:PORT/PREFIX" in [environment.NAME]: `herd deploy` pushes '
                "there and every node pulls by digest",
            )
        return build.image_reference(self.registry, spec.labels.get("herd.service", "instance"), spec.image)

    def _start(self, spec: InstanceSpec) -> InstanceState:
        import docker.errors
        from docker.types import Mount, Resources, RestartPolicy, SecretReference, ServiceMode

        if self._service(spec.id) is not None:
            raise DriverError(f"instance {spec.id} already exists")
        image = self.image_reference(spec)
        stack_id = spec.labels.get("herd.stack-id", spec.labels.get("herd.stack", "herd"))
        port = engine.free_port() if spec.wants_port else None
        env, secret_values = build.split_env(spec, port)
        service = spec.labels.get("herd.service", "instance")
        log = spec.log_file or self.logs / service / f"{spec.id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        write_labels(log, dict(spec.labels))
        labels = {**spec.labels, build.LOG_LABEL: str(log), build.PORT_LABEL: str(port or "")}
        if secret_values:
            labels[build.WRAPPED_LABEL] = "1"
        mounts = [Mount(v.target, self._volume(stack_id, v.name), type="volume") for v in spec.volumes]
        mounts.append(Mount("/tmp", None, type="tmpfs", tmpfs_size=256 * 1024**2, tmpfs_mode=0o1777))
        try:
            with self._placing:  # one placement at a time: each sees where the ones before went
                node = self._place(spec)
                labels[build.NODE_LABEL] = node
                secrets = [
                    SecretReference(
                        made, name, filename=build.SECRET_FILE + key, uid="0", gid="0", mode=0o444
                    )
                    for key, value in sorted(secret_values.items())
                    for name in [build.secret_name(stack_id, spec.id, key)]
                    for made in [self._secret(name, value, spec, key)]
                ]
                created = self.client.services.create(
                    image,
                    command=build.command(spec),
                    name=build.service_name(spec.labels, spec.id),
                    labels=labels,
                    container_labels=labels,
                    env=[f"{k}={v}" for k, v in env.items()],
                    mounts=mounts,
                    secrets=secrets,
                    mode=ServiceMode("replicated", replicas=1),
                    restart_policy=RestartPolicy(condition="none"),
                    networks=["host"],
                    constraints=build.constraints(spec.placement, node),
                    resources=Resources(**build.limits(spec)),
                    log_driver="json-file",
                    log_driver_options={"max-size": "50m", "max-file": "2"},
                    **build.hardening(spec),
                )
        except docker.errors.APIError as exc:
            self._remove(spec.id)
            raise DriverError(f"Swarm could not start {spec.id}: {exc.explanation or exc}") from None
        except BaseException:  # no node fits, or interrupted: nothing of it is left behind
            self._remove(spec.id)
            raise
        state = self._wait_started(created.id, spec.id, image)
        container = state.extra.get("container")
        if container and state.node in ("", self.local_node):
            self._followers[spec.id] = self._follow_logs(["logs", "-f", "--timestamps", container], log)
        elif container:  # on another node: its engine's logs come through the manager
            follow = ["service", "logs", "-f", "--timestamps", "--raw", "--no-trunc", state.extra["service"]]
            self._followers[spec.id] = self._follow_logs(follow, log)
        return state

    def _place(self, spec: InstanceSpec) -> str:
        """The node for a new instance (drivers/placement.py): the service's running instances and
        the nodes as Swarm sees them now. A service with volumes stays on this engine's node, which
        holds them; so does one whose checks exec into it (no API reaches another node's
        containers: a command check there could only fail, and quarantine a healthy instance)."""
        same = {k: spec.labels[k] for k in ("herd.stack-id", "herd.env", "herd.service") if k in spec.labels}
        placed = [s.node for s in self.list_now(same) if s.state == "running" and s.id != spec.id]
        pinned = self.local_node if spec.volumes or spec.needs_exec else None
        service = spec.labels.get("herd.service", "")
        return place(self.nodes_now(), placed, spec.placement, 1, service=service, pinned=pinned)[0]

    def nodes_now(self) -> list[Node]:
        """The swarm's nodes: labels, availability, state and address."""
        return [build.node_of(n) for n in self.client.api.nodes()]

    def watch_events(self, stack_id: str, on_exit: Any, on_nodes: Any) -> SwarmEvents:
        """Tell ``on_exit(instance)`` the moment a task of this stack ends, and ``on_nodes()`` when
        a node changes (drained, lost, labelled): see drivers/swarm_events.py. Call `.close()`."""
        return SwarmEvents(self, stack_id, on_exit, on_nodes).start()

    def _secret(self, name: str, value: str, spec: InstanceSpec, key: str) -> str:
        """A Swarm secret for one variable; its label holds the HMAC of the value (for `verify`)."""
        labels = {
            "herd.stack-id": spec.labels.get("herd.stack-id", ""),
            "herd.instance": spec.id,
            build.DIGEST_LABEL: secret_digest(stack_key(self.home), value),
        }
        return str(self.client.secrets.create(name=name, data=value.encode(), labels=labels).id)

    def _wait_started(self, service_id: str, instance_id: str, image: str) -> InstanceState:
        """Until the task runs (its container has a pid) or has ended; a rejected task (the image
        could not be pulled, a mount could not be made) is an error and leaves nothing behind."""
        deadline = time.monotonic() + START_TIMEOUT
        service = self.client.api.inspect_service(service_id)  # its spec does not change meanwhile
        while True:  # one call a look; the nodes (for the address) only once it runs or ended
            task = build.latest_task(self.client.api.tasks(filters={"service": service_id}))
            status = str(((task or {}).get("Status") or {}).get("State") or "")
            if status == "rejected" or (status in build.STARTING and time.monotonic() > deadline):
                detail = build.instance_state(service, task, [], self.local_node).detail
                self._remove(instance_id)
                raise DriverError(
                    f"Swarm could not start {instance_id} ({image}): {detail or 'task ' + status}",
                    hint="is the registry running, and did `herd deploy` push the image?",
                )
            if status == "running" or status in build.ENDED:
                return build.instance_state(service, task, self.nodes_now(), self.local_node)
            time.sleep(0.1)

    def settle_logs(self, instance_id: str, timeout: float = 2.0) -> None:
        follower = self._followers.get(instance_id)
        if follower is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                follower.wait(timeout)

    def _follow_logs(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        return evidence.follow_logs(self, argv, log)

    # state ------------------------------------------------------------------------------------
    def _service(self, instance_id: str) -> Mapping[str, Any] | None:
        found = self.client.api.services(filters={"label": f"herd.instance={instance_id}"})
        return found[0] if found else None

    def _container(self, instance_id: str) -> Any:
        """The task's container (on this engine: a single node, or the manager it runs on)."""
        found = self.client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"herd.instance={instance_id}"}
        )
        return found[0] if found else None

    def _inspect(self, instance_id: str) -> InstanceState | None:
        service = self._service(instance_id)
        if service is None or evidence.is_quarantined(service):
            return None  # a kept remote task is nobody's instance any more
        import docker.errors

        try:
            task = build.latest_task(self.client.api.tasks(filters={"service": service["ID"]}))
        except docker.errors.NotFound:
            return None  # removed between the two calls
        return build.instance_state(service, task, self.nodes_now(), self.local_node)

    def list_now(self, labels: Mapping[str, str] | None = None) -> States:
        """Services by label, and their tasks in one more call."""
        import docker.errors

        wanted = [f"{k}={v}" for k, v in (labels or {}).items()] + ["herd.instance"]
        for attempt in range(5):
            services = self._unquarantined(self.client.api.services(filters={"label": wanted}))
            if not services:
                return []
            try:
                listed = self.client.api.tasks(filters={"service": [s["ID"] for s in services]})
                break
            except docker.errors.NotFound:
                # a service was removed between the two calls (Swarm refuses the whole filter): ask again
                if attempt == 4:
                    raise
        tasks: dict[str, list[Any]] = {}
        for task in listed:
            tasks.setdefault(str(task.get("ServiceID")), []).append(task)
        nodes = self.nodes_now()
        states = [
            build.instance_state(s, build.latest_task(tasks.get(s["ID"], [])), nodes, self.local_node)
            for s in services
        ]
        return sorted(states, key=lambda s: (s.started, s.id))

    def _unquarantined(self, services: list[Any]) -> list[Any]:
        """All but the kept remote tasks of quarantined instances; those whose record is gone
        (`herd quarantine purge`, or pruned) are removed now."""
        out = []
        for service in services:
            if not evidence.is_quarantined(service):
                out.append(service)
                continue
            instance = str(((service.get("Spec") or {}).get("Labels") or {}).get("herd.instance", ""))
            if instance and not (self.home / "quarantine" / instance / "instance.json").is_file():
                import docker.errors

                with contextlib.suppress(docker.errors.APIError):  # a look never fails for a sweep
                    self._remove(instance)
        return out

    # exec -------------------------------------------------------------------------------------
    async def exec(self, instance_id: str, argv: Sequence[str], timeout: float) -> ExecResult:
        """`docker exec` into the task's running container."""
        container = await asyncio.to_thread(self._container, instance_id)
        if container is None or container.status != "running":
            raise DriverError(f"instance {instance_id} is not running")
        return await exec_in(self.client.api, container.id, instance_id, argv, timeout)

    # drift ------------------------------------------------------------------------------------
    async def verify(self, instance_id: str, spec: InstanceSpec) -> Drifts:
        """drivers/swarm_evidence.py: the service's and task's specs; the container where it is here."""
        import docker.errors

        try:
            return await asyncio.to_thread(evidence.verify, self, instance_id, spec)
        except docker.errors.NotFound:
            return []  # removed meanwhile

    # stopping ---------------------------------------------------------------------------------
    def _stop(self, instance_id: str, grace: float, keep: Path | None) -> None:
        """Stop the task's container with ``grace`` (restart `none`: Swarm leaves it stopped),
        keeping its /tmp and `docker diff` first when asked, then remove the service and its
        secrets. Swarm removes a removed service's containers, so nothing of a quarantined
        instance's container outlives this but what ``keep`` and the log store hold."""
        import docker.errors

        service = self._service(instance_id)
        node = str(((service or {}).get("Spec") or {}).get("Labels", {}).get(build.NODE_LABEL, ""))
        if keep is not None and service is not None and node not in ("", self.local_node):
            evidence.keep_remote(self, service, node, keep)  # its task stays: the evidence
            self._followers.pop(instance_id, None)  # `service logs -f` goes on into the log store
            return
        container = self._container(instance_id)
        try:
            if container is not None:
                if keep is not None:
                    keep_container(container, keep)
                if container.status == "running":
                    with contextlib.suppress(docker.errors.APIError):
                        container.kill(signal="SIGCONT")  # a stopped (hung) app gets its SIGTERM
                    container.stop(timeout=max(0, int(grace + 0.999)))
            self._remove(instance_id)
        except docker.errors.NotFound:
            self._remove(instance_id)
        except docker.errors.APIError as exc:
            raise DriverError(f"Swarm could not stop {instance_id}: {exc.explanation or exc}") from None
        finally:
            follower = self._followers.pop(instance_id, None)
            if follower is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    follower.wait(2)

    def _remove(self, instance_id: str) -> None:
        """The service, its container, then its secrets. The container is removed here rather than
        waited for: Swarm takes seconds to reap a removed service's containers, and a heal that
        waits that long to retire a dead instance leaves it in the pool meanwhile."""
        import docker.errors

        service = self._service(instance_id)
        if service is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_service(service["ID"])
        deadline = time.monotonic() + 30
        while (container := self._container(instance_id)) is not None and time.monotonic() < deadline:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):  # Swarm's removing it
                container.remove(v=False, force=True)
            if self._container(instance_id) is not None:
                time.sleep(0.1)
        for secret in self.client.secrets.list(filters={"label": f"herd.instance={instance_id}"}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                secret.remove()
