"""The `docker` driver: each instance a container of the Docker engine, hardened by default.

The image comes from the local OCI store, loaded once (`docker load` of our own export; its ID is
the sha256 of our config, so "is it loaded?" is one lookup and it is never pulled by tag).
Containers run with host networking on their own 127.0.0.1 port (behind the same router as the
process driver), Docker's init as pid 1 (an app as pid 1 would ignore SIGTERM), a read-only root,
a tmpfs /tmp, no new privileges, every capability dropped but those the service declares, the
image's user, and the declared memory and CPU limits. Volumes are named volumes
`herd-STACK-NAME`, so data survives every replacement.

Actual state is rebuilt from container labels alone (DESIGN.md principle 6): an agent adopts
containers it did not start. Output goes to the central log store through `docker logs -f
--timestamps` run beside the container in a session of its own (not through the agent), so logs
are readable after the container is gone. A quarantined container's /tmp (copied by the
container's own `tar`: `docker cp` cannot see a tmpfs) and `docker diff` are kept before it is
removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from herdsman.drivers.base import (
    HOST_IMAGE_REFUSED,
    BlockingDriver,
    Drifts,
    ExecResult,
    InstanceSpec,
    InstanceState,
    States,
    is_host_image,
)
from herdsman.drivers.container_evidence import container_drifts, keep_container
from herdsman.drivers.docker_exec import exec_in
from herdsman.drivers.engine_files import follow_into, local_volume_path
from herdsman.errors import DriverError
from herdsman.image.export import export_image
from herdsman.image.oci import ImageStore
from herdsman.logs import write_labels
from herdsman.spec.models import Environment

PORT_LABEL = "herd.port"
LOG_LABEL = "herd.log"


def _engine() -> Any:
    import docker

    try:
        client = docker.from_env(version="auto", timeout=60)
        client.ping()
    except Exception as exc:
        raise DriverError(
            f"the Docker engine is not answering: {exc}",
            hint='start dockerd (make test starts it when run as root), or use driver = "process"',
        ) from None
    return client


def _started(value: str) -> float:
    whole, _, fraction = value.removesuffix("Z").partition(".")
    try:
        return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (fraction or "0"))
    except ValueError:
        return 0.0


class DockerDriver(BlockingDriver):
    name = "docker"

    def __init__(
        self, home: Path, store: ImageStore, *, client: Any = None, registry: str | None = None
    ) -> None:
        self.home = home
        self.store = store
        self.registry = registry  # REGISTRY/PREFIX: images are pulled from PREFIX/SERVICE by digest
        self.logs = home / "logs"
        self.client = client or _engine()
        self.docker_cli = shutil.which("docker")
        self._followers: dict[str, subprocess.Popen[bytes]] = {}  # log followers this process started

    @classmethod
    def from_environment(cls, home: Path, store: ImageStore, environment: Environment | None) -> DockerDriver:
        """`[environment.NAME] registry`: images are pulled from there by digest."""
        return cls(home, store, registry=environment.registry if environment else None)

    # protocol ---------------------------------------------------------------------------------
    async def inspect(self, instance_id: str) -> InstanceState | None:
        return await asyncio.to_thread(self._inspect, instance_id)

    def log_file(self, instance_id: str) -> Path | None:
        container = self._container(instance_id)
        if container is not None:
            return Path(container.labels.get(LOG_LABEL, ""))
        found = sorted(self.logs.glob(f"*/{instance_id}.log"))
        return found[0] if found else None

    def volume_dir(self, stack: str, name: str) -> Path:
        """The named volume's data on this machine (snapshots copy it; the engine must be local).
        Only a plain `local` volume (what herdsman creates) keeps its data there: one with mount
        options (nfs, tmpfs, a device) has it elsewhere whenever no container uses it."""
        volume = self.client.volumes.get(self._volume(stack, name))
        hint = "snapshots and backups of Docker volumes need a local engine, run as root"
        return local_volume_path(volume, name, hint)

    # images -----------------------------------------------------------------------------------
    def refuse_image(self, image: str) -> str | None:
        """A `host` image (only an app, to run on this machine's OS) cannot run in a container."""
        if not self.store.has_blob(image):
            return None  # pulled from the environment's registry when started
        if is_host_image(self.store.manifest(image)):
            return HOST_IMAGE_REFUSED
        return None

    def image_id(self, manifest_digest: str, stack: str, service: str = "") -> str:
        """The engine's ID of our image (its config digest): pulled by digest from the environment's
        registry when it has one, else loaded from the OCI store, when the engine lacks it."""
        import docker.errors

        if self.registry and service:
            return self._pull(manifest_digest, service)
        manifest = self.store.manifest(manifest_digest)
        refused = self.refuse_image(manifest_digest)
        if refused:
            raise DriverError(
                refused,
                hint='give the service a full base for the docker driver, e.g. base = "debian:bookworm"',
            )
        config = str(manifest["config"]["digest"])
        try:
            self.client.images.get(config)
            return config
        except docker.errors.ImageNotFound:
            pass
        archive = self.home / "run" / f"load-{config.removeprefix('sha256:')[:16]}.tar"
        archive.parent.mkdir(parents=True, exist_ok=True)
        tag = f"herd/{_component(stack)}:{manifest_digest.removeprefix('sha256:')[:12]}"
        try:
            export_image(self.store, manifest_digest, archive, fmt="docker", tag=tag)
            with archive.open("rb") as data:
                loaded = self.client.images.load(data)
        finally:
            archive.unlink(missing_ok=True)
        if not any(image.id == config for image in loaded):
            raise DriverError(f"docker load gave {[i.id for i in loaded]}, not {config}")
        return config

    def _pull(self, manifest_digest: str, service: str) -> str:
        """`docker pull REGISTRY/PREFIX/SERVICE@DIGEST` (never a tag); its ID is our config digest."""
        import docker.errors

        reference = f"{self.registry}/{service}@{manifest_digest}"
        try:
            image = self.client.images.pull(reference)
        except docker.errors.APIError as exc:
            raise DriverError(
                f"Docker could not pull {reference}: {exc.explanation or exc}",
                hint="is the registry running, and did `herd deploy` push the image?",
            ) from None
        return str(image.id)

    # starting ---------------------------------------------------------------------------------
    def _start(self, spec: InstanceSpec) -> InstanceState:
        import docker.errors
        from docker.types import LogConfig, Mount

        if self._container(spec.id) is not None:
            raise DriverError(f"instance {spec.id} already exists")
        stack = spec.labels.get("herd.stack", "herd")
        image = self.image_id(spec.image, stack, spec.labels.get("herd.service", ""))
        stack_id = spec.labels.get("herd.stack-id", stack)
        port = _free_port() if spec.wants_port else None
        env = dict(spec.env)
        if port is not None:
            env["PORT"] = str(port)
        service = spec.labels.get("herd.service", "instance")
        log = spec.log_file or self.logs / service / f"{spec.id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        write_labels(log, dict(spec.labels))
        labels = {**spec.labels, LOG_LABEL: str(log), PORT_LABEL: str(port or "")}
        mounts = [
            Mount(v.target, self._volume(stack_id, v.name), type="volume", read_only=False)
            for v in spec.volumes
        ]
        options: dict[str, Any] = {}
        if spec.memory:
            options["mem_limit"] = spec.memory
        if spec.cpus:
            options["nano_cpus"] = int(spec.cpus * 1e9)
        try:
            container = self.client.containers.create(
                image,
                entrypoint=[spec.argv[0]],
                command=list(spec.argv[1:]),
                name=self._name(spec.labels, spec.id),
                labels=labels,
                environment=env,
                network_mode="host",
                init=True,  # a tiny init as pid 1, so SIGTERM stops the app instead of being ignored
                read_only=True,
                tmpfs={"/tmp": "rw,nosuid,nodev,size=256m,mode=1777"},
                security_opt=["no-new-privileges:true"],
                cap_drop=["ALL"],
                cap_add=list(spec.cap_add) or None,
                user=spec.user or None,
                working_dir=spec.workdir or "/",
                mounts=mounts,
                log_config=LogConfig(type="json-file", config={"max-size": "50m", "max-file": "2"}),
                detach=True,
                **options,
            )
            container.start()
        except docker.errors.APIError as exc:
            raise DriverError(f"Docker could not start {spec.id}: {exc.explanation or exc}") from None
        self._followers[spec.id] = self._follow_logs(container.id, log)
        state = self._state(self.client.containers.get(container.id))
        return state

    def remove_volume(self, stack: str, name: str) -> None:
        import docker.errors

        try:
            self.client.volumes.get(f"herd-{_component(stack)}-{name}").remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise DriverError(f"cannot remove volume {name}: {exc}") from exc

    def _volume(self, stack: str, name: str) -> str:
        """The named volume of ``name`` in the stack whose id is ``stack`` (created if need be)."""
        import docker.errors

        volume = f"herd-{_component(stack)}-{name}"
        try:
            self.client.volumes.get(volume)
        except docker.errors.NotFound:
            self.client.volumes.create(volume, labels={"herd.stack-id": stack, "herd.volume": name})
        return volume

    def settle_logs(self, instance_id: str, timeout: float = 2.0) -> None:
        """Wait (a little) until an exited container's output is all in its log file: the follower
        ends once it has copied everything."""
        follower = self._followers.get(instance_id)
        if follower is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                follower.wait(timeout)

    def _follow_logs(self, container_id: str, log: Path) -> subprocess.Popen[bytes]:
        """`docker logs -f --timestamps` appending to the log file, in its own session: it outlives
        the agent and ends with the container."""
        return follow_into(self.docker_cli, ["logs", "-f", "--timestamps", container_id], log)

    # state ------------------------------------------------------------------------------------
    @staticmethod
    def _name(labels: Mapping[str, str], instance_id: str) -> str:
        stack = _component(labels.get("herd.stack-id") or labels.get("herd.stack", "herd"))
        return f"herd-{stack}-{labels.get('herd.env', 'env')}-{instance_id}"

    def _container(self, instance_id: str) -> Any:
        found = self.client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"herd.instance={instance_id}"}
        )
        return found[0] if found else None

    def _inspect(self, instance_id: str) -> InstanceState | None:
        container = self._container(instance_id)
        return self._state(container) if container is not None else None

    def list_now(self, labels: Mapping[str, str] | None = None) -> States:
        wanted = [f"{k}={v}" for k, v in (labels or {}).items()] + ["herd.instance"]
        containers = self.client.containers.list(all=True, ignore_removed=True, filters={"label": wanted})
        return sorted((self._state(c) for c in containers), key=lambda s: (s.started, s.id))

    def _state(self, container: Any) -> InstanceState:
        attrs = container.attrs
        status = attrs.get("State") or {}
        labels = {
            k: v
            for k, v in container.labels.items()
            if k.startswith("herd.") and k not in (LOG_LABEL, PORT_LABEL)
        }
        running = bool(status.get("Running"))
        code = None if running else status.get("ExitCode")
        detail = (
            ""
            if running
            else f"exited with code {code}" + (" (out of memory)" if status.get("OOMKilled") else "")
        )
        port = container.labels.get(PORT_LABEL) or ""
        return InstanceState(
            id=container.labels.get("herd.instance", container.name),
            labels=labels,
            state="running" if running else "exited",
            port=int(port) if port.isdigit() else None,
            started=_started(str(status.get("StartedAt") or "")),
            pid=int(status.get("Pid") or 0) or None,
            exit_code=code,
            detail=detail,
            extra={"container": container.id},
        )

    # exec -------------------------------------------------------------------------------------
    async def exec(self, instance_id: str, argv: Sequence[str], timeout: float) -> ExecResult:
        """`docker exec` into the running container (see `docker_exec`)."""
        container = await asyncio.to_thread(self._container, instance_id)
        if container is None or container.status != "running":
            raise DriverError(f"instance {instance_id} is not running")
        return await exec_in(self.client.api, container.id, instance_id, argv, timeout)

    # drift ------------------------------------------------------------------------------------
    async def verify(self, instance_id: str, spec: InstanceSpec) -> Drifts:
        import docker.errors

        try:
            return await asyncio.to_thread(self._verify, instance_id, spec)
        except docker.errors.NotFound:
            return []  # removed meanwhile: nothing runs that could have drifted

    def _verify(self, instance_id: str, spec: InstanceSpec) -> Drifts:
        """The container's image, command and environment against its release, and `docker diff`
        against a read-only root (where only its mount points may appear)."""
        container = self._container(instance_id)
        if container is None or container.status != "running":
            return []
        port = container.labels.get(PORT_LABEL) or ""
        return container_drifts(
            container,
            str(self.store.manifest(spec.image)["config"]["digest"]),
            spec.argv,
            {**spec.env, **({"PORT": port} if port else {})},
            spec.secrets,
            [v.target for v in spec.volumes],
        )

    # stopping ---------------------------------------------------------------------------------
    def _stop(self, instance_id: str, grace: float, keep: Path | None) -> None:
        import docker.errors

        container = self._container(instance_id)
        if container is None:
            return
        try:
            if keep is not None:
                keep_container(container, keep)
            if container.status == "running":
                with contextlib.suppress(docker.errors.APIError):  # a stopped (hung) app gets SIGTERM
                    container.kill(signal="SIGCONT")  # only once it runs again (init forwards this)
                container.stop(timeout=max(0, int(grace + 0.999)))
            container.remove(v=False, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise DriverError(f"Docker could not stop {instance_id}: {exc.explanation or exc}") from None
        finally:
            follower = self._followers.pop(instance_id, None)
            if follower is not None:  # it ends with the container; reap it
                with contextlib.suppress(subprocess.TimeoutExpired):
                    follower.wait(2)


def _component(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return cleaned or "herd"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
