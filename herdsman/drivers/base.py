"""The driver protocol: the few things deploy and agent need from whatever runs instances.

Like httpx's transports, a driver is a handful of async methods over plain data classes. Every
instance carries the labels of DESIGN.md principle 6, and `list()` rebuilds the actual state from
the driver alone (no database needed), so a new agent can adopt what an old one started.
Backend exceptions are translated here into `DriverError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from herdsman.errors import DriverError
from herdsman.image.filelist import Difference
from herdsman.spec.placement import Placement

LABELS = (
    "herd.stack",
    "herd.stack-id",
    "herd.env",
    "herd.service",
    "herd.release",
    "herd.instance",
    "herd.image",
)
# "fresh" on a canary's fresh baseline: set at its start, not part of its release (drift ignores it)
BASELINE_LABEL = "herd.baseline"


@dataclass(frozen=True)
class VolumeMount:
    name: str
    source: Path  # where the data lives, outside every instance
    target: str  # where the instance sees it


@dataclass(frozen=True)
class InstanceSpec:
    """Everything needed to start one instance. ``env`` is complete except PORT, which the driver
    sets to the port it gives the instance (each instance gets its own 127.0.0.1 port)."""

    id: str
    image: str  # manifest digest
    labels: Mapping[str, str]
    argv: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str = "/"
    user: str = ""
    volumes: tuple[VolumeMount, ...] = ()
    stop_grace: float = 10.0
    log_file: Path | None = None
    wants_port: bool = True
    secrets: tuple[str, ...] = ()  # names of env entries whose values must never be shown
    cap_add: tuple[str, ...] = ()  # capabilities to keep (drivers that drop them all by default)
    memory: str | None = None  # e.g. "256m"
    cpus: float | None = None
    placement: Placement | None = None  # which nodes (a multi-node driver; the others checked it fits one)
    # its checks run commands inside it (`type = "command"`): a multi-node driver keeps it where
    # herdsman can exec (Swarm: the engine it talks to; no API reaches another node's containers)
    needs_exec: bool = False


State = Literal["running", "exited"]


@dataclass(frozen=True)
class Drift:
    """One way a running instance differs from what its image and release say it runs."""

    what: str  # "file system" | "command" | "environment" | "image"
    detail: str
    differences: tuple[Difference, ...] = ()  # for "file system": the paths, for the evidence
    root: Path | None = None  # where the drifted files can be copied from
    # False: not a difference but what could not be checked (e.g. a Swarm task on another node's
    # file system); reported by `herd verify`, never acted on
    checked: bool = True


Drifts = list[Drift]
UNKNOWN = "\0unknown"  # an expected value the verifier cannot know (a secret it was not given)


HOST_BASE_ANNOTATION = "org.opencontainers.image.base.name"  # "host": the image is only an app


def is_host_image(manifest: Mapping[str, Any]) -> bool:
    """An image baked on `base = "host"`: it runs on this machine's own OS, never in a container."""
    return (manifest.get("annotations") or {}).get(HOST_BASE_ANNOTATION) == "host"


HOST_IMAGE_REFUSED = "a `host` image runs on this machine's own OS and cannot run in a container"


def private_dir(path: Path) -> Path:
    """A directory only herdsman's user can read (instance records, sockets, keys): 0700."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def stack_key(home: Path) -> bytes:
    """The stack's own key for digests of secret values (`.herd/secret.key`, 0600, made once): a
    record that must show *whether* a secret changed holds an HMAC, which without the key cannot be
    checked against guesses, as a bare sha256 of a short secret could."""
    path = home / "secret.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()  # another process made it first
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    return path.read_bytes()


def secret_digest(key: bytes, value: str) -> str:
    """How a secret value is recorded: its HMAC under the stack's key (UNKNOWN stays UNKNOWN)."""
    if value == UNKNOWN:
        return UNKNOWN
    return "hmac-sha256:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def env_differences(expected: Mapping[str, str], actual: Mapping[str, str], secrets: tuple[str, ...]) -> str:
    """ "DEBUG: '0' -> '1'; TOKEN: changed (secret)"; secret values are never shown."""
    parts = []
    for key in sorted(set(expected) | set(actual)):
        was, now = expected.get(key), actual.get(key)
        if was in (now, UNKNOWN):
            continue
        if key in secrets:
            parts.append(f"{key}: changed (secret)")
        elif was is None:
            parts.append(f"{key}: added {now!r}")
        elif now is None:
            parts.append(f"{key}: removed")
        else:
            parts.append(f"{key}: {was!r} -> {now!r}")
    return "; ".join(parts)


def launch_drifts(
    image: tuple[str, str],
    argv: tuple[Sequence[str] | None, Sequence[str]],
    env: tuple[Mapping[str, str] | None, Mapping[str, str]],
    secrets: tuple[str, ...],
) -> Drifts:
    """How what an instance was started with differs from what its release says: each argument is
    (what runs, what the release says) for the image, the command and the environment (None: not
    known). Pure, and the same rule for every driver."""
    drifts = []
    if image[0] != image[1]:
        drifts.append(Drift("image", f"runs {image[0]}, its release says {image[1]}"))
    if argv[0] is not None and list(argv[0]) != list(argv[1]):
        drifts.append(Drift("command", f"runs {list(argv[0])}, its release says {list(argv[1])}"))
    if env[0] is not None:
        changed = env_differences(env[1], env[0], secrets)
        if changed:
            drifts.append(Drift("environment", changed))
    return drifts


@dataclass(frozen=True)
class InstanceState:
    id: str
    labels: Mapping[str, str]
    state: State
    port: int | None
    started: float
    pid: int | None = None
    exit_code: int | None = None
    detail: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"  # where it is reached: its node's address (one node: loopback)
    node: str = ""  # the node it runs on (a multi-node driver; "" on one node)
    evicted: str = ""  # why it must move to another node (its node drained or lost), else ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.port else ""

    @property
    def service(self) -> str:
        return self.labels.get("herd.service", "")

    @property
    def release(self) -> int:
        return int(self.labels.get("herd.release", "0") or 0)


@dataclass(frozen=True)
class ExecResult:
    """What a command run inside an instance gave: its exit code (None when it was killed at its
    timeout or could not start) and the tail of its output (stdout and stderr, bounded)."""

    exit_code: int | None
    output: str
    timed_out: bool = False


OUTPUT_LIMIT = 4096  # bytes of a command's output kept (the tail: where errors are)


class Driver(Protocol):
    name: str

    async def start(self, spec: InstanceSpec) -> InstanceState:
        """Start an instance; return once its process runs (health is checked by the caller)."""
        ...

    async def stop(self, instance_id: str, grace: float, keep: Path | None = None) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; forget the instance. Idempotent.
        With ``keep``, what the instance wrote outside its volumes is moved into that directory
        (evidence of a quarantined instance) instead of being deleted."""
        ...

    async def list(self, labels: Mapping[str, str] | None = None) -> list[InstanceState]:
        """Every instance whose labels include ``labels``, running or exited (not yet stopped)."""
        ...

    async def inspect(self, instance_id: str) -> InstanceState | None: ...

    def log_file(self, instance_id: str) -> Path | None:
        """Where the instance's stdout and stderr go (they outlive the instance)."""
        ...

    def volume_dir(self, stack: str, name: str) -> Path:
        """Where the data of volume ``name`` of the stack whose id is ``stack`` lives on this machine
        (created if need be)."""
        ...

    def remove_volume(self, stack: str, name: str) -> None:
        """Delete volume ``name`` of the stack whose id is ``stack`` and its data (a preview's own,
        when the preview goes; never a volume of a long-lived environment). Idempotent."""
        ...

    async def verify(self, instance_id: str, spec: InstanceSpec) -> Drifts:
        """How the running instance differs from ``spec`` (what its release says) and its image."""
        ...

    def settle_logs(self, instance_id: str) -> None:
        """Wait (briefly) until what the instance wrote has reached its log file (a driver whose
        logs arrive late; a no-op for the others)."""
        ...

    def discard_rootfs(self, image: str) -> Path | None:
        """Move a drifted unpacked image aside so the next instance starts from a fresh one; returns
        where it went (None: this driver keeps no unpacked images)."""
        ...

    def refuse_image(self, image: str) -> str | None:
        """Why this driver cannot run ``image`` at all (None: it can), asked before a release is
        recorded, so a deploy it would fail records, snapshots and migrates nothing."""
        ...

    async def exec(self, instance_id: str, argv: Sequence[str], timeout: float) -> ExecResult:
        """Run ``argv`` *inside* the running instance — its root file system, volumes, /tmp,
        environment, user and sandbox — as a Docker HEALTHCHECK or a Kubernetes exec probe does;
        killed after ``timeout`` seconds. Raises DriverError when the instance does not run."""
        ...


States = list[InstanceState]


class BlockingDriver:
    """The async half of the protocol over blocking methods run in threads (DESIGN.md: blocking
    work — /proc, the Docker SDK — goes through `asyncio.to_thread`). A driver implements the
    blocking `_start`, `_stop` and `list_now`, and inherits `start`, `stop` and `list`."""

    def _start(self, spec: InstanceSpec) -> InstanceState:
        raise NotImplementedError

    def _stop(self, instance_id: str, grace: float, keep: Path | None) -> None:
        raise NotImplementedError

    def list_now(self, labels: Mapping[str, str] | None = None) -> States:
        raise NotImplementedError

    async def start(self, spec: InstanceSpec) -> InstanceState:
        return await asyncio.to_thread(self._start, spec)

    def settle_logs(self, instance_id: str) -> None:
        """Logs written straight to their file need no settling."""

    def discard_rootfs(self, image: str) -> Path | None:
        """No unpacked images to move aside."""
        return None

    def refuse_image(self, image: str) -> str | None:
        """Every image can run (a driver that cannot run some says why)."""
        return None

    async def stop(self, instance_id: str, grace: float, keep: Path | None = None) -> None:
        await asyncio.to_thread(self._stop, instance_id, grace, keep)

    async def list(self, labels: Mapping[str, str] | None = None) -> States:
        return await asyncio.to_thread(self.list_now, labels)

    async def exec(self, instance_id: str, argv: Sequence[str], timeout: float) -> ExecResult:
        """The default: no way in. Never the host instead: a check run beside the instance sees
        neither its files nor its environment, and passes or fails for the wrong reasons."""
        name = getattr(self, "name", type(self).__name__)
        raise DriverError(f"the {name} driver cannot run a command inside instance {instance_id}")
